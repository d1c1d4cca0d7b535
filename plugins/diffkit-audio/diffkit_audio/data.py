"""Datasets: ``spoken-digits`` (the words zero..nine synthesised with eSpeak NG) and ``audio-folder``.

Caches live under ``$DIFFKIT_CACHE`` (default ``~/.cache/diffkit``) as safetensors + JSON, never pickle.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from diffkit_audio.space import AUDIO_SUFFIXES, AudioSpace, conform

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAMPLE_RATE = 8000  # Hz: telephone band, enough for intelligible digits and 2.75x fewer samples than 22.05 kHz
LENGTH = 4096       # samples: 0.512 s per clip (every word at the chosen speaking rates fits)
# eSpeak NG English accents and voice variants (all shipped by espeakng-loader).
ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3", "Alex", "Andy",
            "anika", "belinda", "david", "edward", "grandpa", "john", "linda", "max", "michel", "norbert", "paul", "rob", "robert", "steph", "travis")
SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}
DATA_VERSION = 2


class DatasetError(ValueError):
    """A dataset cannot be built. The message names the problem and the fix."""


def cache_dir(*parts: str) -> Path:
    """``$DIFFKIT_CACHE/<parts>`` (default ``~/.cache/diffkit``), created on demand."""
    root = Path(os.environ.get("DIFFKIT_CACHE") or Path.home() / ".cache" / "diffkit")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _key(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def save_tensors(path: Path, tensors: dict, meta: dict) -> None:
    """Atomically write ``path`` (.safetensors) and its sidecar ``path.with_suffix('.json')``."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    meta_tmp = path.with_suffix(f".json.tmp{os.getpid()}")
    meta_tmp.write_text(json.dumps(meta, indent=1))
    os.replace(meta_tmp, path.with_suffix(".json"))
    os.replace(tmp, path)


def load_tensors(path: Path) -> tuple[dict, dict] | None:
    """The tensors and JSON metadata saved by :func:`save_tensors`, or None when absent or unreadable."""
    from safetensors.torch import load_file

    meta_path = path.with_suffix(".json")
    if not (path.exists() and meta_path.exists()):
        return None
    try:
        return load_file(str(path)), json.loads(meta_path.read_text())
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
        return None


class WaveDataset(Dataset):
    """``(wave C×T float in [-1, 1], label int)`` items (labels may be None: then items are bare waves)."""

    def __init__(self, waves: torch.Tensor, labels: torch.Tensor | None, space: AudioSpace, info: dict | None = None):
        self.waves, self.labels, self.space, self.info = waves, labels, space, info or {}

    def __len__(self) -> int:
        return int(self.waves.shape[0])

    def __getitem__(self, i):
        x = self.waves[i]
        if x.dtype == torch.int16:
            x = x.float() / 32768.0
        return x if self.labels is None else (x, int(self.labels[i]))


# --- spoken digits ----------------------------------------------------------------------------------
def digit_requests(split: str, n_per_class: int, seed: int) -> tuple[list[dict], list[dict]]:
    """The synthesis requests of a split and the per-clip placement parameters, drawn from
    ``random.Random(seed * 10 + split_offset)``: per clip a digit (balanced, ``n_per_class`` each, shuffled),
    accent, voice variant, speaking rate U[170, 260] words/min, pitch U[20, 80], pitch range U[20, 90],
    peak amplitude U[0.25, 0.9] and a start offset fraction U[0, 1] of the free room in the clip."""
    rng = random.Random(int(seed) * 10 + SPLIT_OFFSET[split])
    digits = [d for d in range(10) for _ in range(int(n_per_class))]
    rng.shuffle(digits)
    requests, placement = [], []
    for d in digits:
        variant = rng.choice(VARIANTS)
        voice = rng.choice(ACCENTS) + (f"+{variant}" if variant else "")
        requests.append({"text": DIGITS[d], "voice": voice, "rate": rng.randint(170, 260), "pitch": rng.randint(20, 80), "range": rng.randint(20, 90)})
        placement.append({"label": d, "peak": round(rng.uniform(0.25, 0.9), 4), "offset": rng.random()})
    return requests, placement


