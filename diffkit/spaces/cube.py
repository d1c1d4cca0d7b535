"""The continuous cube [low, high]^shape, stored in ``levels`` discrete levels (images: 256)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from diffkit.spaces.base import FieldSpec, Space, SpaceError, as_float_tensor, check_items
from diffkit.state import State


class ContinuousCube(Space):
    """Arrays of a fixed ``shape`` with values in ``[low, high]``, quantised to ``levels`` levels.

    Elements are float arrays in ``[low, high]`` or integer arrays of level indices ``0..levels-1``
    (``uint8`` images, say), which are converted explicitly with ``k -> low + k (high-low)/(levels-1)``.
    Encoding maps the cube affinely onto ``[-1, 1]``; with ``train=True`` and ``dequantize`` it adds
    uniform noise inside each quantisation bin (Theis et al. 2016), so the model sees a density.
    Decoding clamps to the cube and rounds to the nearest level.
    """

    name = "continuous-cube"

    def __init__(self, shape: Sequence[int], low: float = 0.0, high: float = 1.0, levels: int = 256, dequantize: bool = True, field: str = "x"):
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) < 1:
            raise SpaceError(f"ContinuousCube: shape must be positive integers, got {shape}")
        if not float(high) > float(low):
            raise SpaceError(f"ContinuousCube: need low < high, got low={low}, high={high}")
        if levels is not None and int(levels) < 2:
            raise SpaceError(f"ContinuousCube: levels must be >= 2 (or None for no quantisation), got {levels}")
        self.low, self.high = float(low), float(high)
        self.levels = None if levels is None else int(levels)
        self.dequantize = bool(dequantize)
        self.field_name = field
        self.fields = (FieldSpec(field),)

    # --------------------------------------------------------------------------------------
    def validate(self, item: Any) -> torch.Tensor:
        x = as_float_tensor(item, "ContinuousCube")
        if tuple(x.shape) != self.shape:
            raise SpaceError(f"ContinuousCube: expected shape {self.shape}, got {tuple(x.shape)}; resize or reshape the element (channels first)")
        return self.check_values(x, "ContinuousCube")

    def check_values(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """``x`` (already of the right shape) on the cube: integers are level indices ``0..levels-1``
        mapped onto ``[low, high]``; floats must lie in ``[low, high]`` (clamped within rounding)."""
        if not x.is_floating_point():
            if self.levels is None:
                raise SpaceError(f"{what}: got integer data but the space has no quantisation levels; pass floats in [{self.low:g}, {self.high:g}]")
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi > self.levels - 1:
                raise SpaceError(f"{what}: integer data must be levels 0..{self.levels - 1}, got {lo}..{hi}; rescale the data or pass floats in [{self.low:g}, {self.high:g}]")
            return self.low + x.float() * (self.high - self.low) / (self.levels - 1)
        lo, hi = float(x.min()), float(x.max())
        tol = 1e-6 * (self.high - self.low)
        if lo < self.low - tol or hi > self.high + tol:
            raise SpaceError(f"{what}: values must lie in [{self.low:g}, {self.high:g}], got [{lo:.4g}, {hi:.4g}]; rescale the data (8-bit images: divide by 255)")
        return x.clamp(self.low, self.high)

    @property
    def bin_width(self) -> float | None:
        """The width of one dequantisation bin in the encoded coordinates (``[-1, 1]``): ``2 / levels``."""
        return None if self.levels is None or not self.dequantize else 2.0 / self.levels

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.low) / (self.high - self.low)

    def collate(self, items: Sequence[Any], *, train: bool = False, generator: torch.Generator | None = None) -> State:
        items = check_items(items, "ContinuousCube")
        u = self.to_unit(torch.stack([self.validate(i) for i in items]))  # in [0, 1]
        state = State({self.field_name: u * 2.0 - 1.0})
        return self.train_transform(state, generator) if train else state

    def train_transform(self, state: State, generator: torch.Generator | None = None) -> State:
        """Uniform dequantisation: level ``k`` becomes ``(k + u) / levels`` with ``u ~ U[0, 1)``."""
        if not self.dequantize or self.levels is None:
            return state
        x = state[self.field_name]
        k = torch.round((x + 1.0) / 2.0 * (self.levels - 1))
        noise = torch.rand(k.shape, generator=generator, dtype=x.dtype).to(x.device)
        return state.replace(**{self.field_name: (k + noise) / self.levels * 2.0 - 1.0})

    def decode(self, state: State) -> list[torch.Tensor]:
        u = ((state[self.field_name].detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)
        if self.levels is not None:
            u = torch.round(u * (self.levels - 1)) / (self.levels - 1)
        return list(self.low + u * (self.high - self.low))

    def write(self, items: list, out: Path, *, labels: Sequence[int] | None = None, name: str = "samples", **kwargs) -> list[Path]:
        from diffkit.plotting import image_grid_png

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        unit = [self.to_unit(x) for x in items]
        paths = [image_grid_png(unit, out / f"{name}.png", labels=labels)]
        return paths

    def read(self, path: Path) -> tuple[list, list[dict]]:
        """Images from a PNG file or a folder of PNG files (sorted by name); 8-bit values become [0, 1]."""
        import matplotlib.image as mpimg

        path = Path(path)
        files = sorted(path.glob("*.png")) if path.is_dir() else [path]
        items, failures = [], []
        for f in files:
            try:
                arr = torch.from_numpy(mpimg.imread(str(f)).copy()).float()
                if arr.dim() == 2:
                    arr = arr[None]
                else:
                    arr = arr.permute(2, 0, 1)
                    if self.shape[0] == 1:
                        arr = arr[:3].mean(0, keepdim=True)
                    elif self.shape[0] == 3:
                        arr = arr[:3]
                items.append(self.validate(self.low + arr * (self.high - self.low)))
            except (SpaceError, OSError, ValueError, SyntaxError) as exc:
                failures.append({"item": f.name, "reason": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
        return items, failures

    def template(self, batch_size: int, stats=None, generator=None) -> State:
        return State({self.field_name: torch.zeros(int(batch_size), *self.shape)})

    def config(self) -> dict:
        return {"shape": list(self.shape), "low": self.low, "high": self.high, "levels": self.levels, "dequantize": self.dequantize, "field": self.field_name}
