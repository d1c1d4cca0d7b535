"""Chemistry rules shared by the space, the datasets and the metrics: SMILES ↔ heavy-atom graphs.

A *graph* here is ``(symbols, bonds)``: ``symbols`` a list of element symbols of the heavy atoms and
``bonds`` an ``n×n`` symmetric integer matrix of kekulé bond orders (0 none, 1 single, 2 double,
3 triple) with a zero diagonal. Hydrogens are implicit, formal charges are not part of a graph.

Rules implemented here (each one is used everywhere, so the figures of every path agree):

- **SMILES → graph**: RDKit parses and sanitises the SMILES, hydrogens are removed and aromatic bonds
  are kekulised (``Chem.Kekulize(clearAromaticFlags=True)``). Formal charges are reported beside the
  graph; callers decide (datasets drop charged molecules and count them). A SMILES that parses only
  without sanitisation (e.g. a pentavalent carbon) still gives a graph when ``allow_invalid=True``, so
  that an invalid sample is scored as an invalid molecule rather than as an unreadable line.
- **graph → molecule**: every atom neutral, hydrogens implicit (RDKit fills the valence).
- **strict validity**: the neutral molecule built from the graph passes full RDKit sanitisation
  (``Chem.SanitizeMol``, all flags) as a whole (disconnected graphs included).
- **relaxed validity** (GDSS's "validity without correction", Jo et al. 2022): an N, O or S atom whose
  bond-order sum exceeds its neutral valence (N 3, O 2, S 2) by exactly one gets a +1 formal charge;
  the molecule is valid when RDKit's valence check (``SANITIZE_PROPERTIES``) then passes.
- **canonical SMILES**: ``Chem.MolToSmiles`` of the sanitised neutral molecule (strictly valid graphs).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from rdkit import Chem, RDLogger

RDLogger.DisableLog("rdApp.*")

BOND_TYPES = ("none", "single", "double", "triple")
_RDKIT_BOND = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
_ORDER = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}
RELAXED_CHARGE_VALENCE = {"N": 3, "O": 2, "S": 2}
"""Neutral valences of the atoms that the relaxed rule may charge +1 (GDSS)."""


class ChemError(ValueError):
    """A SMILES or a graph cannot be turned into the other; the message says why in one line."""


# --- SMILES -> graph -------------------------------------------------------------------------------
def mol_from_smiles(smiles: str, allow_invalid: bool = False):
    """Parse ``smiles``; returns an RDKit Mol (sanitised when possible) or raises ChemError with the reason.

    With ``allow_invalid``, a SMILES that parses but fails sanitisation is returned unsanitised."""
    text = str(smiles).strip()
    if not text:
        raise ChemError("empty SMILES")
    text = text.split()[0]  # "SMILES name" lines: the first token is the molecule
    mol = Chem.MolFromSmiles(text)
    if mol is not None:
        return mol
    raw = Chem.MolFromSmiles(text, sanitize=False)
    if raw is None:
        raise ChemError(f"RDKit cannot parse SMILES {text!r}")
    problems = Chem.DetectChemistryProblems(raw)
    reason = problems[0].Message() if problems else "sanitisation failed"
    if not allow_invalid:
        raise ChemError(f"SMILES {text!r} is not a valid molecule ({reason})")
    raw.UpdatePropertyCache(strict=False)
    return raw


def mol_to_graph(mol) -> tuple[list[str], np.ndarray, list[int]]:
    """Heavy atoms, kekulé bond orders and formal charges of an RDKit molecule."""
    mol = Chem.Mol(mol)
    try:
        if mol.GetNumAtoms() and any(a.GetAtomicNum() == 1 for a in mol.GetAtoms()):
            mol = Chem.RemoveHs(mol, sanitize=False)
        if any(b.GetIsAromatic() for b in mol.GetBonds()):
            Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception as exc:  # noqa: BLE001 - RDKit raises several types
        raise ChemError(f"cannot kekulise the molecule ({' '.join(str(exc).split())[:120]})") from None
    n = mol.GetNumAtoms()
    if n == 0:
        raise ChemError("the molecule has no heavy atoms")
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    charges = [a.GetFormalCharge() for a in mol.GetAtoms()]
    bonds = np.zeros((n, n), dtype=np.int64)
    for b in mol.GetBonds():
        order = _ORDER.get(b.GetBondType())
        if order is None:
            raise ChemError(f"bond type {b.GetBondType()} between atoms {b.GetBeginAtomIdx()} and {b.GetEndAtomIdx()} is not single, double or triple")
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        bonds[i, j] = bonds[j, i] = order
    return symbols, bonds, charges


def smiles_to_graph(smiles: str, allow_invalid: bool = False) -> tuple[list[str], np.ndarray, list[int]]:
    """``(symbols, bonds, charges)`` of a SMILES string (see the module rules); raises ChemError."""
    return mol_to_graph(mol_from_smiles(smiles, allow_invalid))


# --- graph -> molecule -------------------------------------------------------------------------------
def graph_to_mol(symbols: Sequence[str], bonds, charges: Sequence[int] | None = None):
    """An unsanitised RDKit Mol with the given atoms (neutral unless ``charges``) and bond orders."""
    bonds = np.asarray(bonds)
    mol = Chem.RWMol()
    for k, s in enumerate(symbols):
        atom = Chem.Atom(str(s))
        if charges is not None and charges[k]:
            atom.SetFormalCharge(int(charges[k]))
        mol.AddAtom(atom)
    n = len(symbols)
    for i in range(n):
        for j in range(i + 1, n):
            order = int(bonds[i, j])
            if order:
                if order not in _RDKIT_BOND:
                    raise ChemError(f"bond order {order} between atoms {i} and {j} is not 1, 2 or 3")
                mol.AddBond(i, j, _RDKIT_BOND[order])
    return mol.GetMol()


def strict_molecule(symbols, bonds):
    """The sanitised neutral molecule of a graph, or ``(None, reason)`` when sanitisation fails."""
    mol = graph_to_mol(symbols, bonds)
    try:
        Chem.SanitizeMol(mol)
    except Exception as exc:  # noqa: BLE001
        return None, " ".join(str(exc).split())[:160] or "sanitisation failed"
    return mol, ""


def relaxed_charges(symbols, bonds) -> list[int]:
    """GDSS's rule: +1 on N, O, S atoms whose bond-order sum exceeds the neutral valence by exactly one."""
    valence = np.asarray(bonds).sum(1)
    return [1 if s in RELAXED_CHARGE_VALENCE and int(v) - RELAXED_CHARGE_VALENCE[s] == 1 else 0 for s, v in zip(symbols, valence)]


