"""Trained models shipped with the core (``diffkit.pretrained`` entry points); ``scripts/make_pretrained.py`` makes them."""
from diffkit.pretrained import packaged


def gmm():
    """The ``gmm`` recipe (2-D ring of eight Gaussians), trained with seed 0."""
    return packaged(__name__, "gmm")
