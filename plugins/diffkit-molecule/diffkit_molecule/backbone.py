"""``graph-transformer``: a graph transformer over node, edge and global features (after DiGress,
Vignac et al. 2023; written from the paper's description).

Each layer updates three streams:

- edges ``E_ij`` enter attention: per feature channel the score ``s_ij = (q_i ⊙ k_j)/√d_head`` is
  modulated by the edge, ``s'_ij = s_ij ⊙ (1 + W_mul E_ij) + W_add E_ij``; the new edge features are
  ``s'_ij`` (FiLM-modulated by the global features), so edges are updated by the node pair they join;
- nodes attend over the real nodes ``j`` (softmax of ``s'_ij`` per channel, padded nodes masked out),
  aggregate ``v_j`` and are FiLM-modulated by the global features;
- globals ``y`` (time embedding, graph size, class label) take masked mean/max pools of nodes and edges.

Every stream then has a residual connection, LayerNorm and a feed-forward block. Inputs are the
noisy one-hot (or continuous one-hot) atoms and bonds, plus structural features computed from the
current argmax bond graph: node degree, bond-order sum and closed walks ``diag(A^k)``, k = 2..5 (which
count 3- and 4-cycles and more), and the graph size ``n / max_atoms``. With ``components=True`` the
node features add the size of the node's connected component (as a fraction of the graph) and whether it is
the largest, the graph features the number of components and the largest one's share; a walk count cannot
tell a disconnected graph from a connected one, and disconnected molecules are the main failure at few
steps (DiGress reads the same fact from the Laplacian's zero eigenvalues; reachability by repeated
squaring of ``I + A`` gives it exactly, without an eigensolver). All operations act per node
or per pair with symmetric pooling, so the network is permutation equivariant; bond outputs are
symmetrised ``(E + Eᵀ)/2``. Padded nodes never reach a real node's output.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from diffkit.backbones import timestep_embedding


def _pair_mask(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, :, None] * mask[:, None, :]


def component_sizes(adjacency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``size[b, i]``: the number of real nodes in node i's connected component (0 for padding).

    Reachability ``R = (I + A)^(n-1) > 0``, taken by ceil(log2 n) squarings of the boolean matrix, so a
    9-atom graph costs four batched n×n products; ``size_i = Σ_j R_ij m_j``."""
    n = adjacency.shape[-1]
    pair = _pair_mask(mask)
    reach = ((adjacency + torch.eye(n, device=adjacency.device)) * pair > 0).float()
    for _ in range(max(1, math.ceil(math.log2(max(n, 2))))):
        reach = ((reach @ reach) > 0).float()
    return (reach * mask[:, None, :]).sum(-1) * mask


