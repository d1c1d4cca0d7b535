"""Molecular graphs as tensors: atom types, pairwise bond orders, optional 3-D positions.

The core knows no chemistry: an atom is an index into ``atom_types`` and a bond an index into
``bond_types`` (``none, single, double, triple``). The molecule plugin turns these into RDKit molecules.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from diffkit.spaces.base import FieldSpec, Space, SpaceError, as_float_tensor, check_items
from diffkit.state import State

BOND_TYPES = ("none", "single", "double", "triple")



def _whole_numbers(values, field: str, what: str) -> torch.Tensor:
    """``values`` as a long tensor, refusing what a cast would silently change: non-integral values
    (1.7 would become 1), NaN and infinities."""
    try:
        t = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise SpaceError(f"MolecularGraph: {field} must be {what} (whole numbers), got values torch cannot read ({exc})") from None
    if t.dtype.is_floating_point or t.is_complex():
        if t.is_complex() or not bool(torch.isfinite(t).all()):
            raise SpaceError(f"MolecularGraph: {field} holds NaN, infinite or complex values; they must be {what} (whole numbers)")
        bad = t[t != t.round()]
        if bad.numel():
            raise SpaceError(f"MolecularGraph: {field} must be {what} (whole numbers), got {float(bad.flatten()[0]):g}; round them or fix the data")
    return t.long()

class MolecularGraph(Space):
    """Graphs of ``n <= max_atoms`` atoms of ``len(atom_types)`` types with a bond order for every pair.

    An element is a mapping ``{"atoms": n atom indices (or symbols), "bonds": n×n symmetric bond-order
    indices with a zero diagonal, "pos": n×3 positions (only when positions=True)}``.

    Encoded (padded to the largest graph of the batch) as ``State(atoms=B×n×A one-hot,
    bonds=B×n×n×4 one-hot, mask=B×n, pos=B×n×3 centred on the centre of mass of real atoms)``.
    Decoding takes the argmax of atoms and of the symmetrised bond scores, and drops padding.
    """

    name = "molecular-graph"

    def __init__(self, atom_types: Sequence[str], max_atoms: int, positions: bool = False, bond_types: Sequence[str] = BOND_TYPES):
        self.atom_types = tuple(str(a) for a in atom_types)
        if not self.atom_types:
            raise SpaceError("MolecularGraph: atom_types is empty; give the atom vocabulary, e.g. ['C', 'N', 'O', 'F']")
        if len(set(self.atom_types)) != len(self.atom_types):
            raise SpaceError(f"MolecularGraph: atom_types has duplicates: {self.atom_types}")
        self.bond_types = tuple(bond_types)
        if self.bond_types[0] != "none":
            raise SpaceError("MolecularGraph: the first bond type must be 'none' (no bond)")
        self.max_atoms = int(max_atoms)
        self.positions = bool(positions)
        fields = [
            FieldSpec("atoms", kind="categorical", layout="node", num_classes=len(self.atom_types)),
            FieldSpec("bonds", kind="categorical", layout="pair", num_classes=len(self.bond_types), symmetric=True),
        ]
        if self.positions:
            fields.append(FieldSpec("pos", kind="continuous", layout="node", zero_mean=True))
        self.fields = tuple(fields)

    # --------------------------------------------------------------------------------------
    def validate(self, item: Any) -> dict:
        if not isinstance(item, dict) or "atoms" not in item or "bonds" not in item:
            raise SpaceError("MolecularGraph: an element is a dict with 'atoms' (n) and 'bonds' (n×n); got " + type(item).__name__)
        atoms = item["atoms"]
        if len(atoms) and isinstance(atoms[0], str):
            unknown = sorted({a for a in atoms if a not in self.atom_types})
            if unknown:
                raise SpaceError(f"MolecularGraph: atom type(s) {unknown} are not in the vocabulary {list(self.atom_types)}; extend atom_types or filter these molecules")
            atoms = [self.atom_types.index(a) for a in atoms]
        atoms = _whole_numbers(atoms, "atoms", "atom type indices").reshape(-1)
        n = atoms.numel()
        if n < 1:
            raise SpaceError("MolecularGraph: a graph needs at least one atom")
        if n > self.max_atoms:
            raise SpaceError(f"MolecularGraph: graph has {n} atoms, more than max_atoms={self.max_atoms}; raise max_atoms or drop large graphs")
        if atoms.min() < 0 or atoms.max() >= len(self.atom_types):
            raise SpaceError(f"MolecularGraph: atom indices must lie in 0..{len(self.atom_types) - 1}, got {int(atoms.min())}..{int(atoms.max())}")
        bonds = _whole_numbers(item["bonds"], "bonds", "bond orders")
        if tuple(bonds.shape) != (n, n):
            raise SpaceError(f"MolecularGraph: bonds must be {n}×{n} for {n} atoms, got {tuple(bonds.shape)}")
        if bonds.min() < 0 or bonds.max() >= len(self.bond_types):
            raise SpaceError(f"MolecularGraph: bond orders must lie in 0..{len(self.bond_types) - 1} ({', '.join(self.bond_types)}), got {int(bonds.min())}..{int(bonds.max())}")
        if not torch.equal(bonds, bonds.T):
            raise SpaceError("MolecularGraph: bonds must be symmetric (bonds[i, j] == bonds[j, i]); symmetrise the adjacency")
        if bonds.diagonal().any():
            raise SpaceError("MolecularGraph: an atom cannot bond to itself; set the diagonal of bonds to 0")
        out = {"atoms": atoms, "bonds": bonds}
        if self.positions:
            if "pos" not in item:
                raise SpaceError("MolecularGraph: this space models 3-D positions; give 'pos' (n×3) or build it with positions=False")
            pos = as_float_tensor(item["pos"], "MolecularGraph pos")
            if tuple(pos.shape) != (n, 3):
                raise SpaceError(f"MolecularGraph: pos must be {n}×3, got {tuple(pos.shape)}")
            out["pos"] = pos.float()
        return out

    def collate(self, items: Sequence[Any], *, train: bool = False, generator=None) -> State:
        items = [self.validate(i) for i in check_items(items, "MolecularGraph")]
        n = max(i["atoms"].numel() for i in items)
        B, A, K = len(items), len(self.atom_types), len(self.bond_types)
        atoms = torch.zeros(B, n, A)
        bonds = torch.zeros(B, n, n, K)
        mask = torch.zeros(B, n)
        pos = torch.zeros(B, n, 3)
        for b, item in enumerate(items):
            m = item["atoms"].numel()
            atoms[b, :m] = F.one_hot(item["atoms"], A).float()
            bonds[b, :m, :m] = F.one_hot(item["bonds"], K).float()
            mask[b, :m] = 1.0
            if self.positions:
                p = item["pos"]
                pos[b, :m] = p - p.mean(0, keepdim=True)
        # padding pairs and the diagonal hold the "none" bond so that every row is one-hot
        pad = bonds.sum(-1) == 0
        bonds[..., 0] = torch.where(pad, torch.ones_like(bonds[..., 0]), bonds[..., 0])
        state = State(atoms=atoms, bonds=bonds, mask=mask)
        if self.positions:
            state["pos"] = pos
        return state

    def decode(self, state: State) -> list[dict]:
        atoms = state["atoms"].detach().float().cpu()
        bonds = state["bonds"].detach().float().cpu()
        bonds = (bonds + bonds.transpose(1, 2)) / 2  # symmetrise scores before the argmax
        mask = state.get("mask")
        mask = torch.ones(atoms.shape[:2]) if mask is None else mask.detach().cpu()
        out = []
        for b in range(atoms.shape[0]):
            keep = mask[b].bool()
            a = atoms[b][keep].argmax(-1)
            e = bonds[b][keep][:, keep].argmax(-1)
            e.fill_diagonal_(0)
            item = {"atoms": a, "bonds": e}
            if self.positions and "pos" in state:
                item["pos"] = state["pos"][b].detach().float().cpu()[keep]
            out.append(item)
        return out

    def write(self, items: list, out: Path, **kwargs) -> list[Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "graphs.json"
        rows = []
        for g in items:
            row = {"atoms": [self.atom_types[i] for i in g["atoms"].tolist()], "bonds": g["bonds"].tolist()}
            if "pos" in g:
                row["pos"] = g["pos"].tolist()
            rows.append(row)
        path.write_text(json.dumps(rows))
        return [path]

    def fit(self, items: Sequence[Any]) -> dict:
        """Size histogram and atom/bond class frequencies (bonds over unordered pairs of real atoms)."""
        sizes = torch.zeros(self.max_atoms + 1)
        atom_counts = torch.zeros(len(self.atom_types))
        bond_counts = torch.zeros(len(self.bond_types))
        for item in items:
            g = self.validate(item)
            n = g["atoms"].numel()
            sizes[n] += 1
            atom_counts += torch.bincount(g["atoms"], minlength=len(self.atom_types)).float()
            iu = torch.triu_indices(n, n, offset=1)
            bond_counts += torch.bincount(g["bonds"][iu[0], iu[1]], minlength=len(self.bond_types)).float()
        if sizes.sum() == 0:
            raise SpaceError("MolecularGraph.fit: no graphs given")
        return {
            "sizes": (sizes / sizes.sum()).tolist(),
            "frequencies": {"atoms": (atom_counts / atom_counts.sum().clamp_min(1)).tolist(), "bonds": (bond_counts / bond_counts.sum().clamp_min(1)).tolist()},
        }

    def read(self, path: Path) -> tuple[list, list[dict]]:
        """Graphs from the JSON list that :meth:`write` produces (or ``graphs.json`` inside a folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "graphs.json"
        items, failures = [], []
        for i, row in enumerate(json.loads(path.read_text())):
            try:
                items.append(self.validate({k: (v if k == "atoms" else torch.tensor(v)) for k, v in row.items()}))
            except (SpaceError, TypeError, ValueError) as exc:
                failures.append({"item": f"graph {i}", "reason": str(exc).splitlines()[0]})
        return items, failures

    def template(self, batch_size: int, stats=None, generator=None, sizes=None) -> State:
        """Zeros for ``batch_size`` graphs whose sizes are ``sizes`` or drawn from ``stats["sizes"]``."""
        if sizes is None:
            if not stats or "sizes" not in stats:
                raise SpaceError("MolecularGraph.template: need graph sizes or stats['sizes'] from fit(); sample through a trained run")
            probs = torch.as_tensor(stats["sizes"], dtype=torch.float64)
            sizes = torch.multinomial(probs, int(batch_size), replacement=True, generator=generator)
        sizes = torch.as_tensor(sizes).long()
        n = int(sizes.max())
        mask = (torch.arange(n)[None, :] < sizes[:, None]).float()
        B, A, K = len(sizes), len(self.atom_types), len(self.bond_types)
        state = State(atoms=torch.zeros(B, n, A), bonds=torch.zeros(B, n, n, K), mask=mask)
        if self.positions:
            state["pos"] = torch.zeros(B, n, 3)
        return state

    def config(self) -> dict:
        return {"atom_types": list(self.atom_types), "max_atoms": self.max_atoms, "positions": self.positions, "bond_types": list(self.bond_types)}
