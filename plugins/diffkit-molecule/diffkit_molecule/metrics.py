"""Molecule metrics. Each figure is defined once, in the docstring of the metric that reports it.

All figures are computed from heavy-atom graphs under the rules of :mod:`diffkit_molecule.chem`
(strict and relaxed validity, canonical SMILES). The denominator "all samples" counts unreadable
samples too (``ctx.extras["n_total"]`` when ``diffkit eval`` read a file with bad lines), so an
unreadable line is an invalid molecule. :func:`evaluate_smiles` gives every figure from SMILES lists.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from diffkit_molecule import chem


# --- analysis shared by the metrics ---------------------------------------------------------------
@dataclass
class Analysis:
    n_total: int              # samples, unreadable ones included
    strict: list              # per readable sample
    relaxed: list
    connected: list
    smiles: list              # canonical SMILES of strictly valid samples, else None

    @property
    def valid_smiles(self) -> list[str]:
        return [s for s in self.smiles if s is not None]


def analyse(graphs: Sequence[tuple], n_total: int | None = None) -> Analysis:
    strict, relaxed, connected, smiles = [], [], [], []
    for symbols, bonds in graphs:
        mol, _ = chem.strict_molecule(symbols, bonds)
        strict.append(mol is not None)
        relaxed.append(mol is not None or chem.relaxed_molecule(symbols, bonds)[0] is not None)
        connected.append(chem.is_connected(bonds))
        smiles.append(chem.canonical(mol) if mol is not None else None)
    return Analysis(max(int(n_total or 0), len(graphs)), strict, relaxed, connected, smiles)


def _graphs(items, space) -> list[tuple]:
    if hasattr(space, "to_graph"):
        return [space.to_graph(x) for x in items]
    out = []
    for x in items:  # the core's MolecularGraph: indices into atom_types
        g = space.validate(x)
        out.append(([space.atom_types[i] for i in g["atoms"].tolist()], g["bonds"].numpy()))
    return out


def _context_analysis(ctx) -> Analysis:
    extras = getattr(ctx, "extras", None)
    key = ("diffkit_molecule.analysis", id(ctx.generated), len(ctx.generated))
    if isinstance(extras, dict) and extras.get("_molecule_key") == key:
        return extras["_molecule_analysis"]
    n_total = (extras or {}).get("n_total") if isinstance(extras, dict) else None
    result = analyse(_graphs(ctx.generated, ctx.space), n_total)
    if isinstance(extras, dict):
        extras["_molecule_key"], extras["_molecule_analysis"] = key, result
    return result


# --- figures -----------------------------------------------------------------------------------------
def validity_figures(a: Analysis) -> dict:
    n = max(a.n_total, 1)
    return {"validity": sum(a.strict) / n, "validity_relaxed": sum(a.relaxed) / n, "connected": sum(a.connected) / n}


def uniqueness_figures(a: Analysis) -> dict:
    valid = a.valid_smiles
    return {"uniqueness": len(set(valid)) / len(valid) if valid else 0.0}


def novelty_figures(a: Analysis, train_smiles: set) -> dict:
    unique = set(a.valid_smiles)
    novel = {s for s in unique if s not in train_smiles}
    return {"novelty": len(novel) / len(unique) if unique else 0.0, "vun": len(novel) / max(a.n_total, 1)}


def _histogram_distance(p: Counter, q: Counter) -> float:
    sp, sq = sum(p.values()), sum(q.values())
    if sp == 0 and sq == 0:
        return 0.0
    if sp == 0 or sq == 0:
        return 1.0
    return 0.5 * sum(abs(p[k] / sp - q[k] / sq) for k in set(p) | set(q))


def _histograms(graphs) -> dict:
    atoms, bonds, valency, sizes = Counter(), Counter(), Counter(), Counter()
    for symbols, b in graphs:
        b = np.asarray(b)
        atoms.update(symbols)
        iu = np.triu_indices(len(symbols), 1)
        bonds.update(int(o) for o in b[iu] if o)
        valency.update(int(v) for v in b.sum(1))
        sizes[len(symbols)] += 1
    return {"atom_types": atoms, "bond_types": bonds, "valency": valency, "size": sizes}


def distribution_figures(graphs, reference_graphs) -> dict:
    g, r = _histograms(graphs), _histograms(reference_graphs)
    return {f"{k}_distance": _histogram_distance(g[k], r[k]) for k in g}


# --- FCD ----------------------------------------------------------------------------------------------
def _fcd_activations(smiles: list[str], batch_size: int = 128) -> np.ndarray:
    import warnings

    import fcd

    model = fcd.load_ref_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fcd.get_predictions(model, list(smiles), batch_size=batch_size, n_jobs=0, device="cpu")


def _moments(act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return act.mean(0).astype(np.float64), np.cov(act.T.astype(np.float64))


def reference_statistics(smiles: list[str], cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ChemNet activations of ``smiles``, cached under
    ``$DIFFKIT_CACHE/molecule/fcd/<sha256 of the SMILES and the fcd version>.safetensors``."""
    import torch
    from safetensors.torch import load_file, save_file

    from diffkit_molecule.data import cache_root

    version = importlib.metadata.version("fcd")
    key = hashlib.sha256(("fcd " + version + "\n" + "\n".join(smiles)).encode()).hexdigest()[:24]
    path = cache_root() / "fcd" / f"{key}.safetensors"
    if cache and path.exists():
        try:
            t = load_file(str(path))
            return t["mu"].numpy(), t["sigma"].numpy()
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed
            pass
    mu, sigma = _moments(_fcd_activations(smiles))
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma)}, str(tmp))
        tmp.replace(path)
    return mu, sigma