class GraphTransformerLayer(nn.Module):
    def __init__(self, dx: int, de: int, dy: int, heads: int, ff: int = 2, dropout: float = 0.0):
        super().__init__()
        if dx % heads:
            raise ValueError(f"graph-transformer: hidden_x={dx} must be divisible by heads={heads}; change one of them")
        self.heads, self.dh = heads, dx // heads
        self.q, self.k, self.v = nn.Linear(dx, dx), nn.Linear(dx, dx), nn.Linear(dx, dx)
        self.e_mul, self.e_add = nn.Linear(de, dx), nn.Linear(de, dx)
        self.y_e_mul, self.y_e_add = nn.Linear(dy, dx), nn.Linear(dy, dx)
        self.y_x_mul, self.y_x_add = nn.Linear(dy, dx), nn.Linear(dy, dx)
        self.e_out, self.x_out = nn.Linear(dx, de), nn.Linear(dx, dx)
        self.y_in = nn.Linear(dy + 4 * dx + 2 * de, dy)
        self.norm_x1, self.norm_e1, self.norm_y1 = nn.LayerNorm(dx), nn.LayerNorm(de), nn.LayerNorm(dy)
        self.ff_x = nn.Sequential(nn.Linear(dx, ff * dx), nn.SiLU(), nn.Linear(ff * dx, dx))
        self.ff_e = nn.Sequential(nn.Linear(de, ff * de), nn.SiLU(), nn.Linear(ff * de, de))
        self.ff_y = nn.Sequential(nn.Linear(dy, ff * dy), nn.SiLU(), nn.Linear(ff * dy, dy))
        self.norm_x2, self.norm_e2, self.norm_y2 = nn.LayerNorm(dx), nn.LayerNorm(de), nn.LayerNorm(dy)
        self.drop = nn.Dropout(dropout)

    def forward(self, X, E, y, mask):
        B, n, dx = X.shape
        xm = mask[:, :, None]
        em = _pair_mask(mask)[..., None]
        q, k, v = self.q(X) * xm, self.k(X) * xm, self.v(X) * xm
        scores = q[:, :, None, :] * k[:, None, :, :] / math.sqrt(self.dh)          # B×n×n×dx
        scores = scores * (1 + self.e_mul(E)) + self.e_add(E)
        # new edges: the modulated scores, FiLM by the globals
        e_new = self.y_e_add(y)[:, None, None] + (1 + self.y_e_mul(y)[:, None, None]) * scores
        e_new = self.e_out(e_new) * em
        # attention over real nodes j, one softmax per channel (heads only set the score scale)
        attn = torch.softmax(scores.masked_fill(em == 0, -1e9), dim=2) * em
        agg = (attn * v[:, None, :, :]).sum(2)                                       # B×n×dx
        x_new = self.y_x_add(y)[:, None] + (1 + self.y_x_mul(y)[:, None]) * agg
        x_new = self.x_out(x_new) * xm
        # globals from pooled nodes and edges
        count = mask.sum(1, keepdim=True).clamp_min(1.0)
        x_mean = (X * xm).sum(1) / count
        x_max = X.masked_fill(xm == 0, -1e4).max(1).values * (count > 0)
        e_mean = (E * em).sum((1, 2)) / (count * count)
        n_nodes = count[:, :, None]
        v_mean = (v * xm).sum(1) / count
        q_mean = (q * xm).sum(1) / count
        y_new = self.y_in(torch.cat([y, x_mean, x_max, v_mean, q_mean, e_mean, (E * em).amax((1, 2)) * (n_nodes[:, 0] > 0)], dim=-1))
        X = self.norm_x1(X + self.drop(x_new)) * xm
        E = self.norm_e1(E + self.drop(e_new)) * em
        y = self.norm_y1(y + self.drop(y_new))
        X = self.norm_x2(X + self.drop(self.ff_x(X))) * xm
        E = self.norm_e2(E + self.drop(self.ff_e(E))) * em
        y = self.norm_y2(y + self.drop(self.ff_y(y)))
        return X, E, y


