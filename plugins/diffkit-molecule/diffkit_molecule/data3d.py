"""QM9 in 3-D with hydrogens (``qm9-3d``, ``qm9-conformers``) from the ``qm9pack`` package's CSV files.

Processing, per molecule of the source (130,831 rows):

- atoms and positions are QM9's DFT geometry (``Elements``, ``XYZ_Ang``; B3LYP/6-31G(2df,p), in Å), in
  the file's atom order (heavy atoms first, then hydrogens, as QM9 writes them);
- bond orders and formal charges come from RDKit: the row's SMILES is parsed and sanitised, hydrogens
  are added and the bonds kekulised (single, double, triple); its atoms are mapped onto the geometry's by
  matching the two bond graphs, where the geometry's graph is RDKit's distance-based connectivity
  (``rdDetermineBonds.DetermineConnectivity``), which must contain every SMILES bond (it may hold extra
  close contacts, such as 1,3 atoms of strained rings, which are not bonds). Molecules whose relaxed
  geometry lacks a SMILES bond (their structure changed during relaxation) are dropped and counted
  (``connectivity_mismatch``), as are unreadable SMILES and charges outside
  ``charge_values`` (-1, 0, +1); charged molecules (zwitterions) are kept, with their charges;
- positions are centred at the centre of mass (atomic masses from RDKit's periodic table);
- the split is the 2-D task's rule (:func:`diffkit_molecule.data.split_indices`, a ``torch.randperm``
  under ``seed``; 10 % test, train capped at 100,000, the rest validation) over the kept molecules;
- the processed tensors are cached under ``$DIFFKIT_CACHE/molecule`` (``graphs.safetensors``,
  ``smiles.txt``, ``info.json``) in a folder keyed by the source and these settings.
"""
from __future__ import annotations

import importlib.metadata
import re
from collections import Counter

import numpy as np
import torch

from diffkit_molecule import chem
from diffkit_molecule.data import QM9_TRAIN, PackedGraphDataset, _cached, _check_split, qm9_csv_rows, qm9_files, split_indices, with_stats_path  # noqa: F401 (shared processing rules)
from diffkit_molecule.space3d import QM9_ATOMS_H, QM9_CHARGES, QM9_MAX_ATOMS_H, ConformerSpace, Molecule3DSpace

PROCESSING_VERSION_3D = 2
_NUMBER = re.compile(r"-?\d+\.?\d*(?:[eE][-+]?\d+)?")
TASKS = {"generation": Molecule3DSpace, "conformers": ConformerSpace}


class Molecule3DDataset(PackedGraphDataset):
    """3-D molecules packed in tensors; items are ``{"atoms", "charges", "bonds", "pos"}`` elements of ``space``.
    Beside the graph's, ``charges`` N×w (formal charges, int) and ``pos`` N×w×3 (Å) are packed."""

    def __init__(self, tensors: dict, smiles: list[str], space, info: dict):
        super().__init__(tensors["atoms"], tensors["bonds"], tensors["sizes"].long(), smiles, space, info)
        self.charges, self.pos = tensors["charges"], tensors["pos"]

    def __getitem__(self, i: int) -> dict:
        i, n = self._index(i)
        return {"atoms": self.atoms[i, :n].long(), "charges": self.charges[i, :n].long(), "bonds": self.bonds[i, :n, :n].long(), "pos": self.pos[i, :n].float()}

    def _charge_indices(self, width: int) -> torch.Tensor:
        """N×width index of each atom's formal charge in ``space.charge_values`` (-1 where it has none)."""
        charges = self.charges[:, :width].long()
        index = torch.full_like(charges, -1)
        for k, c in enumerate(self.space.charge_values):
            index[charges == c] = k
        return index

    def _graph_rules(self) -> list[tuple[torch.Tensor, str]]:
        """The graph's rules and ``Molecule3DSpace.validate``'s: charges in ``charge_values``, finite positions."""
        real = self.real_atoms()
        return super()._graph_rules() + [
            ((real & (self._charge_indices(real.shape[1]) < 0)).any(1), f"formal charges must lie in charge_values {list(self.space.charge_values)}"),
            ((real[..., None] & ~torch.isfinite(self.pos)).flatten(1).any(1), "positions must be finite"),
        ]

    def _statistics(self) -> dict:
        stats = super()._statistics()
        real = self.real_atoms()
        counts = torch.bincount(self._charge_indices(real.shape[1])[real], minlength=len(self.space.charge_values)).float()
        stats["frequencies"]["charges"] = (counts / counts.sum().clamp_min(1)).tolist()
        return stats

    def collate_all(self) -> tuple:
        """``(space.collate(every element), None)`` from the packed tensors in one pass: the graph one-hot as
        ``MolecularGraph.collate`` encodes it, charges one-hot over ``charge_values``, positions with the mean
        of each molecule's real atoms subtracted, padded to ``max_atoms`` where the space pads."""
        from diffkit.state import State

        self.check_packed()
        atoms, bonds, mask = self._one_hot_graphs()
        n = mask.shape[1]
        real = mask.bool()
        charges = torch.nn.functional.one_hot(self._charge_indices(n).clamp_min(0), len(self.space.charge_values)).float() * real[..., None]
        pos = self.pos[:, :n].float() * real[..., None]
        pos = (pos - pos.sum(1, keepdim=True) / mask.sum(1)[:, None, None]) * real[..., None]
        state = State(atoms=atoms, bonds=bonds, mask=mask, pos=pos, charges=charges)
        return (self.space._pad(state) if self.space.pad_to_max else state), None