def place_word(x: torch.Tensor, sample_rate: int, length: int, peak: float, offset: float) -> torch.Tensor:
    """Place one utterance ``x`` (1-D, already at ``sample_rate``): trim leading/trailing samples below 2% of its
    peak, crop to ``length`` (10 ms fade-out) if still longer, scale its peak to ``peak`` and put it at
    ``offset × (length - n)`` samples in a silent clip of ``length`` samples."""
    loud = (x.abs() >= 0.02 * x.abs().max().clamp(min=1e-8)).nonzero()
    x = x[int(loud[0]): int(loud[-1]) + 1] if len(loud) else x[:0]
    if x.numel() > length:
        x = x[:length].clone()
        fade = max(1, sample_rate // 100)
        x[-fade:] *= torch.linspace(1, 0, fade)
    x = x * (peak / x.abs().max().clamp(min=1e-8)) if x.numel() else x
    out = torch.zeros(1, length)
    start = int(offset * (length - x.numel()))
    out[0, start:start + x.numel()] = x
    return out


def resample_batch(raws: list, rate: int, target_rate: int) -> list[torch.Tensor]:
    """int16 utterances -> float tensors at ``target_rate``: zero-padded to a common length and resampled in one
    explicit ``torchaudio.functional.resample`` call, then cut back to ``ceil(n * target_rate / rate)`` samples each."""
    import torchaudio.functional as AF

    n_max = max(len(r) for r in raws)
    batch = torch.zeros(len(raws), n_max)
    for i, r in enumerate(raws):
        batch[i, : len(r)] = torch.from_numpy(r.astype("float32") / 32768.0)
    out = AF.resample(batch, rate, target_rate)
    return [out[i, : -(-len(r) * target_rate // rate)] for i, r in enumerate(raws)]


def spoken_digits(split: str = "train", *, n_per_class: int = 100, eval_per_class: int = 20, seed: int = 0, sample_rate: int = SAMPLE_RATE,
                  length: int = LENGTH, cache: bool = True) -> WaveDataset:
    """Registered dataset ``spoken-digits``: SC09-like spoken words "zero".."nine" synthesised offline with eSpeak NG.

    Mono clips of ``length`` samples (default 4096 = 0.512 s) at ``sample_rate`` Hz (default 8000), values in
    [-1, 1]; items are ``(wave 1×T, digit)``. ``split="train"`` has ``n_per_class`` clips per digit, ``"val"``
    and ``"test"`` ``eval_per_class`` each, all drawn independently from the same voice distribution
    (:func:`digit_requests`). Deterministic for ``seed``; cached as ``$DIFFKIT_CACHE/spoken-digits/<key>.safetensors``
    (int16 samples) + ``.json`` (options and per-clip voice parameters).
    """
    if split not in SPLIT_OFFSET:
        raise DatasetError(f"spoken-digits: unknown split {split!r}; use 'train', 'val' or 'test'")
    n = int(n_per_class if split == "train" else eval_per_class)
    if n < 1:
        raise DatasetError(f"spoken-digits: split {split!r} would be empty (n={n}); set n_per_class / eval_per_class to at least 1")
    space = AudioSpace(channels=1, length=int(length), sample_rate=int(sample_rate))
    spec = {"version": DATA_VERSION, "split": split, "n_per_class": n, "seed": int(seed), "sample_rate": int(sample_rate), "length": int(length)}
    path = cache_dir("spoken-digits") / f"{split}-{_key(spec)}.safetensors"
    if cache:
        hit = load_tensors(path)
        if hit is not None and hit[1].get("spec") == spec:
            return WaveDataset(hit[0]["waves"], hit[0]["labels"], space, hit[1])
    from diffkit_audio.espeak import ESPEAK_RATE, synthesize

    requests, placement = digit_requests(split, n, int(seed))
    raws = synthesize(requests, seed=int(seed) * 10 + SPLIT_OFFSET[split])
    waves = torch.stack([place_word(x, int(sample_rate), int(length), p["peak"], p["offset"])
                         for x, p in zip(resample_batch(raws, ESPEAK_RATE, int(sample_rate)), placement)])
    pcm = (waves * 32767.0).round().to(torch.int16)
    labels = torch.tensor([p["label"] for p in placement], dtype=torch.long)
    meta = {"spec": spec, "dataset": "spoken-digits", "clips": [{**r, **p} for r, p in zip(requests, placement)]}
    if cache:
        save_tensors(path, {"waves": pcm, "labels": labels}, meta)
    return WaveDataset(pcm, labels, space, meta)


# --- audio folders ----------------------------------------------------------------------------------
def audio_folder(split: str = "train", *, root: str | None = None, sample_rate: int = 16000, length: int = 16000, channels: int = 1,
                 mixdown: bool = True, labels: str = "none", val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                 align: str = "start") -> WaveDataset:
    """Registered dataset ``audio-folder``: every WAV/FLAC/OGG/AIFF file under ``root`` (recursively), read with soundfile.

    Each file is mixed down to mono when ``channels=1`` and ``mixdown`` (average of channels), resampled
    explicitly to ``sample_rate`` with ``torchaudio.functional.resample``, cropped (``align``: "start" or
    "center") or zero-padded to ``length`` samples (:func:`~diffkit_audio.space.conform`), and peak-clipped
    to [-1, 1]. ``labels="folder"`` labels each file by its parent folder (sorted folder names -> 0..K-1).
    Splits: the sorted file list is shuffled with ``seed``; the first ``test_fraction`` are "test", the
    next ``val_fraction`` "val", the rest "train"; ``split="all"`` keeps every file. Unreadable files are
    reported by name in one warning and skipped (``dataset.skipped``).
    """
    if root is None:
        raise DatasetError("audio-folder: no folder given; pass options = { root = \"path/to/audio\" } in the recipe's [data] table")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetError(f"audio-folder: {base} is not a folder; set root to a folder of WAV/FLAC files")
    if split not in ("train", "val", "test", "all"):
        raise DatasetError(f"audio-folder: unknown split {split!r}; use 'train', 'val', 'test' or 'all'")
    if labels not in ("none", "folder"):
        raise DatasetError(f"audio-folder: labels={labels!r}; use 'none' or 'folder'")
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise DatasetError(f"audio-folder: no audio files ({', '.join(AUDIO_SUFFIXES)}) under {base}; point root at a folder of clips")
    classes = sorted({p.parent.relative_to(base).as_posix() for p in files})
    order = list(range(len(files)))
    random.Random(int(seed)).shuffle(order)
    n_test, n_val = int(round(test_fraction * len(files))), int(round(val_fraction * len(files)))
    chosen = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:], "all": order}[split]
    if not chosen:
        raise DatasetError(f"audio-folder: split {split!r} is empty ({len(files)} files, val_fraction={val_fraction}, test_fraction={test_fraction}); "
                           f"add files, change the fractions or use split='all'")
    import soundfile as sf

    waves, labs, skipped = [], [], []
    for i in sorted(chosen):
        f = files[i]
        try:
            data, rate = sf.read(str(f), dtype="float32", always_2d=True)
            if data.shape[0] == 0:
                raise ValueError("no samples")
            if not np.isfinite(data).all():
                raise ValueError(f"{int((~np.isfinite(data)).sum())} sample value(s) are NaN or infinite")
            waves.append(conform(torch.from_numpy(data.T.copy()), rate, sample_rate, channels, length, mixdown=mixdown, align=align))
            labs.append(classes.index(f.parent.relative_to(base).as_posix()))
        except Exception as exc:  # noqa: BLE001 - a bad file is reported and skipped
            skipped.append(f"{f.relative_to(base)} ({(str(exc).splitlines() or [type(exc).__name__])[0]})")
    if skipped:
        warnings.warn(f"audio-folder: skipped {len(skipped)} unreadable file(s): {'; '.join(skipped)}", stacklevel=2)
    if not waves:
        raise DatasetError(f"audio-folder: none of the {len(chosen)} file(s) of split {split!r} under {base} could be read (first: {skipped[0]}); check the files with soundfile")
    space = AudioSpace(channels=int(channels), length=int(length), sample_rate=int(sample_rate))
    ds = WaveDataset(torch.stack(waves), torch.tensor(labs) if labels == "folder" else None, space,
                     {"root": str(base), "classes": classes if labels == "folder" else None})
    ds.skipped = skipped
    return ds
