"""Latent tensors of a fixed shape: the space a learned or fixed first stage encodes data into."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from diffkit.spaces.base import FieldSpec, Space, SpaceError, as_float_tensor, check_items
from diffkit.state import State


class LatentSpace(Space):
    """Finite float tensors of a fixed ``shape`` (e.g. 4×7×7 autoencoder codes, 1×40×64 log-mel frames),
    encoded as ``State(<field> = B×shape)`` unchanged and decoded unchanged (no clamping: the first stage's
    decoder owns the mapping back to data). Written as ``latents.safetensors``, which ``read`` reads back."""

    name = "latent"

    def __init__(self, shape: Sequence[int], field: str = "x"):
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) < 1:
            raise SpaceError(f"latent space: shape must be positive integers, got {list(shape)}")
        self.field_name = field
        self.fields = (FieldSpec(field),)

    def validate(self, item: Any) -> torch.Tensor:
        x = as_float_tensor(item, "latent space")
        if not x.is_floating_point():
            x = x.float()
        if tuple(x.shape) != self.shape:
            raise SpaceError(f"latent space: expected shape {list(self.shape)}, got {list(x.shape)}; encode the data with the run's representation")
        return x

    def collate(self, items: Sequence[Any], *, train: bool = False, generator=None) -> State:
        items = check_items(items, "latent space")
        return State({self.field_name: torch.stack([self.validate(i) for i in items])})

    def decode(self, state: State) -> list[torch.Tensor]:
        return list(state[self.field_name].detach().float().cpu())

    def write(self, items: list, out: Path, **kwargs) -> list[Path]:
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "latents.safetensors"
        save_file({"latents": torch.stack([self.validate(i) for i in items]).contiguous()}, str(path))
        return [path]

    def read(self, path: Path) -> tuple[list, list[dict]]:
        from safetensors.torch import load_file

        path = Path(path)
        path = path / "latents.safetensors" if path.is_dir() else path
        try:
            stacked = load_file(str(path))["latents"]
        except Exception as exc:  # noqa: BLE001 - reported as a failure, never fatal
            return [], [{"item": path.name, "reason": f"{type(exc).__name__}: {exc}".splitlines()[0]}]
        items, failures = [], []
        for i, x in enumerate(stacked):
            try:
                items.append(self.validate(x))
            except SpaceError as exc:
                failures.append({"item": f"{path.name}[{i}]", "reason": str(exc)})
        return items, failures

    def template(self, batch_size: int, stats=None, generator=None) -> State:
        return State({self.field_name: torch.zeros(int(batch_size), *self.shape)})

    def config(self) -> dict:
        return {"shape": list(self.shape), "field": self.field_name}