def _parse_list(text: str) -> list[str]:
    return [s.strip().strip("'\"") for s in text.strip("[]").split(",") if s.strip()]


def _skeleton(mol):
    """A copy with every bond single, no aromaticity, no charges and no implicit hydrogens: the bare bond graph."""
    rw = chem.Chem.RWMol(mol)
    for a in rw.GetAtoms():
        a.SetFormalCharge(0)
        a.SetIsAromatic(False)
        a.SetNoImplicit(True)
        a.SetNumExplicitHs(0)
    for b in rw.GetBonds():
        b.SetBondType(chem.Chem.BondType.SINGLE)
        b.SetIsAromatic(False)
    return rw.GetMol()


def molecule_from_row(smiles: str, elements: list[str], xyz: np.ndarray) -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
    """``(symbols, charges, bond orders, positions centred at the centre of mass)`` in the geometry's atom
    order; ChemError when the SMILES is unreadable or its bond graph is not the geometry's."""
    from rdkit.Chem import rdDetermineBonds

    Chem = chem.Chem
    mol = chem.mol_from_smiles(smiles)
    mol = Chem.AddHs(mol)
    Chem.Kekulize(mol, clearAromaticFlags=True)
    if mol.GetNumAtoms() != len(elements):
        raise chem.ChemError(f"the SMILES has {mol.GetNumAtoms()} atoms with hydrogens, the geometry {len(elements)}")
    geo = Chem.RWMol()
    for e in elements:
        geo.AddAtom(Chem.Atom(e))
    geo = geo.GetMol()
    conf = Chem.Conformer(len(elements))
    for i, p in enumerate(xyz):
        conf.SetAtomPosition(i, p.tolist())
    geo.AddConformer(conf)
    rdDetermineBonds.DetermineConnectivity(geo)
    # every SMILES bond must be a close contact of the geometry; the geometry may have a few more contacts
    # (strained rings bring 1,3 atoms within the covalent cut-off), which are not bonds
    match = _skeleton(geo).GetSubstructMatch(_skeleton(mol))  # match[i]: geometry atom of SMILES atom i
    if len(match) != len(elements):
        raise chem.ChemError("the geometry's bond graph (by distance) does not contain the SMILES's")
    inverse = np.empty(len(elements), dtype=np.int64)
    inverse[list(match)] = np.arange(len(elements))
    n = len(elements)
    bonds = np.zeros((n, n), dtype=np.int64)
    for b in mol.GetBonds():
        i, j = match[b.GetBeginAtomIdx()], match[b.GetEndAtomIdx()]
        bonds[i, j] = bonds[j, i] = chem._ORDER[b.GetBondType()]
    charges = [mol.GetAtomWithIdx(int(inverse[j])).GetFormalCharge() for j in range(n)]
    table = Chem.GetPeriodicTable()
    masses = np.array([table.GetAtomicWeight(e) for e in elements])
    pos = xyz - (masses[:, None] * xyz).sum(0) / masses.sum()
    return list(elements), charges, bonds, pos


def _rows_3d(files, limit):
    for k, row in qm9_csv_rows(files, limit, ("SMILES", "Elements", "XYZ_Ang")):
        xyz = np.array([float(v) for v in _NUMBER.findall(row["XYZ_Ang"].replace("*^", "e"))], dtype=np.float64)
        yield k, row["SMILES"], _parse_list(row["Elements"]), xyz