def fcd_value(generated_smiles: list[str], reference_smiles: list[str], max_reference: int | None = None, seed: int = 0) -> float:
    """FCD between two lists of canonical SMILES (reference subsampled to ``max_reference`` by a seeded permutation)."""
    import fcd

    if len(generated_smiles) < 2:
        raise ValueError(f"FCD needs at least 2 valid molecules, got {len(generated_smiles)}; draw more samples or train longer")
    ref = list(reference_smiles)
    if len(ref) < 2:
        raise ValueError(f"FCD needs at least 2 reference molecules, got {len(ref)}; use a larger reference split")
    if max_reference is not None and len(ref) > int(max_reference):
        perm = np.random.default_rng(int(seed)).permutation(len(ref))[: int(max_reference)]
        ref = [ref[i] for i in sorted(perm.tolist())]
    mu_r, sigma_r = reference_statistics(ref)
    mu_g, sigma_g = _moments(_fcd_activations(generated_smiles))
    return float(max(fcd.calculate_frechet_distance(mu1=mu_g, sigma1=sigma_g, mu2=mu_r, sigma2=sigma_r), 0.0))


# --- registered metrics -----------------------------------------------------------------------------------
def validity_metric(ctx, **_) -> dict:
    """``validity``: fraction of all samples whose heavy-atom graph, read as a neutral molecule with
    implicit hydrogens, passes full RDKit sanitisation (the whole molecule, fragments included);
    ``validity_relaxed``: fraction passing GDSS's validity without correction (N, O, S may carry one
    extra bond as a +1 formal charge; RDKit's valence check); ``connected``: fraction of all samples
    whose bond graph is a single connected component."""
    return validity_figures(_context_analysis(ctx))


def uniqueness_metric(ctx, **_) -> dict:
    """``uniqueness``: number of distinct canonical SMILES among the strictly valid samples divided by
    the number of strictly valid samples (0 when none is valid)."""
    return uniqueness_figures(_context_analysis(ctx))


def _train_smiles(ctx, train_dataset: dict | None) -> set:
    train = ctx.train
    if train is None and train_dataset:
        from diffkit.registry import load

        spec = dict(train_dataset)
        train = load("datasets", spec["dataset"])(split="train", **spec.get("options", {}))
    if train is None:
        raise ValueError("novelty needs the training set: the evaluation context has none (ctx.train is None); "
                         "give the metric option train_dataset = {dataset = ..., options = {...}} or evaluate through a run that has its dataset")
    smiles = getattr(train, "smiles", None)
    if smiles is not None:
        return set(smiles)
    from diffkit.evaluation import split_items

    items, _ = split_items(train)
    return {s for s in analyse(_graphs(items, getattr(train, "space", ctx.space))).smiles if s is not None}


