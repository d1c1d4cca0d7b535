"""``egnn``: an E(3)-equivariant graph network for molecules in space (after Satorras et al. 2021, EGNN,
as used for 3-D molecule diffusion by Hoogeboom et al. 2022; written from the papers' equations).

Each layer ``l`` takes node features ``h_i``, positions ``x_i`` and pair features ``e_ij`` and computes,
over the real atoms ``j != i`` (``N_i`` of them):

    m_ij   = phi_m(h_i, h_j, rbf(|x_i - x_j|), e_ij)
    h_i   <- h_i + phi_h(h_i, (1/N_i) sum_j m_ij)
    x_i   <- x_i + (1/N_i) sum_j (x_i - x_j) / (|x_i - x_j| + 1) * phi_x(m_ij)
    e_ij  <- e_ij + (phi_e(m_ij) + phi_e(m_ji)) / 2

Every learned function reads only invariants (features, distances), and positions move along relative
vectors, so rotating or reflecting the input rotates or reflects the position output, translating it
leaves the output unchanged (outputs are differences), and permuting the atoms permutes the outputs.

Inputs: one-hot categorical node fields (atom types, formal charges), bond one-hots plus the
topological distance of every pair in the current argmax bond graph (1, 2, 3 or more bonds apart), the
time embedding. Outputs, per diffused field: positions ``x_L - x_0`` projected on the zero-centre-of-mass
subspace (read as eps or x0 per the recipe's parameterisation), logits for categorical node fields from
``h_L``, symmetric bond logits from ``e_L`` and the final distances.
"""
from __future__ import annotations

import torch
from torch import nn

from diffkit.backbones import timestep_embedding


def _mlp(din: int, dh: int, dout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(din, dh), nn.SiLU(), nn.Linear(dh, dout))


def gaussian_rbf(d: torch.Tensor, count: int, cutoff: float) -> torch.Tensor:
    """``exp(-((d - mu_k) / w)^2)`` for ``count`` centres ``mu_k`` evenly spaced on ``[0, cutoff]`` (width ``w`` their spacing)."""
    centres = torch.linspace(0.0, cutoff, count, device=d.device, dtype=d.dtype)
    width = cutoff / max(count - 1, 1)
    return torch.exp(-((d[..., None] - centres) / width) ** 2)


def topological_distance(order: torch.Tensor, mask: torch.Tensor, hops: int = 3) -> torch.Tensor:
    """One-hot of the number of bonds between atoms (1..hops, and 'further or unconnected') from bond orders ``order`` (B×n×n)."""
    A = (order > 0).to(mask.dtype)
    reach = torch.eye(A.shape[1], device=A.device, dtype=A.dtype).expand_as(A)
    seen = reach
    feats = []
    for _ in range(hops):
        reach = ((reach @ A) > 0).to(A.dtype)
        new = reach * (1 - seen)
        feats.append(new)
        seen = ((seen + new) > 0).to(A.dtype)
    feats.append(1 - seen)
    return torch.stack(feats, -1)


class EGNNLayer(nn.Module):
    """One layer (equations in the module docstring). ``phi_m`` is a two-layer MLP whose first layer, linear
    in ``[h_i, h_j, rbf, e_ij]``, is computed as ``A h_i + B h_j + C [rbf, e_ij]`` (the node terms once per
    node, not once per pair); ``phi_x`` and ``phi_e`` are linear maps of the message ``m_ij``."""

    def __init__(self, hidden: int, edge: int, rbf: int):
        super().__init__()
        self.msg_i, self.msg_j = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden, bias=False)
        self.msg_pair = nn.Linear(rbf + edge, hidden, bias=False)
        self.msg_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.node = _mlp(2 * hidden, hidden, hidden)
        self.coord = nn.Linear(hidden, 1)
        nn.init.zeros_(self.coord.weight)
        nn.init.zeros_(self.coord.bias)
        self.edge = nn.Linear(hidden, edge)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h, x, e, pair, count, rbf_fn):
        diff = x[:, :, None, :] - x[:, None, :, :]                         # B×n×n×3, x_i - x_j
        dist = diff.pow(2).sum(-1).clamp_min(1e-12).sqrt()
        pre = self.msg_i(h)[:, :, None, :] + self.msg_j(h)[:, None, :, :] + self.msg_pair(torch.cat([rbf_fn(dist), e], -1))
        m = self.msg_out(pre) * pair[..., None]
        h = self.norm(h + self.node(torch.cat([h, m.sum(2) / count], -1)))
        x = x + (diff / (dist[..., None] + 1.0) * self.coord(m) * pair[..., None]).sum(2) / count
        u = self.edge(m)
        e = e + 0.5 * (u + u.transpose(1, 2))
        return h, x, e


