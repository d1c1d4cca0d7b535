"""Datasets: QM9 (from the ``qm9pack`` package's CSV files) and any SMILES file.

Processing rules (both datasets):

- each SMILES is parsed and sanitised by RDKit, hydrogens removed, bonds kekulised (single, double,
  triple) — see :mod:`diffkit_molecule.chem`;
- **formal charges**: graphs carry no charges, so molecules with a charged atom are dropped and counted
  (QM9: 580 zwitterions such as ``[NH3+]CCC([O-])=O`` out of 130,831). Every kept molecule therefore
  round-trips exactly: its graph read as a neutral molecule sanitises to the same canonical SMILES
  (molecules for which this fails are dropped and counted too: ``roundtrip_mismatch``);
- the split is a permutation of the kept molecules (in source order) by ``torch.randperm`` under
  ``seed`` (default 0): the first ``n_test = round(0.1 N)`` are the test split, the next ``n_val`` the
  validation split and the rest (capped at 100,000 for QM9, as DiGress and GDSS use it) the training
  split. Full QM9: 100,000 train / 17,226 val / 13,025 test;
- processed graphs are cached under ``$DIFFKIT_CACHE/molecule`` (default ``~/.cache/diffkit``) as
  ``graphs.safetensors`` + ``smiles.txt`` + ``info.json``, in a folder keyed by a hash of the source
  (package version and file sizes, or the SMILES file's content) and the processing settings.

Items are the space's elements ``{"atoms": LongTensor n, "bonds": LongTensor n×n}``;
``dataset.to_pyg(i)`` gives a torch-geometric ``Data`` (one-hot ``x``, both-direction ``edge_index``,
one-hot ``edge_attr`` over single/double/triple, ``smiles``), ``dataset.smiles`` the canonical SMILES and
``dataset.dataset_smiles`` those of every split of the source (for novelty against the whole dataset).
"""
from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from diffkit.spaces.base import SpaceError

from diffkit_molecule import chem
from diffkit_molecule.space import QM9_ATOMS, MoleculeSpace, OneHotMoleculeSpace

PROCESSING_VERSION = 1
QM9_TRAIN = 100_000
QM9_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
SPLITS = ("train", "val", "test")
ENCODINGS = {"categorical": MoleculeSpace, "onehot": OneHotMoleculeSpace}


def cache_root() -> Path:
    return Path(os.environ.get("DIFFKIT_CACHE") or "~/.cache/diffkit").expanduser() / "molecule"


