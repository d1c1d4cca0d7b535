"""Trained models shipped with diffkit-audio (``diffkit.pretrained`` entry points); ``scripts/make_pretrained.py`` makes them."""
from diffkit.pretrained import packaged


def spoken_digits_mel():
    """The ``spoken-digits-mel`` recipe (class-conditional UNet on log-mel frames, Griffin-Lim decoding), trained with seed 0."""
    return packaged(__name__, "spoken-digits-mel")
