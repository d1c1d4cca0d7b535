"""Points in R^d: the space of the built-in Gaussian-mixture oracle and of tabular data."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from diffkit.spaces.base import FieldSpec, Space, SpaceError, as_float_tensor, check_items, text_lines
from diffkit.state import State


class EuclideanSpace(Space):
    """Vectors ``x`` in R^dim, encoded as ``State(x=B×dim)``, decoded unchanged."""

    name = "euclidean"

    def __init__(self, dim: int):
        if int(dim) < 1:
            raise SpaceError(f"EuclideanSpace: dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.fields = (FieldSpec("x"),)

    def validate(self, item: Any) -> torch.Tensor:
        x = as_float_tensor(item, "EuclideanSpace")
        if x.shape != (self.dim,):
            raise SpaceError(f"EuclideanSpace: expected a vector of shape ({self.dim},), got {tuple(x.shape)}; reshape each element to ({self.dim},)")
        return x.float()

    def collate(self, items: Sequence[Any], *, train: bool = False, generator=None) -> State:
        items = check_items(items, "EuclideanSpace")
        return State(x=torch.stack([self.validate(i) for i in items]))

    def decode(self, state: State) -> list[torch.Tensor]:
        return list(state["x"].detach().float().cpu())

    def write(self, items: list, out: Path, *, reference: list | None = None, title: str = "", **kwargs) -> list[Path]:
        """``samples.safetensors`` and, in 2-D or more, a scatter plot of the samples over ``reference`` elements."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        xs = torch.stack(items) if items else torch.zeros(0, self.dim)
        paths = [out / "samples.safetensors"]
        save_file({"x": xs.contiguous()}, str(paths[0]))
        if self.dim >= 2:
            from diffkit.plotting import scatter_png

            ref = torch.stack(list(reference)) if reference is not None and len(reference) else None
            paths.append(scatter_png(xs, out / "samples.png", reference=ref, title=title))
        return paths

    def read(self, path: Path) -> tuple[list, list[dict]]:
        """Vectors from ``.safetensors`` (tensor ``x``), ``.npy``, or text (one vector per line)."""
        path = Path(path)
        if path.is_dir():
            raise SpaceError(f"{path} is a folder; euclidean samples are one file: samples.safetensors (tensor 'x'), a .npy array or text, one vector per line")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            rows = load_file(str(path))["x"]
        elif path.suffix == ".npy":
            import numpy as np

            try:
                array = np.load(path, allow_pickle=False)
            except ValueError as exc:
                if "pickle" in str(exc):
                    raise SpaceError(f"{path} holds Python objects (a pickled .npy), which diffkit never loads because loading them can run code; "
                                     f"save a numeric array instead (np.save(path, array.astype(float)))") from None
                raise SpaceError(f"{path} is not a readable .npy array ({str(exc).splitlines()[0]}); save it again with np.save") from None
            if array.dtype.kind not in "fiub":
                raise SpaceError(f"{path} holds a {array.dtype} array; euclidean samples are numbers, save a float array")
            rows = torch.from_numpy(array.astype("float32")) if array.size else []
        else:
            lines, failures = text_lines(path)
            rows, names = [], []
            for k, line in lines:
                try:
                    rows.append(torch.tensor([float(v) for v in line.replace(",", " ").split()]))
                    names.append(f"line {k}")
                except ValueError:
                    failures.append({"item": f"line {k}", "reason": "not numbers"})
            items, more = self._validate_all(rows, names)
            return items, failures + more
        return self._validate_all(list(rows), [f"row {i}" for i in range(len(rows))])

    def _validate_all(self, rows, names):
        items, failures = [], []
        for name, row in zip(names, rows):
            try:
                items.append(self.validate(row))
            except SpaceError as exc:
                failures.append({"item": name, "reason": str(exc)})
        return items, failures

    def template(self, batch_size: int, stats=None, generator=None) -> State:
        return State(x=torch.zeros(int(batch_size), self.dim))

    def config(self) -> dict:
        return {"dim": self.dim}