class PackedGraphDataset(Dataset):
    """Molecular graphs packed in padded tensors: ``atoms`` N×w (indices, -1 beyond a graph), ``bonds`` N×w×w
    (orders, 0 beyond a graph), ``sizes`` N. The whole-dataset paths (``check_packed``, ``space_statistics``,
    ``collate_all``) work on these tensors in one pass instead of one ``space.validate``/``collate`` per
    item; subclasses add their fields (:class:`MoleculeDataset`, :class:`diffkit_molecule.data3d.Molecule3DDataset`)."""

    def __init__(self, atoms: torch.Tensor, bonds: torch.Tensor, sizes: torch.Tensor, smiles: list[str], space, info: dict):
        self.atoms, self.bonds, self.sizes = atoms, bonds, sizes
        self.smiles, self.space, self.info = smiles, space, info

    def __len__(self) -> int:
        return int(self.sizes.numel())

    def _index(self, i: int) -> tuple[int, int]:
        if i < 0:
            i += len(self)
        return i, int(self.sizes[i])

    def _graph_rules(self) -> list[tuple[torch.Tensor, str]]:
        """``(bad graphs, rule)`` pairs of ``MolecularGraph.validate``'s rules, on the packed tensors."""
        atoms, bonds, sizes = self.atoms.long(), self.bonds.long(), self.sizes.long()
        A, K, M = len(self.space.atom_types), len(self.space.bond_types), self.space.max_atoms
        real = self.real_atoms()
        pair = real[:, :, None] & real[:, None, :]
        return [
            ((sizes < 1) | (sizes > M), f"a graph needs 1..{M} atoms (max_atoms={M})"),
            ((real & ((atoms < 0) | (atoms >= A))).any(1), f"atom indices must lie in 0..{A - 1}"),
            ((pair & ((bonds < 0) | (bonds >= K))).flatten(1).any(1), f"bond orders must lie in 0..{K - 1}"),
            ((bonds != bonds.transpose(1, 2)).flatten(1).any(1), "bonds must be symmetric"),
            (bonds.diagonal(dim1=1, dim2=2).ne(0).any(1), "an atom cannot bond to itself"),
            ((~pair & (bonds != 0)).flatten(1).any(1), "bonds beyond a graph's atoms must be 0"),
        ]

    def real_atoms(self, width: int | None = None) -> torch.Tensor:
        """N×width boolean: the atom slots each graph uses."""
        width = self.atoms.shape[1] if width is None else width
        return torch.arange(width) < self.sizes.long()[:, None]

    def check_packed(self) -> None:
        """Validate every graph at once with the rules of ``space.validate``; the error names the first bad graph."""
        for bad, rule in self._graph_rules():
            if bad.any():
                i = int(bad.nonzero()[0])
                raise SpaceError(f"{type(self.space).__name__}: graph {i} ({self.smiles[i]!r}) breaks a rule: {rule}; "
                                 f"delete the cached folder under {cache_root()} to rebuild the data")

    def _statistics(self) -> dict:
        """``MolecularGraph.fit`` of every graph from the packed tensors (bincounts, no loop over items)."""
        atoms, bonds, sizes = self.atoms.long(), self.bonds.long(), self.sizes.long()
        A, K, M = len(self.space.atom_types), len(self.space.bond_types), self.space.max_atoms
        if sizes.numel() == 0:
            raise SpaceError("MolecularGraph.fit: no graphs given")
        width = atoms.shape[1]
        real = self.real_atoms()
        upper = torch.ones(width, width, dtype=torch.bool).triu(1)
        pairs = real[:, :, None] & real[:, None, :] & upper  # unordered pairs of real atoms, as space.fit counts them
        size_counts = torch.bincount(sizes, minlength=M + 1).float()
        atom_counts = torch.bincount(atoms[real], minlength=A).float()
        bond_counts = torch.bincount(bonds[pairs], minlength=K).float()
        return {"sizes": (size_counts / size_counts.sum()).tolist(),
                "frequencies": {"atoms": (atom_counts / atom_counts.sum().clamp_min(1)).tolist(), "bonds": (bond_counts / bond_counts.sum().clamp_min(1)).tolist()}}

    def space_statistics(self) -> dict:
        """``space.fit`` of every element, computed on the packed tensors and kept in the cache folder beside
        the processed graphs (``info["stats_path"]``), keyed by split and selection."""
        path = self.info.get("stats_path")
        if path and Path(path).exists():
            try:
                return json.loads(Path(path).read_text())
            except (OSError, ValueError):
                pass  # unreadable: recomputed below
        self.check_packed()
        stats = self._statistics()
        if path:
            try:
                Path(path).write_text(json.dumps(stats))
            except OSError:
                pass  # a read-only cache: computed again next time (well under a second)
        return stats

    def _one_hot_graphs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(atoms B×n×A, bonds B×n×n×K, mask B×n)`` as ``MolecularGraph.collate`` encodes them, n the largest
        graph: padded atoms are zero rows, padded pairs and the diagonal hold the "none" bond."""
        n = int(self.sizes.max())
        A, K = len(self.space.atom_types), len(self.space.bond_types)
        real = self.real_atoms(n)
        atoms = torch.nn.functional.one_hot(self.atoms[:, :n].long().clamp_min(0), A).float() * real[..., None]
        bonds = torch.nn.functional.one_hot(self.bonds[:, :n, :n].long(), K).float()
        return atoms, bonds, real.float()


class MoleculeDataset(PackedGraphDataset):
    """Molecular graphs packed in tensors; ``space`` is the molecule space they belong to."""

    def __init__(self, atoms: torch.Tensor, bonds: torch.Tensor, sizes: torch.Tensor, smiles: list[str], space: MoleculeSpace, info: dict,
                 dataset_smiles: list[str] | None = None):
        super().__init__(atoms, bonds, sizes, smiles, space, info)
        self.dataset_smiles = smiles if dataset_smiles is None else dataset_smiles  # every split's molecules (novelty against all of them)

    def __getitem__(self, i: int) -> dict:
        i, n = self._index(i)
        return {"atoms": self.atoms[i, :n].long(), "bonds": self.bonds[i, :n, :n].long()}

    def to_pyg(self, i: int):
        """Item ``i`` as a torch-geometric ``Data`` object."""
        from torch_geometric.data import Data

        g = self[i]
        src, dst = torch.nonzero(g["bonds"], as_tuple=True)
        order = g["bonds"][src, dst]
        return Data(
            x=torch.nn.functional.one_hot(g["atoms"], len(self.space.atom_types)).float(),
            edge_index=torch.stack([src, dst]),
            edge_attr=torch.nn.functional.one_hot(order - 1, 3).float(),
            smiles=self.smiles[i], num_nodes=int(g["atoms"].numel()),
        )

    def pyg(self) -> list:
        return [self.to_pyg(i) for i in range(len(self))]

    def collate_all(self) -> tuple:
        """``(space.collate(every element), None)`` built from the packed tensors in one pass (no labels)."""
        from diffkit.state import State, field_mask

        self.check_packed()
        if self.space.positions:  # packed data carries no positions; the per-item path says so
            raise SpaceError("MoleculeDataset holds no 3-D positions; build the space with positions=False")
        atoms, bonds, mask = self._one_hot_graphs()
        state = State(atoms=atoms, bonds=bonds, mask=mask)
        if isinstance(self.space, OneHotMoleculeSpace):  # the relaxation of OneHotMoleculeSpace.collate
            for name, layout in (("atoms", "node"), ("bonds", "pair")):
                m = field_mask(state, layout).to(state[name].dtype).unsqueeze(-1)
                state[name] = (2.0 * state[name] - 1.0) * m
        return state, None


# --- processing -----------------------------------------------------------------------------------------
def process_smiles(smiles_iter, atom_types, max_atoms, *, desc: str | None = None, total: int | None = None) -> tuple[list, dict]:
    """Graphs of ``(line number, SMILES)`` pairs under the module's rules; returns ``(graphs, summary)``.
    With ``desc``, a progress bar of that name counts the SMILES read (out of ``total`` when known).

    ``atom_types``/``max_atoms`` of None accept any element/size. Atoms outside a given vocabulary raise
    SpaceError listing them (never silently dropped)."""
    from diffkit.progress import progress_bar

    graphs, counts, examples, unknown = [], Counter(), [], Counter()
    bar = progress_bar(total, desc, enabled=desc is not None)
    for line_no, text in smiles_iter:
        counts["read"] += 1
        bar.update(1)
        try:
            mol = chem.mol_from_smiles(text)
            symbols, bonds, charges = chem.mol_to_graph(mol)
        except chem.ChemError as exc:
            counts["invalid"] += 1
            if len(examples) < 5:
                examples.append({"line": line_no, "smiles": str(text).strip()[:80], "reason": str(exc)})
            continue
        if any(charges):
            counts["charged_dropped"] += 1
            continue
        if atom_types is not None:
            bad = {s for s in symbols if s not in atom_types}
            if bad:
                unknown.update(bad)
                continue
        if max_atoms is not None and len(symbols) > max_atoms:
            counts["too_large_dropped"] += 1
            continue
        strict, _ = chem.strict_molecule(symbols, bonds)
        if strict is None or chem.canonical(strict) != chem.canonical(mol):
            counts["roundtrip_mismatch"] += 1
            continue
        graphs.append((symbols, bonds, chem.canonical(strict)))
    bar.close()
    if unknown:
        raise SpaceError(f"atoms {sorted(unknown)} are outside the vocabulary {list(atom_types)}; add them to atom_types (e.g. atom_types={sorted(set(atom_types) | set(unknown))}) or remove those molecules")
    counts["kept"] = len(graphs)
    return graphs, {"counts": dict(counts), "invalid_examples": examples}


def _pack(graphs, atom_types, max_atoms):
    N = len(graphs)
    atoms = torch.full((N, max_atoms), -1, dtype=torch.int8)
    bonds = torch.zeros((N, max_atoms, max_atoms), dtype=torch.int8)
    sizes = torch.zeros(N, dtype=torch.int16)
    index = {s: k for k, s in enumerate(atom_types)}
    for i, (symbols, b, _) in enumerate(graphs):
        n = len(symbols)
        atoms[i, :n] = torch.tensor([index[s] for s in symbols], dtype=torch.int8)
        bonds[i, :n, :n] = torch.as_tensor(b, dtype=torch.int8)
        sizes[i] = n
    return {"atoms": atoms, "bonds": bonds, "sizes": sizes}


def _cached(key_material: dict, build) -> tuple[dict, list[str], dict]:
    """Load ``(tensors, smiles, info)`` from the cache folder keyed by ``key_material``, building it once."""
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_root() / f"{key_material['source_name']}-{key}"
    if (folder / "info.json").exists():
        try:
            info = json.loads((folder / "info.json").read_text())
            tensors = load_file(str(folder / "graphs.safetensors"))
            smiles = (folder / "smiles.txt").read_text().splitlines()
            if len(smiles) == int(tensors["sizes"].numel()):
                return tensors, smiles, {**info, "folder": str(folder)}
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
            pass
    tensors, smiles, info = build()
    info = {**info, "settings": key_material}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "graphs.safetensors"))
        (tmp / "smiles.txt").write_text("".join(s + "\n" for s in smiles))
        (tmp / "info.json").write_text(json.dumps(info, indent=1))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "info.json").exists():
            raise
        return tensors, smiles, info
    return tensors, smiles, {**info, "folder": str(folder)}


def split_indices(n: int, seed: int, max_train: int | None = None, test_fraction: float = 0.1, val_fraction: float | None = None) -> dict:
    """Deterministic split of ``n`` items: a ``torch.randperm`` under ``seed``; test first, then val, then train."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_test = int(round(test_fraction * n))
    if val_fraction is not None:
        n_val = int(round(val_fraction * n))
        n_train = n - n_test - n_val
    else:  # QM9: train capped, validation = the rest
        n_train = min(max_train or n, n - 2 * n_test)
        n_val = n - n_test - n_train
    if n >= 3:
        n_test, n_val = max(n_test, 1), max(n_val, 1)
        n_train = n - n_test - n_val
    out = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:n_test + n_val + n_train]}
    return {k: v.sort().values for k, v in out.items()}


