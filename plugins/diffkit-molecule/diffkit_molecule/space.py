"""Molecule spaces: the core's MolecularGraph with chemistry (RDKit molecules, SMILES, drawings).

``molecule``: atoms and bonds are categorical fields (one-hot), diffused by categorical processes
(``categorical-marginal`` in the recipes).

``molecule-onehot``: the continuous relaxation. The same graphs are encoded as real-valued one-hot
features ``x = 2·onehot − 1`` (values ±1, zero at padded nodes, padded pairs and the diagonal), so
Gaussian processes and every Gaussian sampler (ancestral, DDIM, DPM-Solver, Heun, Langevin, PC)
apply to graphs. Bond noise must be symmetric: use the ``symmetric-gaussian`` process for ``bonds``
(it mirrors the upper triangle of the noise and symmetrises predictions). Decoding takes the argmax
of the atom features and of the symmetrised bond features, as for the categorical space.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from diffkit.spaces.base import FieldSpec, SpaceError, text_lines
from diffkit.spaces.graph import BOND_TYPES, MolecularGraph
from diffkit.state import State, field_mask

from diffkit_molecule import chem

QM9_ATOMS = ("C", "N", "O", "F")


class MoleculeSpace(MolecularGraph):
    """Heavy-atom molecular graphs over ``atom_types`` with kekulé bond orders (none/single/double/triple).

    Elements are the core's graph dicts ``{"atoms": n indices, "bonds": n×n orders}``. Beyond the
    core, :meth:`from_smiles` builds elements, :meth:`to_molecules` / :meth:`to_smiles` turn them into
    RDKit molecules (rules in :mod:`diffkit_molecule.chem`), :meth:`write` writes ``samples.smi`` (one
    SMILES per line, in sample order), ``molecules.png`` (a grid drawing) and ``graphs.json`` (exact
    graphs), and :meth:`read` reads a SMILES file back.
    """

    name = "molecule"

    def __init__(self, atom_types: Sequence[str] = QM9_ATOMS, max_atoms: int = 9, positions: bool = False, bond_types: Sequence[str] = BOND_TYPES):
        if tuple(bond_types) != BOND_TYPES:
            raise SpaceError(f"{type(self).__name__}: bond_types must be {list(BOND_TYPES)} (kekulé bond orders); got {list(bond_types)}")
        super().__init__(atom_types, max_atoms, positions, bond_types)

    # --- constraints a sampler may keep ---------------------------------------------------------
    def constraints(self) -> dict[str, str]:
        """``valence`` (:mod:`diffkit_molecule.constraints`) for categorical atoms and bonds without formal charges;
        none for the continuous relaxation (its fields are real codes) or a space whose atoms carry charges."""
        from diffkit_molecule.constraints import largest_valence

        if self.field("atoms").kind != "categorical" or self.field("bonds").kind != "categorical" or any(f.name == "charges" for f in self.fields):
            return {}
        try:
            caps = ", ".join(f"{a} {largest_valence(a)}" for a in self.atom_types)
        except SpaceError:  # an atom type RDKit gives no valence: the rule cannot be stated
            return {}
        return {"valence": f"no sampler move may push an atom's bond-order sum past its largest neutral valence ({caps})"}

    def constraint(self, name: str):
        if name == "valence" and name in self.constraints():
            from diffkit_molecule.constraints import ValenceConstraint

            return ValenceConstraint(self.atom_types, self.bond_types)
        return super().constraint(name)

    # --- chemistry -----------------------------------------------------------------------------
    def from_smiles(self, smiles: str, allow_invalid: bool = False) -> dict:
        """The element of a SMILES string (formal charges are dropped: graphs carry none).

        Raises ChemError for unreadable SMILES and SpaceError for atoms outside the vocabulary or too many atoms."""
        symbols, bonds, _ = chem.smiles_to_graph(smiles, allow_invalid=allow_invalid)
        unknown = sorted({s for s in symbols if s not in self.atom_types})
        if unknown:
            raise SpaceError(f"SMILES {smiles!r} has atom(s) {unknown} outside the vocabulary {list(self.atom_types)}; add them to atom_types or filter these molecules")
        if len(symbols) > self.max_atoms:
            raise SpaceError(f"SMILES {smiles!r} has {len(symbols)} heavy atoms, more than max_atoms={self.max_atoms}; raise max_atoms or drop large molecules")
        return {"atoms": torch.tensor([self.atom_types.index(s) for s in symbols]), "bonds": torch.as_tensor(bonds)}

    def to_graph(self, item: Any) -> tuple[list[str], np.ndarray]:
        """``(symbols, bond-order matrix)`` of an element."""
        g = self.validate(item)
        return [self.atom_types[i] for i in g["atoms"].tolist()], g["bonds"].numpy()

    def to_molecules(self, items: Sequence[Any]) -> list:
        """RDKit molecules (see :func:`chem.display_molecule`): ``[(mol, "valid"|"relaxed"|"invalid"), ...]``."""
        return [chem.display_molecule(*self.to_graph(x)) for x in items]

    def to_smiles(self, items: Sequence[Any]) -> list[str]:
        """One SMILES per element: canonical for strictly valid graphs, with +1 charges for relaxed-valid
        ones, and the raw (unsanitisable) neutral graph otherwise."""
        return [chem.canonical(m) if status == "valid" else chem.any_smiles(m) for m, status in self.to_molecules(items)]

    def natural(self, items: Sequence[Any]) -> list:
        """RDKit molecules: sanitised when the graph is valid (with +1 charges where only the relaxed rule
        passes), the raw unsanitised graph otherwise; read ``diffkit_molecule.chem`` to tell them apart."""
        return [m for m, _ in self.to_molecules(items)]

    # --- natural format ---------------------------------------------------------------------------
    def write(self, items: list, out: Path, labels=None, grid: int = 48, **kwargs) -> list[Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        mols = self.to_molecules(items)
        smiles = [chem.canonical(m) if s == "valid" else chem.any_smiles(m) for m, s in mols]
        smi = out / "samples.smi"
        smi.write_text("".join(s + "\n" for s in smiles))
        paths = [smi]
        png = draw_grid([m for m, _ in mols[:grid]], [s for _, s in mols[:grid]], out / "molecules.png")
        if png is not None:
            paths.append(png)
        paths += MolecularGraph.write(self, items, out)
        return paths

    def read(self, path: Path) -> tuple[list, list[dict]]:
        """Elements from a SMILES file (one per line; a folder means its ``samples.smi``). Lines that
        RDKit cannot parse, or whose atoms are outside the vocabulary, are failures with a reason;
        SMILES that parse but are chemically invalid are kept (they score as invalid molecules)."""
        path = Path(path)
        if path.is_dir():
            path = path / "samples.smi"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass a SMILES file (one molecule per line) or a folder holding samples.smi")
        lines, failures = text_lines(path)  # a line that is not UTF-8 is a failure, counted like an unparsable one
        items = []
        for k, line in lines:
            try:
                items.append(self.from_smiles(line, allow_invalid=True))
            except (chem.ChemError, SpaceError) as exc:
                failures.append({"item": f"line {k}: {line.strip()[:80]}", "reason": str(exc)})
        return items, failures


class OneHotMoleculeSpace(MoleculeSpace):
    """The continuous relaxation of :class:`MoleculeSpace`: fields are real one-hot codes ``2·onehot − 1``
    (zero on padding and on the bond diagonal), diffused by Gaussian processes; decode takes the argmax."""

    name = "molecule-onehot"

    def __init__(self, atom_types: Sequence[str] = QM9_ATOMS, max_atoms: int = 9, positions: bool = False, bond_types: Sequence[str] = BOND_TYPES):
        super().__init__(atom_types, max_atoms, positions, bond_types)
        fields = [
            FieldSpec("atoms", kind="continuous", layout="node", num_classes=len(self.atom_types)),
            FieldSpec("bonds", kind="continuous", layout="pair", num_classes=len(self.bond_types), symmetric=True),
        ]
        if self.positions:
            fields.append(FieldSpec("pos", kind="continuous", layout="node", zero_mean=True))
        self.fields = tuple(fields)

    def collate(self, items: Sequence[Any], *, train: bool = False, generator=None) -> State:
        state = super().collate(items, train=train, generator=generator)
        for name, layout in (("atoms", "node"), ("bonds", "pair")):
            m = field_mask(state, layout).to(state[name].dtype).unsqueeze(-1)
            state[name] = (2.0 * state[name] - 1.0) * m
        return state


def draw_grid(mols: list, statuses: list[str], path: Path, per_row: int = 8, size: int = 200) -> Path | None:
    """A PNG grid of molecule drawings (legend: the status of each); None when nothing can be drawn."""
    if not mols:
        return None
    from rdkit.Chem import Draw

    drawable, legends = [], []
    for m, status in zip(mols, statuses):
        try:
            prepared = Draw.rdMolDraw2D.PrepareMolForDrawing(m, kekulize=False)
            Draw.MolToImage(prepared, size=(size, size))  # depiction can fail on odd graphs (coincident atoms)
        except Exception:  # noqa: BLE001 - an undrawable (invalid) molecule gets an empty cell
            prepared, status = chem.Chem.Mol(), f"{status} (undrawable)"
        drawable.append(prepared)
        legends.append(status)
    try:
        image = Draw.MolsToGridImage(drawable, molsPerRow=per_row, subImgSize=(size, size), legends=legends)
    except Exception:  # noqa: BLE001 - the SMILES file is the result; the picture is a convenience
        return None
    path = Path(path)
    if hasattr(image, "save"):
        image.save(str(path))
    else:  # some RDKit builds return PNG bytes
        path.write_bytes(image.data if hasattr(image, "data") else bytes(image))
    return path
