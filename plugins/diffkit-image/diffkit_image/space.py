"""The ``image`` space: C×H×W float images in [0, 1] (C = 1 greyscale or 3 RGB), written as PNG.

Encoding is :class:`diffkit.spaces.ContinuousCube`'s: ``x -> 2 x - 1`` onto [-1, 1] under the field
``"x"``, with uniform dequantisation over ``levels`` grey levels during training (256 for 8-bit
images, 17 for scikit-learn's digits whose pixels are 0..16): level ``k`` is seen as ``(k + U) / L``.
Decoding inverts exactly that map (``floor(u L)``), so a well-fitted model's samples land on the
levels the data has (rounding ``u (L - 1)`` would move about half of the extreme levels' mass, e.g.
the digits' black background, one level inwards when ``L = 17``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from diffkit.spaces.base import SpaceError, as_float_tensor
from diffkit.spaces.cube import ContinuousCube


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A C×H×W tensor in [0, 1] as an H×W (C = 1) or H×W×3 uint8 array: ``round(255 x)``."""
    arr = (torch.as_tensor(image).detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
    arr = arr.permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def grid_array(images: Sequence[torch.Tensor], ncol: int | None = None, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile images row-major into one uint8 array (``ncol`` columns, ``pad`` pixels of ``pad_value`` between)."""
    imgs = [torch.as_tensor(x).float().clamp(0, 1) for x in images]
    if not imgs:
        raise SpaceError("image grid: got no images; pass at least one")
    C, H, W = imgs[0].shape
    n = len(imgs)
    ncol = max(1, min(int(ncol or int(np.ceil(np.sqrt(n)))), n))
    nrow = (n + ncol - 1) // ncol
    grid = torch.full((C, nrow * (H + pad) + pad, ncol * (W + pad) + pad), float(pad_value))
    for i, im in enumerate(imgs):
        r, c = divmod(i, ncol)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        grid[:, top:top + H, left:left + W] = im
    return to_uint8(grid)


def save_png(array: np.ndarray, path: Path, scale: int = 1) -> Path:
    """Write a uint8 array as PNG with Pillow, enlarged ``scale`` times by nearest neighbour."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(array))  # 2-D uint8 -> "L", H×W×3 uint8 -> "RGB"
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


class ImageSpace(ContinuousCube):
    """Images ``C×H×W`` with values in [0, 1] quantised to ``levels`` levels (registered as ``image``).

    ``write`` produces PNG grids (one per class when labels are given, plus an overview with one row
    per class) enlarged to about ``display_size`` pixels a side, and every image at native resolution
    under ``images/`` (``00012_c3.png``: sample 12, class 3), which ``read`` reads back.
    """

    name = "image"

    def __init__(self, shape: Sequence[int] = (1, 8, 8), levels: int | None = 256, dequantize: bool = True, field: str = "x"):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or shape[0] not in (1, 3):
            raise SpaceError(f"image space: shape must be (C, H, W) with C = 1 (greyscale) or 3 (RGB), got {shape}; pass channels first")
        super().__init__(shape, low=0.0, high=1.0, levels=levels, dequantize=dequantize, field=field)

    def validate(self, item) -> torch.Tensor:
        """A C×H×W float tensor in [0, 1]; integer arrays are read as level indices ``0..levels-1``.
        Anything else raises :class:`SpaceError` with one line naming the problem and the fix."""
        x = as_float_tensor(item, "image space")
        C, H, W = self.shape
        if tuple(x.shape) != self.shape:
            got = tuple(x.shape)
            hint = "pass channels first (permute(2, 0, 1))" if got == (H, W, C) else f"resize or crop to {H}×{W} with {C} channel(s) first"
            raise SpaceError(f"image space: expected an image of shape {self.shape} (C×H×W), got {got}; {hint}")
        return self.check_values(x, "image space")

    def decode(self, state) -> list[torch.Tensor]:
        """Samples back to images. With dequantisation (training saw level ``k`` as ``(k + U) / L``,
        ``U ~ U[0, 1)``) the value ``u in [0, 1]`` decodes to level ``min(floor(u L), L - 1)``, the exact
        inverse of that map, and then to ``k / (L - 1)``; otherwise to the nearest level."""
        if not self.dequantize or self.levels is None:
            return super().decode(state)
        L = self.levels
        u = ((state[self.field_name].detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)
        k = torch.floor(u * L).clamp(max=L - 1)
        return list(k / (L - 1))

    def write(self, items: list, out: Path, *, labels: Sequence[int] | None = None, name: str = "samples", display_size: int = 48,
              individual: bool = True, max_per_grid: int = 400, **kwargs) -> list[Path]:
        """Write ``items`` under ``out``; returns the written paths (grids first)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        images = [self.validate(x) for x in items]
        if not images:
            raise SpaceError("image space: nothing to write; pass at least one image")
        if labels is not None:
            if len(labels) < len(images):
                raise SpaceError(f"image space: got {len(labels)} labels for {len(images)} images; pass one label per image or none")
            labels = list(labels)[:len(images)]  # the labels of a larger run whose first images are written (diffkit bench writes 64)
        scale = max(1, int(display_size) // max(self.shape[1:]))
        paths = []
        if labels is None:
            paths.append(save_png(grid_array(images[:max_per_grid]), out / f"{name}.png", scale))
        else:
            classes = sorted(set(int(c) for c in labels))
            per_class = {c: [im for im, lab in zip(images, labels) if int(lab) == c] for c in classes}
            width = max(1, min(16, max(len(v) for v in per_class.values())))
            overview = []
            for c in classes:
                row = per_class[c][:width]
                overview.extend(row + [torch.ones_like(images[0])] * (width - len(row)))
            paths.append(save_png(grid_array(overview, ncol=width), out / f"{name}.png", scale))
            for c in classes:
                paths.append(save_png(grid_array(per_class[c][:max_per_grid]), out / f"{name}_class{c}.png", scale))
        if individual:
            folder = out / "images"
            for i, im in enumerate(images):
                suffix = "" if labels is None else f"_c{int(labels[i])}"
                paths.append(save_png(to_uint8(im), folder / f"{i:05d}{suffix}.png"))
        return paths

    def read(self, path: Path) -> tuple[list, list[dict]]:
        """Images from a PNG/JPEG file or a folder of them (its ``images/`` sub-folder when present),
        sorted by name, converted to this space's channels, scaled ``k / 255`` and rounded to the space's
        nearest level (so ``write`` then ``read`` gives back the images exactly); a file that cannot be
        read or has the wrong size is listed in the failures with the reason."""
        items, _, failures = self.read_labelled(path)
        return items, failures

    def read_labelled(self, path: Path) -> tuple[list, list[int] | None, list[dict]]:
        """:meth:`read` plus labels from the names ``write`` gives (``00012_c3.png``: class 3); None unless every image read has one."""
        from PIL import Image, UnidentifiedImageError

        path = Path(path)
        if path.is_dir():
            folder = path / "images" if (path / "images").is_dir() else path
            files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg") and f.is_file())
        else:
            files = [path]
        items, labels, failures = [], [], []
        for f in files:
            try:
                with Image.open(f) as img:
                    img = img.convert("L" if self.shape[0] == 1 else "RGB")
                    arr = np.asarray(img, dtype=np.float32) / 255.0
                x = self.validate(torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()))
                if self.levels is not None:  # 8-bit files of a coarser space (17 levels) back onto its levels: exact round trip
                    x = torch.round(x * (self.levels - 1)) / (self.levels - 1)
                items.append(x)
                found = re.search(r"_c(\d+)$", f.stem)
                labels.append(int(found.group(1)) if found else None)
            except (SpaceError, OSError, ValueError, UnidentifiedImageError) as exc:
                failures.append({"item": f.name, "reason": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
        return items, (labels if labels and None not in labels else None), failures

    def config(self) -> dict:
        return {"shape": list(self.shape), "levels": self.levels, "dequantize": self.dequantize, "field": self.field_name}


__all__ = ["ImageSpace", "grid_array", "save_png", "to_uint8"]
