"""diffkit-audio: audio for diffkit (DiffWave, spoken digits synthesised with eSpeak NG, audio folders, audio metrics).

Imports are lazy so that ``python -m diffkit_audio.espeak`` (the synthesis worker) does not load torch.
"""
__version__ = "0.1.0"

_EXPORTS = {
    "AudioSpace": "diffkit_audio.space", "conform": "diffkit_audio.space", "plot_spectrograms": "diffkit_audio.space",
    "DiffWave": "diffkit_audio.backbone", "build_diffwave": "diffkit_audio.backbone", "mel_spectrogram": "diffkit_audio.backbone",
    "spoken_digits": "diffkit_audio.data", "audio_folder": "diffkit_audio.data",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'diffkit_audio' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