def with_stats_path(info: dict, idx: torch.Tensor, space) -> dict:
    """``info`` with ``stats_path``: fitted statistics live beside the cached graphs, one file per selection
    of them (keyed by the selected rows and the space's config)."""
    if not info.get("folder"):
        return info
    digest = hashlib.sha256(idx.long().numpy().tobytes())
    digest.update(json.dumps(space.config(), sort_keys=True, default=str).encode())
    return {**info, "stats_path": str(Path(info["folder"]) / f"stats-{digest.hexdigest()[:16]}.json")}


def _select(tensors, smiles, idx, space, info, split) -> MoleculeDataset:
    idx = idx.long()
    info = with_stats_path({**info, "split": split, "split_size": int(idx.numel())}, idx, space)
    return MoleculeDataset(tensors["atoms"][idx], tensors["bonds"][idx], tensors["sizes"][idx].long(), [smiles[i] for i in idx.tolist()], space, info,
                           dataset_smiles=smiles)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")


def _space(encoding: str, atom_types, max_atoms):
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; use 'categorical' (categorical processes) or 'onehot' (Gaussian processes on one-hot features)")
    return ENCODINGS[encoding](atom_types=list(atom_types), max_atoms=int(max_atoms))


# --- QM9 --------------------------------------------------------------------------------------------------
def qm9_files() -> list[Path]:
    """The CSV files shipped in the qm9pack distribution (located without importing qm9pack, whose
    import fails on setuptools without pkg_resources)."""
    try:
        dist = importlib.metadata.distribution("qm9pack")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("the qm9pack package is not installed; pip install qm9pack (it ships QM9 as CSV files)") from None
    found = {Path(str(f)).name: Path(str(f.locate())) for f in (dist.files or []) if str(f).endswith(".csv")}
    missing = [p for p in QM9_PARTS if p not in found or not found[p].exists()]
    if missing:
        raise FileNotFoundError(f"qm9pack {dist.version} lacks {missing}; reinstall qm9pack")
    return [found[p] for p in QM9_PARTS]