class GraphTransformer(nn.Module):
    """``forward(state, t, cond=None) -> {"atoms": B×n×A, "bonds": B×n×n×K}`` (logits, or the field's
    shape for Gaussian fields); see the module docstring for the architecture."""

    equivariance = "permutation"
    N_STRUCT = 6  # degree, bond-order sum, diag(A^2..A^5)
    N_GRAPH = 4  # edge count, mean degree, 3- and 4-closed-walk totals
    N_COMPONENT = 2  # per node: own component's share, in the largest; per graph: component count, largest share

    def __init__(self, atom_in: int, bond_in: int, atom_out: int, bond_out: int, max_atoms: int, *, hidden_x: int = 128, hidden_e: int = 32,
                 hidden_y: int = 64, heads: int = 4, layers: int = 4, ff: int = 2, dropout: float = 0.0, num_classes: int = 0, structural: bool = True, components: bool = False):
        super().__init__()
        if components and not structural:
            raise ValueError("graph-transformer: components=True adds to the structural features; set structural=True as well")
        self.atom_in, self.bond_in, self.atom_out, self.bond_out = atom_in, bond_in, atom_out, bond_out
        self.max_atoms, self.structural, self.num_classes = int(max_atoms), bool(structural), int(num_classes)
        self.components = bool(components)
        n_struct = (self.N_STRUCT + (self.N_COMPONENT if self.components else 0)) if self.structural else 0
        n_graph = (self.N_GRAPH + (self.N_COMPONENT if self.components else 0)) if self.structural else 0
        self.x_in = nn.Sequential(nn.Linear(atom_in + n_struct, hidden_x), nn.SiLU(), nn.Linear(hidden_x, hidden_x))
        self.e_in = nn.Sequential(nn.Linear(bond_in, hidden_e), nn.SiLU(), nn.Linear(hidden_e, hidden_e))
        self.y_in = nn.Sequential(nn.Linear(hidden_y + 1 + n_graph, hidden_y), nn.SiLU(), nn.Linear(hidden_y, hidden_y))
        self.hidden_y = hidden_y
        self.label = nn.Embedding(self.num_classes + 1, hidden_y) if self.num_classes else None
        self.layers = nn.ModuleList(GraphTransformerLayer(hidden_x, hidden_e, hidden_y, heads, ff, dropout) for _ in range(layers))
        self.x_head = nn.Sequential(nn.Linear(hidden_x, hidden_x), nn.SiLU(), nn.Linear(hidden_x, atom_out))
        self.e_head = nn.Sequential(nn.Linear(hidden_e, hidden_e), nn.SiLU(), nn.Linear(hidden_e, bond_out))

    def structure(self, bonds: torch.Tensor, mask: torch.Tensor):
        """Node features (degree, bond-order sum, closed walks diag(A^k)/k-scaled) and graph features
        (edge count, mean degree, 3- and 4-closed-walk totals) of the current argmax bond graph."""
        K = min(self.bond_out, 4)
        order = bonds[..., :K].argmax(-1).float() * _pair_mask(mask)                  # B×n×n bond orders
        order = order * (1 - torch.eye(order.shape[1], device=order.device))
        A = (order > 0).float()
        deg = A.sum(-1)
        val = order.sum(-1)
        walks, P = [], A
        for k in range(2, 6):
            P = P @ A
            walks.append(torch.diagonal(P, dim1=1, dim2=2) / (2.0 ** k))
        count = mask.sum(1).clamp_min(1.0)
        node = [deg / 4, val / 4, *walks]
        graph = [A.sum((1, 2)) / (2 * self.max_atoms), deg.sum(1) / count / 4, walks[1].sum(1) / count, walks[2].sum(1) / count]
        if self.components:
            size = component_sizes(A, mask)
            largest = size.max(1).values
            node += [size / count[:, None], (size == largest[:, None]).float()]
            n_comp = (mask / size.clamp_min(1.0)).sum(1)
            graph += [(n_comp - 1) / 4, largest / count]
        return torch.stack(node, dim=-1) * mask[..., None], torch.stack(graph, dim=-1)

    def forward(self, state, t, cond=None):
        atoms, bonds = state["atoms"].float(), state["bonds"].float()
        B, n = atoms.shape[:2]
        mask = state.get("mask")
        mask = torch.ones(B, n, device=atoms.device) if mask is None else mask.float()
        xm, pm = mask[..., None], _pair_mask(mask)[..., None]
        atoms, bonds = atoms * xm, bonds * pm
        t = torch.as_tensor(t, device=atoms.device).float().reshape(-1).expand(B)
        y = [timestep_embedding(t, self.hidden_y), (mask.sum(1, keepdim=True) / self.max_atoms)]
        x_feats = [atoms]
        if self.structural:
            node, graph = self.structure(bonds, mask)
            x_feats.append(node)
            y.append(graph)
        X = self.x_in(torch.cat(x_feats, -1)) * xm
        E = self.e_in(bonds)
        E = 0.5 * (E + E.transpose(1, 2)) * pm
        y = self.y_in(torch.cat(y, -1))
        if self.label is not None and cond is not None:
            idx = torch.where(cond < 0, torch.full_like(cond, self.num_classes), cond)
            y = y + self.label(idx.long())
        for layer in self.layers:
            X, E, y = layer(X, E, y, mask)
        out_x = self.x_head(X) * xm
        out_e = self.e_head(E)
        out_e = 0.5 * (out_e + out_e.transpose(1, 2)) * pm
        return {"atoms": out_x, "bonds": out_e}


def _in_dim(diffusion, space, name: str) -> int:
    proc = diffusion.processes[name]
    return int(getattr(proc, "num_states", None) or space.field(name).num_classes)


def build_graph_transformer(space, diffusion, *, num_classes: int = 0, hidden_x: int = 128, hidden_e: int = 32, hidden_y: int = 64, heads: int = 4,
                            layers: int = 4, ff: int = 2, dropout: float = 0.0, structural: bool = True, components: bool = False) -> GraphTransformer:
    """Build the graph transformer for a molecule space: input widths are the processes' ``num_states``
    (K, or K+1 for the absorbing process; the field's classes for Gaussian fields), outputs the
    fields' ``num_classes``."""
    names = {f.name for f in space.fields}
    if not {"atoms", "bonds"} <= names:
        raise ValueError(f"graph-transformer needs a space with 'atoms' and 'bonds' fields (a molecular graph); space {space.name!r} has {sorted(names)}")
    if "pos" in diffusion.processes:
        raise ValueError("graph-transformer does not model 3-D positions; build the space with positions=False")
    return GraphTransformer(
        _in_dim(diffusion, space, "atoms"), _in_dim(diffusion, space, "bonds"), space.field("atoms").num_classes, space.field("bonds").num_classes,
        getattr(space, "max_atoms", 32), hidden_x=hidden_x, hidden_e=hidden_e, hidden_y=hidden_y, heads=heads, layers=layers, ff=ff, dropout=dropout,
        num_classes=num_classes, structural=structural, components=components,
    )