class EGNN(nn.Module):
    """``forward(state, t, cond=None) -> {field: output}`` for the diffused fields of a 3-D molecule space
    (see the module docstring)."""

    # declared for the conformance kit (which checks permutation); E(3) equivariance is tested in tests/test_egnn3d.py
    equivariance = "permutation"

    def __init__(self, node_fields: dict, bond_in: int, outputs: dict, *, hidden: int = 128, edge: int = 32, layers: int = 6, rbf: int = 16,
                 cutoff: float = 8.0, hops: int = 3):
        super().__init__()
        self.node_fields, self.outputs = dict(node_fields), dict(outputs)
        self.hidden, self.rbf, self.cutoff, self.hops = int(hidden), int(rbf), float(cutoff), int(hops)
        self.h_in = _mlp(sum(self.node_fields.values()) + hidden, hidden, hidden)
        self.e_in = _mlp(bond_in + hops + 1, edge, edge)
        self.layers = nn.ModuleList(EGNNLayer(hidden, edge, rbf) for _ in range(layers))
        self.heads = nn.ModuleDict({name: _mlp(hidden, hidden, k) for name, k in self.outputs.items() if name not in ("bonds", "pos")})
        if "bonds" in self.outputs:
            self.bond_head = _mlp(edge + rbf, edge, self.outputs["bonds"])

    def _rbf(self, d):
        return gaussian_rbf(d, self.rbf, self.cutoff)

    def forward(self, state, t, cond=None):
        pos = state["pos"]
        B, n = pos.shape[:2]
        mask = state.get("mask")
        mask = torch.ones(B, n, device=pos.device, dtype=pos.dtype) if mask is None else mask.to(pos.dtype)
        pair = mask[:, :, None] * mask[:, None, :] * (1 - torch.eye(n, device=pos.device, dtype=pos.dtype))
        count = pair.sum(2, keepdim=True).clamp_min(1.0)
        t = torch.as_tensor(t, device=pos.device).reshape(-1).expand(B)
        temb = timestep_embedding(t, self.hidden).to(pos.dtype)
        nodes = [state[name].to(pos.dtype) * mask[..., None] for name in self.node_fields]
        h = self.h_in(torch.cat(nodes + [temb[:, None, :].expand(B, n, -1)], -1)) * mask[..., None]
        bonds = state["bonds"].to(pos.dtype)
        idx = bonds.argmax(-1)
        order = torch.where((idx >= 1) & (idx <= 3), idx, torch.zeros_like(idx))  # an absorbing 'masked' state counts as no bond
        topo = topological_distance(order * pair, mask, self.hops).to(pos.dtype)
        e = self.e_in(torch.cat([bonds, topo], -1))
        e = 0.5 * (e + e.transpose(1, 2)) * pair[..., None]
        x0 = pos * mask[..., None]
        x = x0
        for layer in self.layers:
            h, x, e = layer(h, x, e, pair, count, self._rbf)
            h = h * mask[..., None]
        out = {}
        if "pos" in self.outputs:
            delta = (x - x0) * mask[..., None]
            centre = delta.sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp_min(1.0)[..., None]
            out["pos"] = (delta - centre) * mask[..., None]
        for name, head in self.heads.items():
            out[name] = head(h) * mask[..., None]
        if "bonds" in self.outputs:
            dist = (x[:, :, None, :] - x[:, None, :, :]).pow(2).sum(-1).clamp_min(1e-12).sqrt()
            logits = self.bond_head(torch.cat([e, self._rbf(dist)], -1))
            out["bonds"] = 0.5 * (logits + logits.transpose(1, 2)) * pair[..., None]
        return out


def build_egnn(space, diffusion, *, num_classes: int = 0, hidden: int = 128, edge: int = 32, layers: int = 6, rbf: int = 16, cutoff: float = 8.0,
               hops: int = 3) -> EGNN:
    """The EGNN for a 3-D molecule space (``molecule-3d``, ``molecule-conformer``): input widths are the
    processes' ``num_states`` for diffused categorical fields and the classes of conditioning ones; one
    output per diffused field."""
    names = {f.name: f for f in space.fields}
    if not {"atoms", "bonds", "pos"} <= set(names):
        raise ValueError(f"egnn needs a space with 'atoms', 'bonds' and 'pos' fields (a 3-D molecule space); space {space.name!r} has {sorted(names)}")
    if num_classes:
        raise ValueError("egnn is not class-conditional; set [model] num_classes = 0")
    if "pos" not in diffusion.processes:
        raise ValueError("egnn generates 3-D positions; give [diffusion.pos] a process (zero-com-gaussian)")

    def width(f):
        proc = diffusion.processes.get(f.name)
        return int(getattr(proc, "num_states", None) or f.num_classes) if proc is not None else int(f.num_classes)

    node_fields = {f.name: width(f) for f in space.fields if f.layout == "node" and f.kind == "categorical"}
    outputs = {f.name: (3 if f.name == "pos" else int(f.num_classes)) for f in space.fields if f.name in diffusion.processes}
    return EGNN(node_fields, width(names["bonds"]), outputs, hidden=hidden, edge=edge, layers=layers, rbf=rbf, cutoff=cutoff, hops=hops)
