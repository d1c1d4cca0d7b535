"""Trained models shipped with diffkit-audio (``diffkit.pretrained`` entry points); ``scripts/make_pretrained.py`` makes them."""
from diffkit.pretrained import packaged


def spoken_digits_mel():
    """The ``spoken-digits-mel`` recipe (class-conditional DiffWave denoiser over log-mel frames, learned one-pass vocoder), trained with seed 0."""
    return packaged(__name__, "spoken-digits-mel")


def spoken_digits_cpu():
    """The ``spoken-digits-cpu`` recipe (class-conditional patched DiffWave on 8 kHz waveforms, 30 CPU minutes), trained with seed 0."""
    return packaged(__name__, "spoken-digits-cpu")
