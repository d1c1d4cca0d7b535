"""The ``tcn`` backbone: a residual, dilated 1-D convolution network over multivariate series."""
from __future__ import annotations

import torch
from torch import nn

from diffkit.backbones import ClassEmbedding, timestep_embedding


class ResidualBlock(nn.Module):
    """``h <- h + Conv1x1(SiLU(Conv_k,d(FiLM_t(GroupNorm(h)))))``: a dilated convolution whose normalised
    input is scaled and shifted by the time (and class) embedding."""

    def __init__(self, hidden: int, emb: int, kernel: int, dilation: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(8, hidden), hidden)
        self.film = nn.Linear(emb, 2 * hidden)
        self.conv = nn.Conv1d(hidden, hidden, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.mix = nn.Conv1d(hidden, hidden, 1)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(e)[:, :, None].chunk(2, dim=1)
        return h + self.mix(nn.functional.silu(self.conv(self.norm(h) * (1 + scale) + shift)))


class TCN(nn.Module):
    """``forward(state, t, cond=None) -> {field: B×C×T}``; receptive field ``1 + (kernel-1) * sum(dilations)``.

    Channels mix in the 1×1 convolutions, time steps in the dilated ones. GroupNorm normalises each
    series on its own, so examples never mix within a batch."""

    def __init__(self, field: str, channels: int, hidden: int = 64, dilations=(1, 2, 4, 8), kernel: int = 3, num_classes: int = 0, time_dim: int = 64):
        super().__init__()
        self.field, self.time_dim = field, int(time_dim)
        self.inp = nn.Conv1d(channels, hidden, 1)
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.classes = ClassEmbedding(num_classes, hidden) if num_classes else None
        self.blocks = nn.ModuleList(ResidualBlock(hidden, hidden, kernel, d) for d in dilations)
        self.out = nn.Sequential(nn.GroupNorm(min(8, hidden), hidden), nn.SiLU(), nn.Conv1d(hidden, channels, 1))

    def forward(self, state, t, cond=None) -> dict:
        x = state[self.field]
        e = self.time(timestep_embedding(t, self.time_dim))
        if self.classes is not None:
            e = e + self.classes(cond, x.shape[0], x.device)
        e = nn.functional.silu(e)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return {self.field: self.out(h)}


def build_tcn(space, diffusion, *, num_classes: int = 0, hidden: int = 64, dilations=(1, 2, 4, 8), kernel: int = 3, time_dim: int = 64) -> TCN:
    """Registered backbone ``tcn``: for spaces with one continuous ``B×C×T`` field (multivariate-series, audio)."""
    cont = [f for f in space.fields if f.kind == "continuous"]
    if len(space.fields) != 1 or len(cont) != 1:
        raise ValueError(f"the tcn backbone models one continuous B×C×T field; space {space.name!r} has {[f.name for f in space.fields]}")
    shape = space.template(1)[cont[0].name].shape
    if len(shape) != 3:
        raise ValueError(f"the tcn backbone needs a B×C×T field; space {space.name!r} gives shape {tuple(shape)}")
    if int(kernel) % 2 == 0:
        raise ValueError(f"the tcn backbone needs an odd kernel to keep the length, got kernel={kernel}")
    return TCN(cont[0].name, int(shape[1]), int(hidden), tuple(int(d) for d in dilations), int(kernel), num_classes, int(time_dim))
