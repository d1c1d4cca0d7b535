"""The ``seasonal`` dataset: synthetic multivariate series from a known generating process.

Series ``i`` (channels ``c = 0..C-1``, steps ``t = 0..T-1``) is

    x_c(t) = A_i sin(2 pi t / P_i + phi_i + c pi / C) + b_i (t / T - 1/2) + e_c(t),

with period ``P_i`` drawn uniformly from ``periods`` (the class label when ``labelled``), amplitude
``A_i ~ U(0.5, 1.5)``, phase ``phi_i ~ U(0, 2 pi)``, trend ``b_i ~ N(0, trend^2)`` and stationary
AR(1) noise ``e_c(t) = rho e_c(t-1) + noise sqrt(1 - rho^2) z``, ``z ~ N(0, 1)`` independent per
channel. Every draw comes from one generator seeded by ``seed`` and the split, so the data are the
same on every machine; built series are cached as safetensors under ``$DIFFKIT_CACHE/timeseries``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffkit_timeseries.space import MultivariateSeries

SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


def cache_dir() -> Path:
    return Path(os.environ.get("DIFFKIT_CACHE", Path.home() / ".cache" / "diffkit")) / "timeseries"


def generate(n: int, channels: int = 3, length: int = 64, periods=(8, 16), rho: float = 0.8, noise: float = 0.2, trend: float = 0.5,
             seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` series (``n×C×T``) of the seasonal process and their period indices (``n``)."""
    g = torch.Generator().manual_seed(int(seed))
    periods_t = torch.as_tensor(list(periods), dtype=torch.float64)
    k = torch.randint(len(periods_t), (n,), generator=g)
    amp = 0.5 + torch.rand(n, generator=g, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    slope = trend * torch.randn(n, generator=g, dtype=torch.float64)
    t = torch.arange(length, dtype=torch.float64)
    c = torch.arange(channels, dtype=torch.float64)
    angle = 2 * math.pi * t[None, None, :] / periods_t[k][:, None, None] + phase[:, None, None] + c[None, :, None] * math.pi / channels
    seasonal = amp[:, None, None] * torch.sin(angle)
    drift = slope[:, None, None] * (t / length - 0.5)[None, None, :]
    z = torch.randn(n, channels, length, generator=g, dtype=torch.float64)
    e = torch.empty_like(z)
    e[..., 0] = noise * z[..., 0]
    innov = noise * math.sqrt(1 - rho * rho)
    for i in range(1, length):
        e[..., i] = rho * e[..., i - 1] + innov * z[..., i]
    return (seasonal + drift + e).float(), k


class Seasonal(torch.utils.data.Dataset):
    """Items are ``C×T`` series, or ``(series, period index)`` with ``labelled=True``."""

    def __init__(self, split: str = "train", n: int = 2000, channels: int = 3, length: int = 64, periods=(8, 16), rho: float = 0.8,
                 noise: float = 0.2, trend: float = 0.5, seed: int = 0, labelled: bool = False, scale: float = 1.0):
        if split not in SPLIT_OFFSET:
            raise ValueError(f"seasonal: unknown split {split!r}; use one of {sorted(SPLIT_OFFSET)}")
        self.space = MultivariateSeries(channels, length, scale)
        self.labelled = bool(labelled)
        spec = {"split": split, "n": int(n), "channels": int(channels), "length": int(length), "periods": [int(p) for p in periods],
                "rho": float(rho), "noise": float(noise), "trend": float(trend), "seed": int(seed)}
        path = cache_dir() / f"seasonal-{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]}.safetensors"
        if path.exists():
            tensors = load_file(str(path))
            self.series, self.labels = tensors["series"], tensors["labels"]
        else:
            self.series, self.labels = generate(int(n), int(channels), int(length), periods, rho, noise, trend, seed=int(seed) * 10 + SPLIT_OFFSET[split])
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            save_file({"series": self.series.contiguous(), "labels": self.labels.contiguous()}, str(tmp), metadata={k: json.dumps(v) for k, v in spec.items()})
            os.replace(tmp, path)

    def __len__(self) -> int:
        return self.series.shape[0]

    def __getitem__(self, i):
        if self.labelled:
            return self.series[i], int(self.labels[i])
        return self.series[i]


def seasonal(split: str = "train", **options) -> Seasonal:
    """Registered dataset ``seasonal`` (options: n, channels, length, periods, rho, noise, trend, seed, labelled, scale)."""
    return Seasonal(split, **options)
