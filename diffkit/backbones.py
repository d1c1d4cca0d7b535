"""Core backbones: a residual MLP for vectors and the analytic oracle for Gaussian mixtures."""
from __future__ import annotations

import math

import torch
from torch import nn

from diffkit.state import State


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(w_k s), sin(w_k s)]`` with ``w_k = max_period^(-k/(dim/2))`` and
    ``s = 1000 t`` (so that times in [0, 1] span the frequencies as DDPM's integer steps do)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class ClassEmbedding(nn.Module):
    """Embeds class labels ``0..num_classes-1`` and the null label ``-1`` (stored last)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.table = nn.Embedding(self.num_classes + 1, dim)

    def forward(self, cond: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        if cond is None:
            cond = torch.full((batch,), -1, dtype=torch.long, device=device)
        idx = torch.where(cond < 0, torch.full_like(cond, self.num_classes), cond)
        return self.table(idx)


class MLPBackbone(nn.Module):
    """A residual MLP on one flattened continuous field: ``h = W_in x + emb(t) (+ emb(class))``, then
    ``depth`` blocks ``h <- h + W2 SiLU(W1 LayerNorm(h))``, then ``W_out``."""

    def __init__(self, field: str, dim: int, hidden: int = 256, depth: int = 4, num_classes: int = 0, time_dim: int = 64):
        super().__init__()
        self.field, self.dim, self.time_dim = field, int(dim), int(time_dim)
        self.inp = nn.Linear(self.dim, hidden)
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.classes = ClassEmbedding(num_classes, hidden) if num_classes else None
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden * 2), nn.SiLU(), nn.Linear(hidden * 2, hidden)) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, self.dim))

    def forward(self, state: State, t: torch.Tensor, cond: torch.Tensor | None = None) -> dict:
        x = state[self.field]
        h = self.inp(x.reshape(x.shape[0], -1)) + self.time(timestep_embedding(t, self.time_dim))
        if self.classes is not None:
            h = h + self.classes(cond, x.shape[0], x.device)
        for block in self.blocks:
            h = h + block(h)
        return {self.field: self.out(h).reshape(x.shape)}


def build_mlp(space, diffusion, *, num_classes: int = 0, hidden: int = 256, depth: int = 4, time_dim: int = 64) -> MLPBackbone:
    """Registered backbone ``mlp``: for spaces with one continuous field (vectors, small arrays)."""
    fields = [f for f in space.fields if f.kind == "continuous"]
    if len(fields) != 1 or len(space.fields) != 1:
        raise ValueError(f"the mlp backbone models one continuous field; space {space.name!r} has {[f.name for f in space.fields]}")
    shape = space.template(1)[fields[0].name].shape[1:]
    return MLPBackbone(fields[0].name, int(torch.tensor(shape).prod()), hidden, depth, num_classes, time_dim)


def build_analytic_gmm(space, diffusion, *, mixture: str = "ring8", parameterization: str = "eps", num_classes: int = 0):
    """Registered backbone ``analytic-gmm``: the exact prediction of a built-in mixture."""
    from diffkit.oracle import AnalyticBackbone, mixture as get_mixture

    field = space.fields[0].name
    return AnalyticBackbone(get_mixture(mixture), diffusion.processes[field], parameterization, field)
