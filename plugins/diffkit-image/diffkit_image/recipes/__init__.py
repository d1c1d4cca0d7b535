"""The image recipes, shipped as TOML files beside this module and exposed as functions returning dicts."""
from __future__ import annotations

from diffkit.recipes import read_packaged


def digits() -> dict:
    """Class-conditional UNet on scikit-learn's 8×8 digits: 600 steps, about 10 CPU-minutes (within 15 minutes on 2 cores)."""
    return read_packaged("diffkit_image.recipes", "digits.toml")


def digits_quick() -> dict:
    """The smoke test: the digits pipeline with a tiny UNet (400 steps, a minute or two on 2 cores); no bench task."""
    return read_packaged("diffkit_image.recipes", "digits_quick.toml")
