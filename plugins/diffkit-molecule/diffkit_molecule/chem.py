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
- **the field's protocols** (which molecule of a sample uniqueness, novelty and FCD compare):
  ``strict`` is the whole neutral molecule above; ``digress`` (DiGress's evaluation code) charges the
  graph by the relaxed rule, sanitises it fully and keeps the fragment with the most heavy atoms (the
  first in atom order on ties); ``gdss`` (GDSS's) keeps the relaxed molecule, writes its SMILES and keeps
  the longest dot-separated part (the first on ties), re-read by RDKit. See :func:`protocol_smiles`.
- **stability filters** (:data:`STABILITY_FILTERS`): SMARTS of motifs that the GDB enumerations behind
  QM9 exclude as unstable or strained, matched on the sanitised molecule.
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

PROTOCOLS = ("strict", "digress", "gdss")
"""The molecule-level protocols (module docstring): whole molecule, DiGress's largest fragment, GDSS's."""

STABILITY_FILTERS = {
    "ring_triple_bond": "[r3,r4,r5,r6,r7,r8]#;@[r3,r4,r5,r6,r7,r8]",
    "cumulated_double_bonds": "[#6,#7,#8]=[#6,#7]=[#6,#7,#8]",
    "enol": "[OX2H1]-[#6X3]=[#6,#7]",
    "ynol": "[OX2H1]-[#6X2]#[#6,#7]",
    "three_ring_double_bond": "[r3]=;@[r3]",
}
"""QM9/GDB-style stability filters: a valid molecule passes when it matches none of these SMARTS.

- ``ring_triple_bond``: a triple bond inside a ring of at most 8 atoms (cyclopropyne … cyclooctyne);
- ``cumulated_double_bonds``: an atom with two double bonds (allenes, ketenes, ketenimines, carbodiimides);
- ``enol``: a hydroxyl on a carbon that carries a non-aromatic double bond to C or N (enols, imidic acids);
- ``ynol``: a hydroxyl on a triple-bonded carbon;
- ``three_ring_double_bond``: a double bond inside a three-membered ring (cyclopropenes, azirines).
"""


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


# --- the field's protocols -----------------------------------------------------------------------------------
def _relaxed_charged_mol(symbols, bonds):
    return graph_to_mol(symbols, bonds, relaxed_charges(symbols, bonds))


def digress_smiles(symbols, bonds) -> str | None:
    """DiGress's molecule of a graph: +1 charges by the relaxed rule, full sanitisation, then the fragment
    with the most heavy atoms (the first in atom order on ties); its canonical SMILES, or None when the
    charged molecule does not sanitise."""
    mol = _relaxed_charged_mol(symbols, bonds)
    try:
        Chem.SanitizeMol(mol)
        fragments = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=True)
    except Exception:  # noqa: BLE001 - RDKit raises several types
        return None
    return Chem.MolToSmiles(max(fragments, key=lambda m: m.GetNumAtoms()))


def gdss_smiles(symbols, bonds) -> str | None:
    """GDSS's molecule of a graph: the relaxed molecule (valence check only), its SMILES split at the dots,
    the longest part (the first on ties), re-read by RDKit; its canonical SMILES, or None when the graph
    fails the relaxed valence check or the part cannot be read."""
    mol, _ = relaxed_molecule(symbols, bonds)
    if mol is None:
        return None
    part = max(Chem.MolToSmiles(mol).split("."), key=len)
    fragment = Chem.MolFromSmiles(part)
    return Chem.MolToSmiles(fragment) if fragment is not None else None


def protocol_smiles(symbols, bonds, protocol: str) -> str | None:
    """The canonical SMILES a protocol compares for one graph (None: the graph is not valid under it)."""
    if protocol == "strict":
        mol, _ = strict_molecule(symbols, bonds)
        return canonical(mol) if mol is not None else None
    if protocol == "digress":
        return digress_smiles(symbols, bonds)
    if protocol == "gdss":
        return gdss_smiles(symbols, bonds)
    raise ValueError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")


# --- stability filters -------------------------------------------------------------------------------------------
_FILTER_PATTERNS: dict = {}


def filter_patterns() -> dict:
    """The compiled :data:`STABILITY_FILTERS` (compiled once)."""
    if not _FILTER_PATTERNS:
        for name, smarts in STABILITY_FILTERS.items():
            pattern = Chem.MolFromSmarts(smarts)
            if pattern is None:
                raise ValueError(f"stability filter {name!r} has an unreadable SMARTS {smarts!r}; fix STABILITY_FILTERS")
            _FILTER_PATTERNS[name] = pattern
    return _FILTER_PATTERNS


def failed_filters(mol) -> list[str]:
    """Names of the stability filters whose SMARTS match the sanitised molecule ``mol`` (empty: it passes)."""
    return [name for name, pattern in filter_patterns().items() if mol.HasSubstructMatch(pattern)]
