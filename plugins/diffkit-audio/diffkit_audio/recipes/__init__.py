"""The audio recipes, shipped as TOML files beside this module and exposed as functions returning dicts."""
from __future__ import annotations

from diffkit.recipes import read_packaged


def spoken_digits() -> dict:
    """Class-conditional DiffWave on 8 kHz spoken digits (GPU-sized: 20k steps)."""
    return read_packaged("diffkit_audio.recipes", "spoken_digits.toml")


def spoken_digits_quick() -> dict:
    """The CPU smoke test: about a minute of training on 2 cores."""
    return read_packaged("diffkit_audio.recipes", "spoken_digits_quick.toml")


def spoken_digits_vocoder_quick() -> dict:
    """A mel-conditioned DiffWave vocoder at smoke-test scale (about a minute of CPU training)."""
    return read_packaged("diffkit_audio.recipes", "spoken_digits_vocoder_quick.toml")


def spoken_digits_mel() -> dict:
    """Two-stage spoken digits: a UNet diffusing log-mel frames, Griffin-Lim (or a DiffWave vocoder) back to waves."""
    return read_packaged("diffkit_audio.recipes", "spoken_digits_mel.toml")