def _count_rows(files) -> int:
    """Data rows in the CSV files (lines less each header), for the progress bar's total."""
    total = 0
    for path in files:
        with open(path, "rb") as fh:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) - 1
    return total


def qm9_csv_rows(files, limit, columns):
    """``(row number from 1, {column: text})`` for the first ``limit`` data rows of qm9pack's CSV files
    (every row when ``limit`` is None), reading only ``columns``."""
    csv.field_size_limit(1 << 30)
    k = 0
    for path in files:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            col = {name: header.index(name) for name in columns}
            for row in reader:
                if limit is not None and k >= limit:
                    return
                k += 1
                yield k, {name: row[i] for name, i in col.items()}


def _qm9_rows(files, limit):
    for k, row in qm9_csv_rows(files, limit, ("SMILES",)):
        yield k, row["SMILES"]


def qm9(split: str = "train", seed: int = 0, source_limit: int | None = None, subset: int | None = None, encoding: str = "categorical") -> MoleculeDataset:
    """QM9 heavy-atom graphs (C, N, O, F; at most 9 atoms) from qm9pack; rules in the module docstring.

    ``source_limit`` processes only the first rows of the source (the split is then made over those;
    for tests), ``subset`` keeps the first ``subset`` items of the split, ``encoding`` chooses the space
    (``categorical``: ``molecule``; ``onehot``: ``molecule-onehot``, the continuous relaxation)."""
    _check_split(split)
    files = qm9_files()
    version = importlib.metadata.version("qm9pack")
    material = {"source_name": "qm9", "qm9pack": version, "sizes": [p.stat().st_size for p in files], "limit": source_limit,
                "atoms": list(QM9_ATOMS), "max_atoms": 9, "charged": "drop", "version": PROCESSING_VERSION}

    def build():
        rows = _count_rows(files)
        total = rows if source_limit is None else min(rows, int(source_limit))
        print(f"diffkit-molecule: preparing QM9 once ({total:,} SMILES from qm9pack {version}); cached in {cache_root()}", file=sys.stderr, flush=True)
        graphs, summary = process_smiles(_qm9_rows(files, source_limit), QM9_ATOMS, 9, desc="preparing QM9", total=total)
        return _pack(graphs, QM9_ATOMS, 9), [g[2] for g in graphs], {"source": f"qm9pack {version}", **summary}

    tensors, smiles, info = _cached(material, build)
    idx = split_indices(len(smiles), seed, max_train=QM9_TRAIN)[split]
    if subset is not None:
        idx = idx[: int(subset)]
    return _select(tensors, smiles, idx, _space(encoding, QM9_ATOMS, 9), {**info, "seed": seed}, split)


