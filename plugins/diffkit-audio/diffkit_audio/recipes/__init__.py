"""The audio recipes, shipped as TOML files beside this module and exposed as functions returning dicts."""
from __future__ import annotations

from diffkit.recipes import read_packaged


def spoken_digits() -> dict:
    """Class-conditional DiffWave on 8 kHz spoken digits (GPU-sized: 20k steps)."""
    return read_packaged("diffkit_audio.recipes", "spoken_digits.toml")


def spoken_digits_smoke() -> dict:
    """The CPU smoke test (about a minute of training on 2 cores): checks the path, not the quality."""
    return read_packaged("diffkit_audio.recipes", "spoken_digits_smoke.toml")


def spoken_digits_vocoder_smoke() -> dict:
    """A mel-conditioned DiffWave vocoder as a smoke test (about a minute of CPU training): checks the path, not the quality."""
    return read_packaged("diffkit_audio.recipes", "spoken_digits_vocoder_smoke.toml")


def spoken_digits_mel() -> dict:
    """Two-stage spoken digits: a UNet diffusing log-mel frames, Griffin-Lim (or a DiffWave vocoder) back to waves."""
    return read_packaged("diffkit_audio.recipes", "spoken_digits_mel.toml")


def spoken_digits_cpu() -> dict:
    """The waveform DiffWave's CPU tier: 30 minutes of training on the machine's cores, ancestral 100 steps at guidance 4."""
    return read_packaged("diffkit_audio.recipes", "spoken_digits_cpu.toml")
