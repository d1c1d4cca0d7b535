"""Trained models shipped with diffkit-image (``diffkit.pretrained`` entry points); ``scripts/make_pretrained.py`` makes them."""
from diffkit.pretrained import packaged


def digits():
    """The ``digits`` recipe (class-conditional 8×8 digits, small UNet), trained with seed 0."""
    return packaged(__name__, "digits")