# --- SMILES files -------------------------------------------------------------------------------------------
def smiles_file(split: str = "train", path: str | None = None, atom_types: list | None = None, max_atoms: int | None = None, seed: int = 0,
                val_fraction: float = 0.1, test_fraction: float = 0.1, subset: int | None = None, encoding: str = "categorical") -> MoleculeDataset:
    """Molecules from a text file with one SMILES per line (the first token of each line).

    Unparsable lines are counted, skipped and summarised in one warning (never fatal); charged molecules
    are dropped and counted. ``atom_types`` fixes the vocabulary (atoms outside it raise SpaceError
    listing them); without it the vocabulary is every element in the file, most frequent first.
    ``max_atoms`` defaults to the largest molecule. Split: ``test_fraction``/``val_fraction`` of a
    seeded permutation, the rest is training data."""
    _check_split(split)
    if path is None:
        raise ValueError("smiles-file needs path='molecules.smi' (a text file with one SMILES per line)")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"SMILES file {path} does not exist; pass path= a text file with one SMILES per line")
    data = path.read_bytes()
    material = {"source_name": "smiles-" + "".join(c if c.isalnum() else "_" for c in path.stem)[:40], "sha256": hashlib.sha256(data).hexdigest(),
                "atoms": None if atom_types is None else list(atom_types), "max_atoms": max_atoms, "charged": "drop", "version": PROCESSING_VERSION}

    def build():
        lines = [(k, line) for k, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")]
        graphs, summary = process_smiles(lines, None if atom_types is None else tuple(atom_types), max_atoms, desc=f"reading {path.name}", total=len(lines))
        if not graphs:
            raise ValueError(f"no usable molecule in {path} ({summary['counts']}); check that it holds one SMILES per line")
        if atom_types is None:
            counts = Counter(s for g in graphs for s in g[0])
            vocab = sorted(counts, key=lambda s: (-counts[s], s))
        else:
            vocab = list(atom_types)
        size = max_atoms or max(len(g[0]) for g in graphs)
        return _pack(graphs, vocab, size), [g[2] for g in graphs], {"source": str(path), "atom_types": vocab, "max_atoms": size, **summary}

    tensors, smiles, info = _cached(material, build)
    c = info["counts"]
    skipped = c.get("invalid", 0) + c.get("charged_dropped", 0) + c.get("too_large_dropped", 0) + c.get("roundtrip_mismatch", 0)
    if skipped:
        first = info["invalid_examples"][0] if info["invalid_examples"] else None
        detail = f"; first unreadable: line {first['line']} {first['smiles']!r} ({first['reason']})" if first else ""
        warnings.warn(f"smiles-file: skipped {skipped} of {c['read']} lines of {path} ({c.get('invalid', 0)} unreadable, {c.get('charged_dropped', 0)} charged, "
                      f"{c.get('too_large_dropped', 0)} too large, {c.get('roundtrip_mismatch', 0)} not round-tripping){detail}", stacklevel=2)
    idx = split_indices(len(smiles), seed, test_fraction=test_fraction, val_fraction=val_fraction)[split]
    if subset is not None:
        idx = idx[: int(subset)]
    return _select(tensors, smiles, idx, _space(encoding, info["atom_types"], info["max_atoms"]), {**info, "seed": seed}, split)


def counts_summary(dataset: MoleculeDataset) -> str:
    c = dataset.info.get("counts", {})
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))


__all__ = ["MoleculeDataset", "PackedGraphDataset", "cache_root", "counts_summary", "process_smiles", "qm9", "qm9_files", "smiles_file", "split_indices"]

