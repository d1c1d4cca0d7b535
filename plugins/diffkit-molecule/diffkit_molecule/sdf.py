"""3-D molecules in and out: RDKit molecules with a conformer, SDF and XYZ files, and a picture drawn
from the 3-D coordinates.

An element of a 3-D space is ``{"atoms": n symbols or indices, "charges": n formal charges,
"bonds": n×n kekulé bond orders, "pos": n×3 positions in Å}`` with hydrogens as atoms; this module
turns such graphs into RDKit molecules (explicit hydrogens only, no implicit ones added) and back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from diffkit_molecule import chem

Chem = chem.Chem

# CPK-like colours for the 3-D drawing
_COLOURS = {"H": "#d9d9d9", "C": "#404040", "N": "#3050f8", "O": "#ff0d0d", "F": "#90e050", "S": "#ffff30", "Cl": "#1ff01f"}
_SIZES = {"H": 20, "C": 60, "N": 60, "O": 60, "F": 55}


def graph_to_mol3d(symbols: Sequence[str], charges: Sequence[int], bonds, pos=None):
    """An unsanitised RDKit Mol with exactly these atoms (no implicit hydrogens), charges, bond orders
    and, when ``pos`` is given, one 3-D conformer."""
    mol = chem.graph_to_mol(symbols, bonds, charges)
    rw = Chem.RWMol(mol)
    for atom in rw.GetAtoms():
        atom.SetNoImplicit(True)
    mol = rw.GetMol()
    if pos is not None:
        pos = np.asarray(pos, dtype=np.float64)
        conf = Chem.Conformer(len(symbols))
        for i, p in enumerate(pos):
            conf.SetAtomPosition(i, p.tolist())
        conf.Set3D(True)
        mol.AddConformer(conf, assignId=True)
    mol.UpdatePropertyCache(strict=False)
    return mol


def sanitized(mol):
    """``(copy, "")`` when RDKit sanitisation passes (the copy is sanitised), else ``(None, reason)``."""
    copy = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(copy)
    except Exception as exc:  # noqa: BLE001 - RDKit raises several types
        return None, " ".join(str(exc).split())[:160] or "sanitisation failed"
    return copy, ""


def mol_to_element(mol, require_hydrogens: bool = True, where: str = "molecule") -> dict:
    """``{"atoms": symbols, "charges", "bonds", "pos" (or None without a conformer)}`` of an RDKit Mol.

    Bonds are kekulised; aromatic flags are cleared. With ``require_hydrogens``, a molecule whose atoms
    carry implicit hydrogens (an SDF written without them) raises ChemError naming the fix."""
    mol = Chem.Mol(mol)
    if require_hydrogens:
        mol.UpdatePropertyCache(strict=False)
        implicit = sum(a.GetNumImplicitHs() + a.GetNumExplicitHs() for a in mol.GetAtoms())
        if implicit:
            raise chem.ChemError(f"{where} has {implicit} hydrogen(s) that are not atoms of the file; write it with explicit hydrogens (RDKit: Chem.AddHs(mol, addCoords=True))")
    try:
        if any(b.GetIsAromatic() for b in mol.GetBonds()):
            Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception as exc:  # noqa: BLE001
        raise chem.ChemError(f"{where}: cannot kekulise ({' '.join(str(exc).split())[:100]})") from None
    n = mol.GetNumAtoms()
    if n == 0:
        raise chem.ChemError(f"{where} has no atoms")
    bonds = np.zeros((n, n), dtype=np.int64)
    for b in mol.GetBonds():
        order = chem._ORDER.get(b.GetBondType())
        if order is None:
            raise chem.ChemError(f"{where}: bond type {b.GetBondType()} between atoms {b.GetBeginAtomIdx()} and {b.GetEndAtomIdx()} is not single, double or triple")
        bonds[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] = bonds[b.GetEndAtomIdx(), b.GetBeginAtomIdx()] = order
    pos = None
    if mol.GetNumConformers():
        conf = mol.GetConformer()
        xyz = np.array(conf.GetPositions(), dtype=np.float64)
        if conf.Is3D() or np.abs(xyz[:, 2]).max() > 1e-6:
            pos = xyz
    return {"atoms": [a.GetSymbol() for a in mol.GetAtoms()], "charges": [a.GetFormalCharge() for a in mol.GetAtoms()], "bonds": bonds, "pos": pos}


def write_sdf(mols: Sequence, path: Path, names: Sequence[str] | None = None) -> Path:
    """One SDF record per molecule (unsanitisable ones are written as they are, with their coordinates)."""
    path = Path(path)
    with open(path, "w") as fh:
        for k, mol in enumerate(mols):
            m = Chem.Mol(mol)
            m.SetProp("_Name", names[k] if names else f"sample_{k}")
            try:
                block = Chem.MolToMolBlock(m, kekulize=False)
            except Exception:  # noqa: BLE001 - a molecule RDKit cannot write: an empty record keeps the numbering
                block = Chem.MolToMolBlock(Chem.Mol())
            fh.write(block)
            fh.write("$$$$\n")
    return path


def write_xyz(elements: Sequence[tuple[Sequence[str], np.ndarray]], path: Path, names: Sequence[str] | None = None) -> Path:
    """A multi-frame XYZ file: per molecule its atom count, a comment line, then ``symbol x y z`` in Å."""
    lines = []
    for k, (symbols, pos) in enumerate(elements):
        lines.append(str(len(symbols)))
        lines.append(names[k] if names else f"sample_{k}")
        lines.extend(f"{s:<2s} {x:12.6f} {y:12.6f} {z:12.6f}" for s, (x, y, z) in zip(symbols, np.asarray(pos, dtype=np.float64)))
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def read_sdf(path: Path, require_hydrogens: bool = True) -> tuple[list[dict], list[dict]]:
    """Elements (:func:`mol_to_element`) of every record of an SDF file, and failures (record, reason) for
    records RDKit cannot read or that lack hydrogens; never stops halfway."""
    items, failures = [], []
    supplier = Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)
    for k, mol in enumerate(supplier):
        where = f"record {k + 1} of {Path(path).name}"
        if mol is None:
            failures.append({"item": where, "reason": "RDKit cannot read this record"})
            continue
        try:
            items.append(mol_to_element(mol, require_hydrogens=require_hydrogens, where=where))
        except chem.ChemError as exc:
            failures.append({"item": where, "reason": str(exc)})
    return items, failures


def smiles_to_element(smiles: str) -> dict:
    """The element (hydrogens added as atoms, no positions) of a SMILES string; ChemError when unreadable."""
    mol = chem.mol_from_smiles(smiles)
    return mol_to_element(Chem.AddHs(mol), require_hydrogens=True, where=f"SMILES {str(smiles).strip()[:60]!r}")


def draw_grid_3d(molecules: Sequence[tuple[Sequence[str], np.ndarray, np.ndarray]], path: Path, legends: Sequence[str] | None = None,
                 per_row: int = 6, size: float = 2.2) -> Path | None:
    """A PNG grid of molecules drawn from their 3-D coordinates: each panel is an orthographic view of
    atoms (CPK colours, hydrogens small) and bonds (one line per bond order), seen along the axis of
    least spread so that the molecule's broad face shows."""
    if not molecules:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(molecules) + per_row - 1) // per_row
    fig, axes = plt.subplots(rows, per_row, figsize=(size * per_row, size * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, (symbols, bonds, pos) in enumerate(molecules):
        ax = axes.ravel()[k]
        pos = np.asarray(pos, dtype=np.float64)
        centred = pos - pos.mean(0)
        # principal axes: view along the smallest, so the plane of the two largest is the picture plane
        _, _, vt = np.linalg.svd(centred, full_matrices=False) if len(pos) > 1 else (None, None, np.eye(3))
        xy = centred @ vt.T[:, :2] if vt.shape[0] >= 2 else np.c_[centred[:, 0], centred[:, 1]]
        depth = centred @ vt[-1] if vt.shape[0] == 3 else np.zeros(len(pos))
        bonds = np.asarray(bonds)
        for i in range(len(symbols)):
            for j in range(i + 1, len(symbols)):
                if bonds[i, j]:
                    ax.plot(xy[[i, j], 0], xy[[i, j], 1], color="#555555", lw=0.8 + 0.9 * (int(bonds[i, j]) - 1), zorder=1)
        order = np.argsort(depth)
        ax.scatter(xy[order, 0], xy[order, 1], c=[_COLOURS.get(symbols[i], "#ff1493") for i in order],
                   s=[_SIZES.get(symbols[i], 60) for i in order], edgecolors="black", linewidths=0.3, zorder=2)
        ax.set_aspect("equal")
        span = max(np.ptp(xy[:, 0]) if len(xy) else 1, np.ptp(xy[:, 1]) if len(xy) else 1, 2.0) / 2 + 0.6
        cx, cy = (xy[:, 0].max() + xy[:, 0].min()) / 2, (xy[:, 1].max() + xy[:, 1].min()) / 2
        ax.set_xlim(cx - span, cx + span)
        ax.set_ylim(cy - span, cy + span)
        if legends:
            ax.set_title(legends[k], fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path), dpi=80)
    plt.close(fig)
    return Path(path)
