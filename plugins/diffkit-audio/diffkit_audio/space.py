"""The ``audio`` space: :class:`diffkit.spaces.AudioSequence` whose ``write`` adds a spectrogram sheet,
whose ``read`` accepts any format soundfile reads, and the :func:`conform` helper."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import torch

from diffkit.spaces import AudioSequence, SpaceError
from diffkit.spaces.audio import write_wav
from diffkit.spaces.base import FieldSpec
from diffkit.state import State

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def conform(wave, sample_rate: int, target_rate: int, channels: int = 1, length: int | None = None, *, mixdown: bool = True,
            align: str = "start") -> torch.Tensor:
    """Bring a waveform to ``channels × length`` samples at ``target_rate`` Hz, explicitly.

    Rules, in order: a 1-D input is one channel; a ``T×C`` array with ``C < T`` and ``C <= 8`` stays
    ``C×T`` only if given as such (pass ``C×T``). Channels: ``C -> 1`` averages the channels when
    ``mixdown`` (else raises); ``1 -> C`` repeats the channel. Rate: band-limited sinc resampling by
    ``torchaudio.functional.resample(x, sample_rate, target_rate)`` (anti-aliased when down-sampling).
    Length: cropped (``align="start"`` keeps the first samples, ``"center"`` the middle) or zero-padded
    at the end. Values are clamped to [-1, 1].
    """
    import torchaudio.functional as AF

    x = torch.as_tensor(wave).float()
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2:
        raise SpaceError(f"conform: expected a waveform of shape (channels, samples) or (samples,), got {tuple(x.shape)}; reshape it")
    if int(sample_rate) <= 0 or int(target_rate) <= 0:
        raise SpaceError(f"conform: sample rates must be positive, got {sample_rate} -> {target_rate}")
    c = x.shape[0]
    if c != channels:
        if channels == 1:
            if not mixdown:
                raise SpaceError(f"conform: clip has {c} channels but 1 is wanted and mixdown=False; pass mixdown=True to average the channels")
            x = x.mean(0, keepdim=True)
        elif c == 1:
            x = x.expand(channels, -1).clone()
        else:
            raise SpaceError(f"conform: cannot map {c} channels to {channels}; mix down to mono first (channels=1, mixdown=True)")
    if int(sample_rate) != int(target_rate):
        x = AF.resample(x, int(sample_rate), int(target_rate))
    if length is not None:
        length, n = int(length), x.shape[1]
        if n > length:
            start = (n - length) // 2 if align == "center" else 0
            x = x[:, start:start + length]
        elif n < length:
            x = torch.nn.functional.pad(x, (0, length - n))
    return x.clamp(-1.0, 1.0).contiguous()


def plot_spectrograms(items: Sequence[torch.Tensor], sample_rate: int, path: Path, *, titles: Sequence[str] | None = None,
                      n_fft: int = 256, max_items: int = 16) -> Path:
    """A sheet of log-magnitude spectrograms ``20 log10(|STFT| + 1e-5)`` (Hann window ``n_fft``,
    hop ``n_fft/4``, first channel) of up to ``max_items`` clips, written as one PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    items = list(items)[:max_items]
    cols = min(4, max(1, len(items)))
    rows = max(1, math.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
    window = torch.hann_window(n_fft)
    for k, ax in enumerate(axes.flat):
        if k >= len(items):
            ax.axis("off")
            continue
        x = torch.as_tensor(items[k]).float()
        x = x[0] if x.dim() == 2 else x
        spec = torch.stft(x, n_fft, hop_length=n_fft // 4, window=window, return_complex=True).abs()
        db = 20 * torch.log10(spec + 1e-5)
        dur = x.shape[-1] / sample_rate
        ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=float(db.max()) - 80, vmax=float(db.max()),
                  extent=(0, dur, 0, sample_rate / 2000))
        ax.set_title(titles[k] if titles else f"#{k}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("s", fontsize=6)
        ax.set_ylabel("kHz", fontsize=6)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


class AudioSpace(AudioSequence):
    """Registered space ``audio``: an :class:`~diffkit.spaces.AudioSequence` (elements ``C×T`` in [-1, 1]
    at ``sample_rate`` Hz, field ``wave``) that writes 16-bit WAVs plus ``spectrograms.png`` and reads
    WAV/FLAC/OGG with soundfile (a clip at another rate or length is reported, not converted: use
    :func:`conform` or the ``audio-folder`` dataset to convert on purpose).

    With ``n_mels > 0`` (a recipe's ``[data] space = { n_mels = 40, hop = 64 }``) the space also has a
    conditioning field ``mel`` (``FieldSpec(diffused=False)``): ``collate`` computes
    :func:`diffkit_audio.backbone.mel_spectrogram` of the (mono) wave, ``B×n_mels×(length/hop)``, which a
    mel-conditioned ``diffwave`` (a vocoder) reads; it is never noised, and at sampling time it comes from
    the reference clips."""

    name = "audio"

    def __init__(self, channels: int = 1, length: int = 16000, sample_rate: int = 16000, field: str = "wave", n_mels: int = 0, hop: int = 64):
        super().__init__(channels, length, sample_rate, field)
        self.n_mels, self.hop = int(n_mels), int(hop)
        if self.n_mels < 0 or self.hop < 1:
            raise SpaceError(f"audio: n_mels must be >= 0 and hop >= 1, got n_mels={n_mels}, hop={hop}")
        if self.n_mels:
            if self.channels != 1 or self.length % self.hop:
                raise SpaceError(f"audio: mel conditioning needs mono clips whose length is a multiple of hop, got {self.channels} channel(s), "
                                 f"length {self.length}, hop {self.hop}; use channels = 1 and a hop dividing the length")
            self.fields = (*self.fields, FieldSpec("mel", diffused=False))

    def collate(self, items, *, train: bool = False, generator=None) -> State:
        state = super().collate(items, train=train, generator=generator)
        if self.n_mels:
            from diffkit_audio.backbone import mel_spectrogram

            state["mel"] = mel_spectrogram(state[self.field_name], self.sample_rate, self.n_mels, self.hop)
        return state

    def template(self, batch_size: int, stats=None, generator=None) -> State:
        state = super().template(batch_size, stats, generator)
        if self.n_mels:
            state["mel"] = torch.zeros(int(batch_size), self.n_mels, self.length // self.hop)
        return state

    def config(self) -> dict:
        return {**super().config(), "n_mels": self.n_mels, "hop": self.hop}

    def write(self, items: list, out: Path, *, name: str = "sample", labels: Sequence[int] | None = None, spectrograms: bool = True, **kwargs) -> list[Path]:
        paths = []
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for i, x in enumerate(items):
            tag = f"_class{int(labels[i])}" if labels is not None else ""
            paths.append(write_wav(out / f"{name}_{i:04d}{tag}.wav", self.validate(x), self.sample_rate))
        if spectrograms and items:
            titles = [p.stem for p in paths]
            paths.append(plot_spectrograms(items, self.sample_rate, out / f"{name}_spectrograms.png", titles=titles))
        return paths

    def read(self, path: Path) -> tuple[list, list[dict]]:
        """Clips from an audio file or a folder of them (read with soundfile)."""
        items, _, failures = self.read_labelled(path)
        return items, failures

    def read_labelled(self, path: Path) -> tuple[list, list[int] | None, list[dict]]:
        """:meth:`read` plus labels from the names ``write`` gives (``sample_0012_class3.wav``: class 3); None unless every clip read has one."""
        import soundfile as sf

        path = Path(path)
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES) if path.is_dir() else [path]
        items, labels, failures = [], [], []
        for f in files:
            try:
                data, rate = sf.read(str(f), dtype="float32", always_2d=True)
                items.append(self.validate((torch.from_numpy(data.T.copy()), int(rate))))
                found = re.search(r"_class(\d+)$", f.stem)
                labels.append(int(found.group(1)) if found else None)
            except Exception as exc:  # noqa: BLE001 - a bad file is reported, never fatal
                failures.append({"item": f.name, "reason": (str(exc).splitlines() or [type(exc).__name__])[0]})
        return items, (labels if labels and None not in labels else None), failures
