"""A UNet backbone for image fields (registered as ``unet``).

Architecture (in the manner of DDPM / ADM, written for small images):

* ``h_0 = Conv3x3(x)`` with ``base_channels`` channels;
* conditioning vector ``e = MLP(sinusoid(t)) (+ E[class])``, where ``sinusoid`` is
  :func:`diffkit.backbones.timestep_embedding` and ``E`` is :class:`diffkit.backbones.ClassEmbedding`
  (the null label ``-1`` has its own learned row, for classifier-free guidance);
* residual blocks ``h + Conv(SiLU(GN(Conv(SiLU(GN(h))) + W e)))`` (the second convolution starts at
  zero, so every block starts as the identity), ``blocks_per_level`` of them per resolution level,
  the level ``i`` having ``base_channels * channel_mult[i]`` channels;
* self-attention ``h + W_o softmax(Q K^T / sqrt(d)) V`` over the ``H*W`` positions (after GroupNorm)
  at every resolution listed in ``attention_resolutions`` (side lengths of the feature map);
* a stride-2 convolution between levels going down, nearest-neighbour upsampling + Conv3x3 going
  up, skip connections concatenated on the way up, and a middle ``res - attention - res`` stage;
* output ``Conv3x3(SiLU(GN(h)))``, initialised at zero, with the input's channels.

GroupNorm normalises each example on its own, so outputs never depend on other batch members.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from diffkit.backbones import ClassEmbedding, timestep_embedding
from diffkit.state import State


class UNetConfigError(ValueError):
    """The UNet options do not fit the space. The message names the option and the fix."""


def group_count(channels: int, requested: int = 32) -> int:
    """The largest divisor of ``channels`` that is at most ``requested`` (GroupNorm needs a divisor)."""
    for g in range(min(requested, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(group_count(channels, groups), channels)


def zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """``y = skip(h) + Conv2(Dropout(SiLU(GN(Conv1(SiLU(GN(h))) + W e))))`` with ``Conv2`` zero-initialised."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.norm1 = norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.silu(self.norm1(h)))
        y = y + rearrange(self.emb(e), "b c -> b c 1 1")
        y = self.conv2(self.dropout(F.silu(self.norm2(y))))
        return self.skip(h) + y