def novelty_metric(ctx, train_dataset: dict | None = None, **_) -> dict:
    """``novelty``: fraction of the distinct strictly valid molecules (canonical SMILES) that do not occur
    in the training set; ``vun``: number of samples that are valid, unique (first occurrence of their
    canonical SMILES) and novel, divided by all samples."""
    return novelty_figures(_context_analysis(ctx), _train_smiles(ctx, train_dataset))


def distribution_metric(ctx, **_) -> dict:
    """``atom_types_distance``, ``bond_types_distance``, ``valency_distance``, ``size_distance``: total
    variation distance ``½ Σ_k |p_k − q_k|`` between the generated and the reference histograms of,
    respectively, atom elements (over all atoms), bond orders (over bonded pairs), per-atom valency
    (sum of bond orders) and the number of heavy atoms per molecule. All samples count, valid or not."""
    return distribution_figures(_graphs(ctx.generated, ctx.space), _graphs(ctx.reference, ctx.space))


def fcd_metric(ctx, max_reference: int | None = None, seed: int = 0, **_) -> dict:
    """``fcd``: Fréchet ChemNet Distance (Preuer et al. 2018; the ``fcd`` package) between the canonical
    SMILES of the strictly valid samples and of the reference molecules (invalid samples are left out;
    ``max_reference`` subsamples the reference by a seeded permutation); ``fcd_valid_n``: how many
    generated molecules entered it. Small sets bias FCD upwards: compare figures at equal sizes."""
    a = _context_analysis(ctx)
    ref = [s for s in analyse(_graphs(ctx.reference, ctx.space)).smiles if s is not None]
    return {"fcd": fcd_value(a.valid_smiles, ref, max_reference, seed), "fcd_valid_n": len(a.valid_smiles)}


# --- SMILES in, figures out ------------------------------------------------------------------------------------
def _graphs_from_smiles(smiles_list) -> tuple[list, list]:
    graphs, failures = [], []
    for i, s in enumerate(smiles_list):
        try:
            symbols, bonds, _ = chem.smiles_to_graph(s, allow_invalid=True)
            graphs.append((symbols, bonds))
        except chem.ChemError as exc:
            failures.append({"index": i, "smiles": str(s)[:120], "reason": str(exc)})
    return graphs, failures


def canonical_training_smiles(smiles_list) -> set:
    """Canonical SMILES (graph rule) of training molecules; unreadable or invalid entries are skipped."""
    graphs, _ = _graphs_from_smiles(smiles_list)
    return {s for s in analyse(graphs).smiles if s is not None}


def evaluate_smiles(smiles_list: Sequence[str], reference_smiles: Sequence[str], train_smiles: Sequence[str], *, fcd: bool = True,
                    max_reference: int | None = None, seed: int = 0) -> dict:
    """Every molecule figure for generated SMILES against reference and training SMILES.

    Generated SMILES that RDKit cannot parse count as invalid samples (in every denominator) and are
    listed under ``unreadable`` with the reason; SMILES that parse but break valence rules are read as
    graphs and scored as invalid molecules. Formal charges written in a SMILES are ignored (graphs carry
    none), so every sample is judged by the same graph rules as sampled graphs. Figures: see
    :func:`validity_metric`, :func:`uniqueness_metric`, :func:`novelty_metric`,
    :func:`distribution_metric` and :func:`fcd_metric` (``fcd=False`` skips FCD)."""
    graphs, failures = _graphs_from_smiles(list(smiles_list))
    ref_graphs, ref_failures = _graphs_from_smiles(list(reference_smiles))
    a = analyse(graphs, len(smiles_list))
    figures = {**validity_figures(a), **uniqueness_figures(a), **novelty_figures(a, canonical_training_smiles(train_smiles))}
    figures.update(distribution_figures(graphs, ref_graphs) if graphs and ref_graphs else {})
    if fcd:
        ref_valid = [s for s in analyse(ref_graphs).smiles if s is not None]
        try:
            figures["fcd"] = fcd_value(a.valid_smiles, ref_valid, max_reference, seed)
        except ValueError as exc:
            figures["fcd_error"] = str(exc)
    return {"n": len(smiles_list), "n_unreadable": len(failures), "unreadable": failures, "n_reference": len(ref_graphs),
            "reference_unreadable": len(ref_failures), "figures": figures}
