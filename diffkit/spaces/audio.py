"""Audio sequences: waveforms in [-1, 1]^(channels×length) at a fixed sample rate."""
from __future__ import annotations

import wave
from pathlib import Path
from typing import Any, Sequence

import torch

from diffkit.spaces.base import FieldSpec, Space, SpaceError, as_float_tensor, check_items
from diffkit.state import State


class AudioClip(tuple):
    """A waveform with its sample rate: ``AudioClip(wave, sample_rate)``."""

    def __new__(cls, wave: torch.Tensor, sample_rate: int):
        return super().__new__(cls, (wave, int(sample_rate)))

    @property
    def wave(self) -> torch.Tensor:
        return self[0]

    @property
    def sample_rate(self) -> int:
        return self[1]


class AudioSequence(Space):
    """Waveforms of ``channels × length`` samples at ``sample_rate`` Hz, values in [-1, 1].

    An element is a tensor ``C×T`` (or ``T`` for mono), taken to be at the space's rate, or an
    :class:`AudioClip` ``(wave, sample_rate)``. A clip at another rate is rejected: resample it
    explicitly first (``diffkit_audio.conform`` does so with torchaudio). Encoded as ``State(wave=B×C×T)``.
    """

    name = "audio-sequence"

    def __init__(self, channels: int = 1, length: int = 16000, sample_rate: int = 16000, field: str = "wave"):
        if int(channels) < 1 or int(length) < 1 or int(sample_rate) < 1:
            raise SpaceError(f"AudioSequence: channels, length and sample_rate must be positive, got {channels}, {length}, {sample_rate}")
        self.channels, self.length, self.sample_rate = int(channels), int(length), int(sample_rate)
        self.field_name = field
        self.fields = (FieldSpec(field),)

    @property
    def duration(self) -> float:
        """Seconds of signal in one element, ``length / sample_rate`` (``diffkit bench`` reports real-time factors from it)."""
        return self.length / self.sample_rate

    def validate(self, item: Any) -> torch.Tensor:
        rate = self.sample_rate
        if isinstance(item, AudioClip) or (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], int)):
            item, rate = item[0], int(item[1])
        if rate != self.sample_rate:
            raise SpaceError(
                f"AudioSequence: clip is at {rate} Hz but the space is at {self.sample_rate} Hz; "
                f"resample it first (torchaudio.functional.resample or diffkit_audio.conform)"
            )
        x = as_float_tensor(item, "AudioSequence")
        if not x.is_floating_point():
            raise SpaceError(f"AudioSequence: got integer samples ({x.dtype}); convert PCM to float in [-1, 1] (int16: divide by 32768)")
        if x.dim() == 1:
            x = x[None]
        if x.dim() != 2 or x.shape[0] != self.channels:
            raise SpaceError(f"AudioSequence: expected {self.channels} channel(s) × {self.length} samples, got shape {tuple(x.shape)}; mix down or reshape to (channels, samples)")
        if x.shape[1] != self.length:
            raise SpaceError(f"AudioSequence: expected {self.length} samples, got {x.shape[1]}; crop or pad the clip to {self.length} samples")
        peak = float(x.abs().max())
        if peak > 1.0 + 1e-6:
            raise SpaceError(f"AudioSequence: samples must lie in [-1, 1], got peak {peak:.4g}; normalise the clip (divide by its peak)")
        return x.clamp(-1.0, 1.0)

    def collate(self, items: Sequence[Any], *, train: bool = False, generator=None) -> State:
        items = check_items(items, "AudioSequence")
        return State({self.field_name: torch.stack([self.validate(i) for i in items])})

    def decode(self, state: State) -> list[torch.Tensor]:
        return list(state[self.field_name].detach().float().cpu().clamp(-1.0, 1.0))

    def natural(self, items: list) -> list[AudioClip]:
        """An :class:`AudioClip` ``(waveform C×T in [-1, 1], sample rate)`` for each clip."""
        return [AudioClip(x, self.sample_rate) for x in items]

    def write(self, items: list, out: Path, *, name: str = "sample", labels: Sequence[int] | None = None, **kwargs) -> list[Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, x in enumerate(items):
            tag = f"_class{labels[i]}" if labels is not None else ""
            path = out / f"{name}_{i:04d}{tag}.wav"
            write_wav(path, x, self.sample_rate)
            paths.append(path)
        return paths

    def read(self, path: Path) -> tuple[list, list[dict]]:
        """Clips from a WAV file or a folder of WAV files (16-bit PCM); a clip at another rate or length is a failure."""
        path = Path(path)
        files = sorted(path.glob("*.wav")) if path.is_dir() else [path]
        items, failures = [], []
        for f in files:
            try:
                items.append(self.validate(read_wav(f)))
            except (SpaceError, OSError, EOFError, wave.Error) as exc:
                failures.append({"item": f.name, "reason": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
        return items, failures

    def template(self, batch_size: int, stats=None, generator=None) -> State:
        return State({self.field_name: torch.zeros(int(batch_size), self.channels, self.length)})

    def config(self) -> dict:
        return {"channels": self.channels, "length": self.length, "sample_rate": self.sample_rate, "field": self.field_name}


def write_wav(path: Path, x: torch.Tensor, sample_rate: int) -> Path:
    """Write a ``C×T`` float waveform in [-1, 1] as 16-bit PCM WAV (standard library only)."""
    x = torch.as_tensor(x).float()
    if x.dim() == 1:
        x = x[None]
    pcm = (x.clamp(-1, 1) * 32767.0).round().to(torch.int16).T.contiguous()  # T×C interleaved
    with wave.open(str(path), "wb") as f:
        f.setnchannels(x.shape[0])
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.numpy().tobytes())
    return Path(path)


def read_wav(path: Path) -> AudioClip:
    """Read a 16-bit PCM WAV into an :class:`AudioClip` of floats in [-1, 1]."""
    import numpy as np

    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise SpaceError(f"{path}: only 16-bit PCM WAV is read by the core; use soundfile for other encodings")
        frames = f.readframes(f.getnframes())
        data = np.frombuffer(frames, dtype=np.int16).reshape(-1, f.getnchannels()).T
        return AudioClip(torch.from_numpy(data.astype("float32") / 32768.0), f.getframerate())
