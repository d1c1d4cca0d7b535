"""The multivariate-series space: real-valued series of ``channels × length`` samples on a regular grid."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import save_file

from diffkit.spaces import FieldSpec, Space, SpaceError
from diffkit.spaces.base import as_float_tensor, check_items
from diffkit.state import State


class MultivariateSeries(Space):
    """Series ``C×T`` of real values (``T`` alone when ``channels == 1``), unbounded, regularly sampled.

    Encoded as ``State(x=B×C×T)`` divided by ``scale`` (choose it near the data's standard deviation so
    the diffused field has unit scale); decoded by multiplying back. Values are not clamped: a series
    has no natural bounds. Written as ``samples.csv`` (one row per sample and time step) and
    ``samples.safetensors``.
    """

    name = "multivariate-series"

    def __init__(self, channels: int = 3, length: int = 64, scale: float = 1.0, field: str = "x"):
        if int(channels) < 1 or int(length) < 2:
            raise SpaceError(f"MultivariateSeries: need channels >= 1 and length >= 2, got channels={channels}, length={length}")
        if not float(scale) > 0:
            raise SpaceError(f"MultivariateSeries: scale must be positive, got {scale}")
        self.channels, self.length, self.scale, self.field_name = int(channels), int(length), float(scale), str(field)
        self.fields = (FieldSpec(self.field_name),)

    def validate(self, item: Any) -> torch.Tensor:
        x = as_float_tensor(item, "MultivariateSeries")
        if not x.is_floating_point():
            raise SpaceError(f"MultivariateSeries: got integer values ({x.dtype}); convert the series to floats")
        if x.dim() == 1 and self.channels == 1:
            x = x[None]
        if tuple(x.shape) != (self.channels, self.length):
            raise SpaceError(
                f"MultivariateSeries: expected {self.channels} channel(s) × {self.length} steps, got shape {tuple(x.shape)}; "
                f"put channels first and crop or pad to {self.length} steps"
            )
        return x

    def collate(self, items: Sequence[Any], *, train: bool = False, generator=None) -> State:
        items = check_items(items, "MultivariateSeries")
        return State({self.field_name: torch.stack([self.validate(i) for i in items]) / self.scale})

    def decode(self, state: State) -> list[torch.Tensor]:
        return list(state[self.field_name].detach().float().cpu() * self.scale)

    def write(self, items: list, out: Path, *, labels: Sequence[int] | None = None, name: str = "samples", **kwargs) -> list[Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stacked = torch.stack(items).contiguous() if items else torch.zeros(0, self.channels, self.length)
        tensors = {"x": stacked}
        if labels is not None:
            tensors["labels"] = torch.as_tensor(list(labels), dtype=torch.long)
        st = out / f"{name}.safetensors"
        save_file(tensors, str(st))
        path = out / f"{name}.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["sample", "t"] + [f"ch{c}" for c in range(self.channels)] + (["label"] if labels is not None else []))
            for i, x in enumerate(stacked):
                for t in range(self.length):
                    w.writerow([i, t] + [f"{float(v):.6g}" for v in x[:, t]] + ([labels[i]] if labels is not None else []))
        return [path, st]

    def template(self, batch_size: int, stats=None, generator=None) -> State:
        return State({self.field_name: torch.zeros(int(batch_size), self.channels, self.length)})

    def config(self) -> dict:
        return {"channels": self.channels, "length": self.length, "scale": self.scale, "field": self.field_name}
