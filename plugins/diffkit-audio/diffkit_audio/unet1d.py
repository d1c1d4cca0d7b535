"""A 1-D UNet denoiser for sequences of frames (log-mel frames with bands as channels, or any ``C×T`` field).

DiffWave's stack (``diffwave``) keeps every layer at the input's time resolution, which suits samples; over mel
frames the structure that matters also spans tens of frames (a syllable, a pause). This backbone sees the sequence at
``T, T/2, ..., T/2^(L-1)`` frames, with self-attention over positions at the coarse levels, the usual image-diffusion
layout on one axis::

    e        = MLP(timestep_embedding(t)) [+ ClassEmbedding(cond)]
    h        = Conv_k3(x)                                               (C -> W channels)
    down:    level l = 0..L-1: ``blocks`` ResBlock(h, e) [+ Attention] at W·mult_l channels, each output kept as a skip;
             then Conv_k3,stride2 (halves the frames) except after the last level
    middle:  ResBlock, Attention, ResBlock
    up:      level l = L-1..0: ``blocks + 1`` ResBlock(concat(h, skip), e) [+ Attention]; then nearest x2 and Conv_k3
    out      = Conv_k3(SiLU(GroupNorm(h)))                              (W -> C channels, starts at zero)

    ResBlock(h, e) = skip(h) + Conv_k3(SiLU(GroupNorm(y) * (1 + s) + b)),  y = Conv_k3(SiLU(GroupNorm(h))),  (s, b) = W_e e
    Attention(h)   = h + W_o MultiHeadAttention(GroupNorm(h))             (over the positions; W_o starts at zero)

``T`` must be divisible by ``2^(L-1)``. Class conditioning: ``cond`` (B) labels, ``-1`` the null label.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from diffkit.backbones import ClassEmbedding, timestep_embedding


def _groups(channels: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


class ResBlock1d(nn.Module):
    def __init__(self, cin: int, cout: int, embed_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(cin), cin), nn.Conv1d(cin, cout, 3, padding=1)
        self.embed = nn.Linear(embed_dim, 2 * cout)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(cout), cout), nn.Conv1d(cout, cout, 3, padding=1)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h, emb):
        y = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.embed(emb)[:, :, None].chunk(2, dim=1)
        y = self.norm2(y) * (1 + scale) + shift
        return self.skip(h) + self.conv2(F.silu(y))


class Attention1d(nn.Module):
    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, h):
        q = self.norm(h).transpose(1, 2)
        return h + self.attn(q, q, q, need_weights=False)[0].transpose(1, 2)


class UNet1d(nn.Module):
    """The 1-D UNet on one ``C×T`` field (see the module docstring for the layout)."""

    def __init__(self, field: str, channels: int, width: int = 128, mults: tuple = (1, 2, 2), blocks: int = 2, attention: tuple = (2,),
                 heads: int = 4, num_classes: int = 0, time_dim: int = 128, embed_dim: int = 512):
        super().__init__()
        if width < 1 or blocks < 1 or not mults or any(int(m) < 1 for m in mults):
            raise ValueError(f"unet1d: width, blocks and every mult must be positive, got width={width}, blocks={blocks}, mults={list(mults)}")
        bad = [a for a in attention if not 0 <= int(a) < len(mults)]
        if bad:
            raise ValueError(f"unet1d: attention levels {bad} are not among the levels 0..{len(mults) - 1}; list levels by their index in mults")
        self.field, self.time_dim, self.levels = field, int(time_dim), len(mults)
        self.time = nn.Sequential(nn.Linear(time_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim), nn.SiLU())
        self.classes = ClassEmbedding(num_classes, embed_dim) if num_classes else None
        widths = [int(width) * int(m) for m in mults]
        attend = {int(a) for a in attention}
        self.inp = nn.Conv1d(channels, widths[0], 3, padding=1)
        self.down, skips, c = nn.ModuleList(), [widths[0]], widths[0]
        for level, w in enumerate(widths):
            for _ in range(blocks):
                self.down.append(nn.ModuleList([ResBlock1d(c, w, embed_dim), Attention1d(w, heads) if level in attend else nn.Identity()]))
                c = w
                skips.append(c)
            if level < len(widths) - 1:
                self.down.append(nn.Conv1d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.middle = nn.ModuleList([ResBlock1d(c, c, embed_dim), Attention1d(c, heads), ResBlock1d(c, c, embed_dim)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            w = widths[level]
            for _ in range(blocks + 1):
                self.up.append(nn.ModuleList([ResBlock1d(c + skips.pop(), w, embed_dim), Attention1d(w, heads) if level in attend else nn.Identity()]))
                c = w
            if level > 0:
                self.up.append(nn.Conv1d(c, c, 3, padding=1))
        self.out_norm, self.out = nn.GroupNorm(_groups(c), c), nn.Conv1d(c, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, state, t: torch.Tensor, cond: torch.Tensor | None = None) -> dict:
        x = state[self.field]
        B, _, T = x.shape
        if T % 2 ** (self.levels - 1):
            raise ValueError(f"unet1d: {T} frames do not halve {self.levels - 1} times; use a length divisible by {2 ** (self.levels - 1)} or fewer mults")
        emb = self.time(timestep_embedding(t.to(x.device), self.time_dim).to(x.dtype))
        if self.classes is not None:
            emb = emb + self.classes(cond, B, x.device)
        h = self.inp(x)
        skips = [h]
        for module in self.down:
            if isinstance(module, nn.ModuleList):
                h = module[1](module[0](h, emb))
            else:
                h = module(h)
            skips.append(h)
        h = self.middle[2](self.middle[1](self.middle[0](h, emb)), emb)
        for module in self.up:
            if isinstance(module, nn.ModuleList):
                h = module[1](module[0](torch.cat([h, skips.pop()], dim=1), emb))
            else:
                h = module(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return {self.field: self.out(F.silu(self.out_norm(h)))}


def build_unet1d(space, diffusion, *, num_classes: int = 0, width: int = 128, mults=(1, 2, 2), blocks: int = 2, attention=(2,), heads: int = 4,
                 time_dim: int = 128, embed_dim: int = 512) -> UNet1d:
    """Registered backbone ``unet1d`` for spaces with one continuous ``C×T`` field (log-mel frames in the ``sequence``
    layout, waveforms). Options: ``width`` (channels at the finest level), ``mults`` (a factor per level; ``T`` must
    halve ``len(mults) - 1`` times), ``blocks`` (residual blocks per level), ``attention`` (the levels, by index, with
    self-attention), ``heads``, ``time_dim``, ``embed_dim``."""
    fields = [f for f in space.fields if f.kind == "continuous" and f.diffused]
    if len(fields) != 1:
        raise ValueError(f"unet1d models one continuous C×T field; space {space.name!r} has {[f.name for f in space.fields]}")
    shape = space.template(1)[fields[0].name].shape
    if len(shape) != 3:
        raise ValueError(f"unet1d needs a field of shape (channels, frames); space {space.name!r} gives {tuple(shape[1:])}; "
                         f"for log-mel frames use layout = \"sequence\"")
    return UNet1d(fields[0].name, int(shape[1]), int(width), tuple(mults), int(blocks), tuple(attention), int(heads), int(num_classes), int(time_dim),
                  int(embed_dim))