def process_qm9_3d(rows, atom_types=QM9_ATOMS_H, charge_values=QM9_CHARGES, max_atoms=QM9_MAX_ATOMS_H) -> tuple[dict, list[str], dict]:
    """Pack the rows' molecules (rules in the module docstring): ``(tensors, canonical SMILES, summary)``."""
    kept, counts, examples = [], Counter(), []
    index = {s: k for k, s in enumerate(atom_types)}
    for line_no, smiles, elements, xyz in rows:
        counts["read"] += 1
        try:
            if xyz.size != 3 * len(elements):
                raise chem.ChemError(f"{len(elements)} atoms but {xyz.size} coordinates")
            symbols, charges, bonds, pos = molecule_from_row(smiles, elements, xyz.reshape(-1, 3))
        except chem.ChemError as exc:
            reason = str(exc)
            counts["connectivity_mismatch" if "bond" in reason or "geometry" in reason else "invalid"] += 1
            if len(examples) < 5:
                examples.append({"row": line_no, "smiles": smiles, "reason": reason})
            continue
        except Exception as exc:  # noqa: BLE001 - RDKit raises several types; counted, never fatal
            counts["invalid"] += 1
            if len(examples) < 5:
                examples.append({"row": line_no, "smiles": smiles, "reason": " ".join(str(exc).split())[:120]})
            continue
        if any(s not in index for s in symbols) or len(symbols) > max_atoms:
            counts["outside_vocabulary"] += 1
            continue
        if any(c not in charge_values for c in charges):
            counts["charge_outside_vocabulary"] += 1
            continue
        if any(charges):
            counts["charged_kept"] += 1
        heavy = chem.Chem.RemoveHs(chem.mol_from_smiles(smiles))
        kept.append((symbols, charges, bonds, pos, chem.canonical(heavy)))
    N = len(kept)
    tensors = {"atoms": torch.full((N, max_atoms), -1, dtype=torch.int8), "charges": torch.zeros((N, max_atoms), dtype=torch.int8),
               "bonds": torch.zeros((N, max_atoms, max_atoms), dtype=torch.int8), "pos": torch.zeros((N, max_atoms, 3), dtype=torch.float32),
               "sizes": torch.zeros(N, dtype=torch.int16)}
    for i, (symbols, charges, bonds, pos, _) in enumerate(kept):
        n = len(symbols)
        tensors["atoms"][i, :n] = torch.tensor([index[s] for s in symbols], dtype=torch.int8)
        tensors["charges"][i, :n] = torch.tensor(charges, dtype=torch.int8)
        tensors["bonds"][i, :n, :n] = torch.as_tensor(bonds, dtype=torch.int8)
        tensors["pos"][i, :n] = torch.as_tensor(pos, dtype=torch.float32)
        tensors["sizes"][i] = n
    counts["kept"] = N
    return tensors, [k[4] for k in kept], {"counts": dict(counts), "invalid_examples": examples}


def qm9_3d(split: str = "train", seed: int = 0, source_limit: int | None = None, subset: int | None = None, task: str = "generation") -> Molecule3DDataset:
    """QM9 with hydrogens and DFT coordinates (H, C, N, O, F; formal charges -1/0/+1; <= 29 atoms); rules in
    the module docstring. ``task``: ``generation`` (space ``molecule-3d``: every field diffused) or
    ``conformers`` (space ``molecule-conformer``: positions generated for a given graph). ``source_limit``
    processes only the first rows (tests), ``subset`` keeps the first items of the split."""
    _check_split(split)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use 'generation' (de novo 3-D molecules) or 'conformers' (positions for a given graph)")
    files = qm9_files()
    version = importlib.metadata.version("qm9pack")
    material = {"source_name": "qm9-3d", "qm9pack": version, "sizes": [p.stat().st_size for p in files], "limit": source_limit, "atoms": list(QM9_ATOMS_H),
                "charges": list(QM9_CHARGES), "max_atoms": QM9_MAX_ATOMS_H, "version": PROCESSING_VERSION_3D}

    def build():
        tensors, smiles, summary = process_qm9_3d(_rows_3d(files, source_limit))
        return tensors, smiles, {"source": f"qm9pack {version}", **summary}

    tensors, smiles, info = _cached(material, build)
    idx = split_indices(len(smiles), seed, max_train=QM9_TRAIN)[split].long()
    if subset is not None:
        idx = idx[: int(subset)]
    picked = {k: v[idx] for k, v in tensors.items()}
    space = TASKS[task](atom_types=list(QM9_ATOMS_H), max_atoms=QM9_MAX_ATOMS_H, charge_values=list(QM9_CHARGES))
    info = with_stats_path({**info, "seed": seed, "split": split, "split_size": int(idx.numel()), "task": task}, idx, space)
    return Molecule3DDataset(picked, [smiles[i] for i in idx.tolist()], space, info)


def qm9_conformers(split: str = "train", seed: int = 0, source_limit: int | None = None, subset: int | None = None) -> Molecule3DDataset:
    """:func:`qm9_3d` with ``task="conformers"``: the graph is given, the DFT positions are the target."""
    return qm9_3d(split, seed=seed, source_limit=source_limit, subset=subset, task="conformers")


__all__ = ["Molecule3DDataset", "molecule_from_row", "process_qm9_3d", "qm9_3d", "qm9_conformers"]