class SelfAttention(nn.Module):
    """Multi-head self-attention over spatial positions: ``h + W_o softmax(Q K^T / sqrt(d)) V``."""

    def __init__(self, channels: int, heads: int = 4, groups: int = 32):
        super().__init__()
        if channels % heads:
            raise UNetConfigError(f"unet: {channels} channels do not split into {heads} attention heads; choose attention_heads dividing every level's channels")
        self.heads = heads
        self.norm = norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, h: torch.Tensor, e: torch.Tensor | None = None) -> torch.Tensor:
        H, W = h.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(h)), "b (three n d) x y -> three b n (x y) d", three=3, n=self.heads)
        y = F.scaled_dot_product_attention(q, k, v)
        return h + self.out(rearrange(y, "b n (x y) d -> b (n d) x y", x=H, y=W))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, h, e=None):
        return self.conv(h)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h, e=None):
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """UNet ``forward(state, t, cond=None) -> {field: output}`` for a C×H×W field (see the module docstring)."""

    def __init__(self, field: str, shape: Sequence[int], *, num_classes: int = 0, base_channels: int = 64, channel_mult: Sequence[int] = (1, 2, 2),
                 blocks_per_level: int = 2, attention_resolutions: Sequence[int] = (4,), attention_heads: int = 4, dropout: float = 0.0,
                 groups: int = 32, time_dim: int | None = None):
        super().__init__()
        if len(shape) != 3:
            raise UNetConfigError(f"unet: the field {field!r} has shape {tuple(shape)}; the UNet needs images C×H×W")
        C, H, W = (int(s) for s in shape)
        levels = len(channel_mult)
        if levels < 1 or blocks_per_level < 1 or base_channels < 1:
            raise UNetConfigError("unet: channel_mult needs at least one level and blocks_per_level, base_channels must be >= 1; fix the recipe's [model] options")
        factor = 2 ** (levels - 1)
        if H % factor or W % factor:
            raise UNetConfigError(f"unet: a {H}×{W} image cannot be halved {levels - 1} times ({len(channel_mult)} levels in channel_mult); use fewer levels or a size divisible by {factor}")
        self.field, self.shape, self.num_classes = field, (C, H, W), int(num_classes)
        self.base_channels, self.time_dim = int(base_channels), int(time_dim or base_channels)
        emb_dim = 4 * self.base_channels
        self.time = nn.Sequential(nn.Linear(self.time_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.classes = ClassEmbedding(self.num_classes, emb_dim) if self.num_classes else None
        attn_at = {int(r) for r in attention_resolutions}

        def block(ci, co):
            return ResBlock(ci, co, emb_dim, groups, dropout)

        self.inp = nn.Conv2d(C, self.base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch, res = [self.base_channels], self.base_channels, H
        for i, mult in enumerate(channel_mult):
            co = self.base_channels * int(mult)
            for _ in range(blocks_per_level):
                layers = [block(ch, co)] + ([SelfAttention(co, attention_heads, groups)] if res in attn_at else [])
                self.down.append(nn.ModuleList(layers))
                ch = co
                skips.append(ch)
            if i < levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList([block(ch, ch), SelfAttention(ch, attention_heads, groups), block(ch, ch)])
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mult))):
            co = self.base_channels * int(mult)
            for j in range(blocks_per_level + 1):
                layers = [block(ch + skips.pop(), co)] + ([SelfAttention(co, attention_heads, groups)] if res in attn_at else [])
                ch = co
                if i > 0 and j == blocks_per_level:
                    layers.append(Upsample(ch))
                    res *= 2
                self.up.append(nn.ModuleList(layers))
        self.out = nn.Sequential(norm(ch, groups), nn.SiLU(), zero_(nn.Conv2d(ch, C, 3, padding=1)))

    def embed(self, t: torch.Tensor, cond: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        e = self.time(timestep_embedding(t.to(device), self.time_dim))
        if self.classes is not None:
            e = e + self.classes(None if cond is None else cond.to(device), batch, device)
        return e

    def forward(self, state: State, t: torch.Tensor, cond: torch.Tensor | None = None) -> dict:
        x = state[self.field]
        if tuple(x.shape[1:]) != self.shape:
            raise UNetConfigError(f"unet: built for {self.field!r} of shape {self.shape}, got {tuple(x.shape[1:])}; rebuild the backbone for this space")
        e = self.embed(t, cond, x.shape[0], x.device)
        h = self.inp(x)
        hs = [h]
        for layers in self.down:
            for layer in layers:
                h = layer(h, e)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, e)
        for layers in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for layer in layers:
                h = layer(h, e)
        return {self.field: self.out(h)}


def build_unet(space, diffusion=None, *, num_classes: int = 0, base_channels: int = 64, channel_mult: Sequence[int] = (1, 2, 2), blocks_per_level: int = 2,
               attention_resolutions: Sequence[int] = (4,), attention_heads: int = 4, dropout: float = 0.0, groups: int = 32, time_dim: int | None = None) -> UNet:
    """Registered backbone ``unet`` for a space with one continuous C×H×W field (``image``, ``continuous-cube``).

    Recipe options: ``base_channels``, ``channel_mult`` (one multiplier per resolution level; the image
    is halved between levels), ``blocks_per_level``, ``attention_resolutions`` (feature-map side
    lengths at which self-attention runs), ``attention_heads``, ``dropout``, ``groups`` (GroupNorm),
    ``time_dim`` (sinusoid width, default ``base_channels``).
    """
    fields = [f for f in space.fields if f.kind == "continuous"]
    if len(fields) != 1 or len(space.fields) != 1:
        raise UNetConfigError(f"unet: models one continuous image field; space {space.name!r} has fields {[f.name for f in space.fields]}; use another backbone")
    field = fields[0].name
    shape = tuple(space.template(1)[field].shape[1:])
    return UNet(field, shape, num_classes=num_classes, base_channels=base_channels, channel_mult=tuple(channel_mult), blocks_per_level=blocks_per_level,
                attention_resolutions=tuple(attention_resolutions), attention_heads=attention_heads, dropout=dropout, groups=groups, time_dim=time_dim)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["UNet", "UNetConfigError", "build_unet", "group_count", "parameter_count"]