def relaxed_molecule(symbols, bonds):
    """The molecule under the relaxed rule when its valences pass, else ``(None, reason)``."""
    mol = graph_to_mol(symbols, bonds, relaxed_charges(symbols, bonds))
    try:
        Chem.SanitizeMol(mol, Chem.SanitizeFlags.SANITIZE_PROPERTIES)
    except Exception as exc:  # noqa: BLE001
        return None, " ".join(str(exc).split())[:160] or "valence check failed"
    return mol, ""


def is_connected(bonds) -> bool:
    """True when the bond graph has one connected component (a single atom counts as connected)."""
    bonds = np.asarray(bonds)
    n = bonds.shape[0]
    if n <= 1:
        return True
    seen, stack = {0}, [0]
    while stack:
        i = stack.pop()
        for j in np.nonzero(bonds[i])[0].tolist():
            if j not in seen:
                seen.add(j)
                stack.append(j)
    return len(seen) == n


def canonical(mol) -> str:
    return Chem.MolToSmiles(mol)


def any_smiles(mol) -> str:
    """A SMILES for any molecule, sanitised or not (invalid ones are written as they are)."""
    mol = Chem.Mol(mol)
    mol.UpdatePropertyCache(strict=False)
    return Chem.MolToSmiles(mol, canonical=True, kekuleSmiles=False)


def display_molecule(symbols, bonds):
    """``(mol, status)`` for writing and drawing: the strict molecule (``"valid"``), else the relaxed one
    (``"relaxed"``, with its +1 charges), else the raw neutral graph (``"invalid"``)."""
    mol, _ = strict_molecule(symbols, bonds)
    if mol is not None:
        return mol, "valid"
    mol, _ = relaxed_molecule(symbols, bonds)
    if mol is not None:
        return mol, "relaxed"
    mol = graph_to_mol(symbols, bonds)
    mol.UpdatePropertyCache(strict=False)
    return mol, "invalid"
