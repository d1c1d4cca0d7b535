"""3-D molecule spaces: atoms with hydrogens, formal charges, kekulé bonds and positions together.

``molecule-3d`` (de novo generation): every field is diffused — atom types, formal charges and bond
orders are categorical, positions continuous in the zero-centre-of-mass subspace (``zero-com-gaussian``).

``molecule-conformer`` (GeoDiff's task): positions are the only diffused field; atoms, charges and bonds
are conditioning fields (``FieldSpec(diffused=False)``), taken from the reference molecules at sampling
time. Graphs are padded to ``max_atoms`` in every State, so that a template and the reference
conditioning (with its mask) always have the same shape.

Elements are ``{"atoms": n indices (or symbols), "charges": n formal charges (e.g. -1, 0, 1),
"bonds": n×n orders 0..3, "pos": n×3 in Å}``. Encoded: ``atoms`` B×n×A one-hot, ``charges`` B×n×C one-hot
over ``charge_values``, ``bonds`` B×n×n×4 one-hot, ``pos`` B×n×3 with the mean of the real atoms
subtracted (the process's subspace; the QM9 data are stored centred at the mass-weighted centre), ``mask``.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from diffkit.spaces.base import FieldSpec, SpaceError
from diffkit.spaces.graph import BOND_TYPES, MolecularGraph
from diffkit.state import State

from diffkit_molecule import chem, sdf
from diffkit_molecule.space import MoleculeSpace

QM9_ATOMS_H = ("H", "C", "N", "O", "F")
QM9_CHARGES = (-1, 0, 1)
QM9_MAX_ATOMS_H = 29


class Molecule3DSpace(MoleculeSpace):
    """Molecules in space with explicit hydrogens (see the module docstring). :meth:`write` writes
    ``samples.sdf`` (3-D, with charges and bond orders), ``samples.xyz``, ``molecules.png`` (a grid drawn
    from the 3-D coordinates) and ``graphs.json``; :meth:`read` reads an SDF (or a SMILES file, whose
    molecules get hydrogens and no positions: only the conformer space accepts those)."""

    name = "molecule-3d"
    conditional_graph = False  # the conformer space conditions on the graph
    pad_to_max = False

    def __init__(self, atom_types: Sequence[str] = QM9_ATOMS_H, max_atoms: int = QM9_MAX_ATOMS_H, charge_values: Sequence[int] = QM9_CHARGES,
                 positions: bool = True, bond_types: Sequence[str] = BOND_TYPES):
        if not positions:
            raise SpaceError(f"{type(self).__name__} always models 3-D positions; use the 'molecule' space for graphs without them")
        super().__init__(atom_types, max_atoms, True, bond_types)
        self.charge_values = tuple(int(c) for c in charge_values)
        if 0 not in self.charge_values or len(set(self.charge_values)) != len(self.charge_values):
            raise SpaceError(f"{type(self).__name__}: charge_values must be distinct and include 0; got {list(charge_values)}")
        graph = not self.conditional_graph
        self.fields = (
            FieldSpec("atoms", kind="categorical", layout="node", num_classes=len(self.atom_types), diffused=graph),
            FieldSpec("charges", kind="categorical", layout="node", num_classes=len(self.charge_values), diffused=graph),
            FieldSpec("bonds", kind="categorical", layout="pair", num_classes=len(self.bond_types), symmetric=True, diffused=graph),
            FieldSpec("pos", kind="continuous", layout="node", zero_mean=True),
        )

    # --- elements -------------------------------------------------------------------------------
    def validate(self, item: Any) -> dict:
        if isinstance(item, dict) and "pos" in item and item["pos"] is None:
            item = {k: v for k, v in item.items() if k != "pos"}
        if isinstance(item, dict) and "pos" not in item and self.conditional_graph and "atoms" in item:
            item = {**item, "pos": torch.zeros(len(item["atoms"]), 3)}  # a graph to generate positions for
        graph = MolecularGraph.validate(self, item)
        n = graph["atoms"].numel()
        charges = item.get("charges")
        charges = torch.zeros(n, dtype=torch.long) if charges is None else torch.as_tensor(charges).long().reshape(-1)
        if charges.numel() != n:
            raise SpaceError(f"{type(self).__name__}: charges must hold one formal charge per atom ({n}), got {charges.numel()}")
        bad = sorted({int(c) for c in charges.tolist()} - set(self.charge_values))
        if bad:
            raise SpaceError(f"{type(self).__name__}: formal charge(s) {bad} are outside charge_values {list(self.charge_values)}; extend charge_values or drop these molecules")
        if not torch.isfinite(graph["pos"]).all():
            raise SpaceError(f"{type(self).__name__}: pos holds NaN or infinite coordinates; fix the geometry")
        graph["charges"] = charges
        return graph

    def collate(self, items: Sequence[Any], *, train: bool = False, generator=None) -> State:
        items = [self.validate(x) for x in items]
        state = MolecularGraph.collate(self, items, train=train, generator=generator)
        C = len(self.charge_values)
        index = {c: k for k, c in enumerate(self.charge_values)}
        charges = torch.zeros(*state["mask"].shape, C)
        for b, item in enumerate(items):
            idx = torch.tensor([index[int(c)] for c in item["charges"].tolist()], dtype=torch.long)
            charges[b, : idx.numel()] = F.one_hot(idx, C).float()
        state["charges"] = charges
        return self._pad(state) if self.pad_to_max else state

    def train_transform(self, state: State, generator=None) -> State:
        """A training batch drawn from the collated dataset (padded to its largest molecule overall) is cut to
        the largest molecule of the batch: the same values, fewer padded pairs to compute."""
        return crop_to_largest(state)

    def _pad(self, state: State, none_bonds: bool = True) -> State:
        """Pad every field to ``max_atoms`` nodes (padded pairs hold the 'none' bond, or zeros for a template)."""
        n = state["mask"].shape[1]
        extra = self.max_atoms - n
        if extra <= 0:
            return state
        out = State(state)
        for name in ("atoms", "charges", "pos"):
            out[name] = F.pad(state[name], (0, 0, 0, extra))
        out["mask"] = F.pad(state["mask"], (0, extra))
        bonds = F.pad(state["bonds"], (0, 0, 0, extra, 0, extra))
        if none_bonds:
            bonds[..., 0] = torch.where(bonds.sum(-1) == 0, torch.ones_like(bonds[..., 0]), bonds[..., 0])
        out["bonds"] = bonds
        return out

    def decode(self, state: State) -> list[dict]:
        items = MolecularGraph.decode(self, state)
        mask = state["mask"].detach().cpu().bool()
        charges = state["charges"].detach().float().cpu()
        for b, item in enumerate(items):
            idx = charges[b][mask[b]].argmax(-1)
            item["charges"] = torch.tensor([self.charge_values[i] for i in idx.tolist()], dtype=torch.long)
        return items

    def template(self, batch_size: int, stats=None, generator=None, sizes=None) -> State:
        state = super().template(batch_size, stats, generator, sizes)
        state["charges"] = torch.zeros(*state["mask"].shape, len(self.charge_values))
        return self._pad(state, none_bonds=False) if self.pad_to_max else state

    def fit(self, items: Sequence[Any]) -> dict:
        """Graph sizes, atom/bond frequencies (the core's) and formal-charge frequencies over atoms."""
        items = [self.validate(x) for x in items]
        stats = MolecularGraph.fit(self, items)
        counts = torch.zeros(len(self.charge_values))
        index = {c: k for k, c in enumerate(self.charge_values)}
        for item in items:
            for c in item["charges"].tolist():
                counts[index[int(c)]] += 1
        stats["frequencies"]["charges"] = (counts / counts.sum().clamp_min(1)).tolist()
        return stats

    def config(self) -> dict:
        return {**super().config(), "charge_values": list(self.charge_values)}

    # --- chemistry ------------------------------------------------------------------------------------
    def parts(self, item: Any) -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
        """``(symbols, charges, bond orders, positions)`` of an element."""
        g = self.validate(item)
        return [self.atom_types[i] for i in g["atoms"].tolist()], g["charges"].tolist(), g["bonds"].numpy(), g["pos"].double().numpy()

    def to_mol3d(self, item: Any):
        """The element as an unsanitised RDKit Mol with explicit hydrogens and one 3-D conformer."""
        symbols, charges, bonds, pos = self.parts(item)
        return sdf.graph_to_mol3d(symbols, charges, bonds, pos)

    def from_element(self, element: dict, where: str = "molecule") -> dict:
        """A space element from :func:`sdf.mol_to_element`'s output (symbols → indices, numpy → tensors)."""
        unknown = sorted({s for s in element["atoms"] if s not in self.atom_types})
        if unknown:
            raise SpaceError(f"{where} has atom(s) {unknown} outside the vocabulary {list(self.atom_types)}; add them to atom_types or drop this molecule")
        n = len(element["atoms"])
        if n > self.max_atoms:
            raise SpaceError(f"{where} has {n} atoms (hydrogens included), more than max_atoms={self.max_atoms}; raise max_atoms or drop it")
        item = {"atoms": torch.tensor([self.atom_types.index(s) for s in element["atoms"]]), "charges": torch.tensor(element["charges"]),
                "bonds": torch.as_tensor(element["bonds"])}
        if element.get("pos") is not None:
            item["pos"] = torch.as_tensor(element["pos"], dtype=torch.float32)
        elif not self.conditional_graph:
            raise SpaceError(f"{where} has no 3-D coordinates; the {self.name} space needs positions (give an SDF with 3-D coordinates)")
        return self.validate(item)

    # --- natural format -------------------------------------------------------------------------------
    def write(self, items: list, out: Path, labels=None, grid: int = 36, names: Sequence[str] | None = None, **kwargs) -> list[Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        parts = [self.parts(x) for x in items]
        mols = [sdf.graph_to_mol3d(*p) for p in parts]
        if names is None and labels is not None:  # conformers: labels index the molecule each sample was conditioned on
            seen = Counter()
            names = []
            for label in labels:
                names.append(f"mol{int(label)}_conf{seen[int(label)]}")
                seen[int(label)] += 1
        names = list(names) if names is not None else [f"sample_{k}" for k in range(len(items))]
        paths = [sdf.write_sdf(mols, out / "samples.sdf", names), sdf.write_xyz([(p[0], p[3]) for p in parts], out / "samples.xyz", names)]
        legends = []
        for m in mols[:grid]:
            ok, _ = sdf.sanitized(m)
            legends.append(chem.canonical(Chem_remove_hs(ok)) if ok is not None else "invalid")
        png = sdf.draw_grid_3d([(p[0], p[2], p[3]) for p in parts[:grid]], out / "molecules.png", [s[:28] for s in legends])
        if png is not None:
            paths.append(png)
        paths += MolecularGraph.write(self, items, out)
        return paths

    def read(self, path: Path) -> tuple[list, list[dict]]:
        """Elements from an SDF (``.sdf``/``.sd``, hydrogens required) or a SMILES file (``.smi``/``.txt``: one
        molecule per line, hydrogens added, no positions). A folder means its ``samples.sdf``. Records that
        cannot be read, lack hydrogens or coordinates (where needed) or hold atoms outside the vocabulary are
        failures with a reason; the others are read (never a crash halfway)."""
        path = Path(path)
        if path.is_dir():
            path = path / "samples.sdf"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass an SDF (3-D, with hydrogens) or a SMILES file (one molecule per line)")
        items, failures = [], []
        if path.suffix.lower() in (".sdf", ".sd", ".mol"):
            elements, failures = sdf.read_sdf(path)
            wheres = [f"record {k + 1}" for k in range(len(elements))]
        else:
            elements, wheres = [], []
            for k, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    elements.append(sdf.smiles_to_element(line))
                    wheres.append(f"line {k}: {line.strip()[:60]}")
                except chem.ChemError as exc:
                    failures.append({"item": f"line {k}: {line.strip()[:60]}", "reason": str(exc)})
        for element, where in zip(elements, wheres):
            try:
                items.append(self.from_element(element, where))
            except SpaceError as exc:
                failures.append({"item": where, "reason": str(exc)})
        return items, failures


def crop_to_largest(state: State) -> State:
    """``state`` without the padded node slots that no graph of the batch uses (node fields on axis 1, pair fields on axes 1 and 2)."""
    n = int(state["mask"].sum(1).max().item()) if state["mask"].numel() else 0
    if n >= state["mask"].shape[1]:
        return state
    out = State(state)
    for name, value in state.items():
        if name == "bonds":
            out[name] = value[:, :n, :n]
        else:
            out[name] = value[:, :n]
    return out


def Chem_remove_hs(mol):
    """Heavy-atom copy of a sanitised molecule (for legends and SMILES)."""
    return chem.Chem.RemoveHs(mol, sanitize=False)


class ConformerSpace(Molecule3DSpace):
    """Positions of a given molecular graph: ``pos`` is diffused, ``atoms``, ``charges`` and ``bonds`` are
    conditioning fields (read by the backbone, taken from the reference molecules when sampling)."""

    name = "molecule-conformer"
    conditional_graph = True
    pad_to_max = True


__all__ = ["ConformerSpace", "Molecule3DSpace", "QM9_ATOMS_H", "QM9_CHARGES", "QM9_MAX_ATOMS_H"]
