"""Trained models shipped with diffkit-image (``diffkit.pretrained`` entry points); ``scripts/make_pretrained.py`` makes them."""
from diffkit.pretrained import packaged


def digits():
    """The ``digits`` recipe (class-conditional 8×8 digits, small UNet), trained with seed 0."""
    return packaged(__name__, "digits")


def mnist_latent():
    """The ``mnist-latent`` recipe (MNIST 28×28 through a 4×7×7 autoencoder, class-conditional UNet on the codes), trained with seed 0."""
    return packaged(__name__, "mnist-latent")
