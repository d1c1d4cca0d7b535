"""Molecule metrics. Each figure is defined once, in the docstring of the metric that reports it.

All figures are computed from heavy-atom graphs under the rules of :mod:`diffkit_molecule.chem`
(strict and relaxed validity, canonical SMILES, the ``strict``/``digress``/``gdss`` protocols, the
stability filters). The denominator "all samples" counts unreadable samples too
(``ctx.extras["n_total"]`` when ``diffkit eval`` read a file with bad lines), so an unreadable line is
an invalid molecule. Figures under the DiGress and GDSS protocols carry the suffix ``_digress``/``_gdss``;
the unsuffixed ones are the strict whole-molecule protocol. FCD and NSPDK come with a floor: the same
statistic for as many real training molecules against the same reference. :func:`evaluate_smiles`
gives every figure from SMILES lists; docs/metrics.md compares the protocols with the papers'.
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
PROTOCOLS = chem.PROTOCOLS
SUFFIX = {"strict": "", "digress": "_digress", "gdss": "_gdss"}
"""Figure-name suffix of each protocol: the strict whole-molecule figures keep the plain names."""


@dataclass
class Analysis:
    n_total: int              # samples, unreadable ones included
    strict: list              # per readable sample
    relaxed: list
    connected: list
    smiles: list              # canonical SMILES of strictly valid samples, else None
    protocol_smiles: dict     # protocol -> per readable sample, the SMILES that protocol compares (or None)

    @property
    def valid_smiles(self) -> list[str]:
        return [s for s in self.smiles if s is not None]

    def compared(self, protocol: str) -> list[str]:
        """The SMILES a protocol compares, one per sample valid under it."""
        return [s for s in self.protocol_smiles[protocol] if s is not None]


def analyse(graphs: Sequence[tuple], n_total: int | None = None, protocols: bool = True) -> Analysis:
    """Per-sample validity, connectivity and the SMILES each protocol compares (``protocols=False``: the
    strict protocol only, for reference and training molecules)."""
    strict, relaxed, connected, smiles = [], [], [], []
    per_protocol = {p: [] for p in PROTOCOLS}
    for symbols, bonds in graphs:
        mol, _ = chem.strict_molecule(symbols, bonds)
        strict.append(mol is not None)
        relaxed.append(mol is not None or chem.relaxed_molecule(symbols, bonds)[0] is not None)
        connected.append(chem.is_connected(bonds))
        smiles.append(chem.canonical(mol) if mol is not None else None)
        per_protocol["strict"].append(smiles[-1])
        if protocols:
            per_protocol["digress"].append(chem.digress_smiles(symbols, bonds))
            per_protocol["gdss"].append(chem.gdss_smiles(symbols, bonds) if relaxed[-1] else None)
    return Analysis(max(int(n_total or 0), len(graphs)), strict, relaxed, connected, smiles, per_protocol)


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
    return {"validity": sum(a.strict) / n, "validity_relaxed": sum(a.relaxed) / n, "connected": sum(a.connected) / n,
            "valid_connected": sum(v and c for v, c in zip(a.strict, a.connected)) / n}


def uniqueness_figures(a: Analysis) -> dict:
    out = {}
    for p in PROTOCOLS:
        compared = a.compared(p)
        out["uniqueness" + SUFFIX[p]] = len(set(compared)) / len(compared) if compared else 0.0
    return out


def novelty_figures(a: Analysis, train_smiles: set, dataset_smiles: set | None = None) -> dict:
    """Novelty and V.U.N. of every protocol against ``train_smiles`` and, when given, ``dataset_smiles``."""
    out = {}
    against = {"": train_smiles} if dataset_smiles is None else {"": train_smiles, "_all_splits": dataset_smiles}
    for p in PROTOCOLS:
        unique = set(a.compared(p))
        for tag, known in against.items():
            novel = len(unique - known)
            out["novelty" + tag + SUFFIX[p]] = novel / len(unique) if unique else 0.0
            out["vun" + tag + SUFFIX[p]] = novel / max(a.n_total, 1)
    return out


def filter_figures(a: Analysis, reference_smiles: Sequence[str] | None = None, dataset_smiles: set | None = None) -> dict:
    """``filters`` (and one ``filters_fail_<name>`` per SMARTS) over the strictly valid samples; with
    ``dataset_smiles``, ``filters_novel`` over the distinct single-fragment ones absent from the dataset."""
    from rdkit import Chem

    valid = a.valid_smiles
    counts = Counter()
    passed = 0
    verdict = {}
    for s in valid:
        if s not in verdict:
            verdict[s] = chem.failed_filters(Chem.MolFromSmiles(s))
        counts.update(verdict[s])
        passed += not verdict[s]
    out = {"filters": passed / len(valid) if valid else 0.0}
    if dataset_smiles is not None:
        novel = [s for s in verdict if "." not in s and s not in dataset_smiles]
        out["filters_novel"] = sum(not verdict[s] for s in novel) / len(novel) if novel else 0.0
        out["filters_novel_n"] = len(novel)
    out.update({f"filters_fail_{name}": counts[name] / len(valid) if valid else 0.0 for name in chem.STABILITY_FILTERS})
    if reference_smiles is not None:
        ref = list(reference_smiles)
        out["filters_reference"] = (sum(not chem.failed_filters(Chem.MolFromSmiles(s)) for s in ref) / len(ref)) if ref else 0.0
    return out


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
_CHEMNET: dict = {}


def _fcd_activations(smiles: list[str], batch_size: int = 128) -> np.ndarray:
    import warnings

    import fcd

    if "model" not in _CHEMNET:  # loaded once per process
        _CHEMNET["model"] = fcd.load_ref_model()
    model = _CHEMNET["model"]
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


def subsample(smiles: Sequence[str], max_n: int | None, seed: int = 0) -> list[str]:
    """``max_n`` items of ``smiles`` chosen by a seeded permutation (``numpy.random.default_rng(seed)``), kept
    in their original order; all of them when ``max_n`` is None or not smaller."""
    items = list(smiles)
    if max_n is None or len(items) <= int(max_n):
        return items
    perm = np.random.default_rng(int(seed)).permutation(len(items))[: int(max_n)]
    return [items[i] for i in sorted(perm.tolist())]


def _frechet(stats_a, stats_b) -> float:
    import fcd

    return float(max(fcd.calculate_frechet_distance(mu1=stats_a[0], sigma1=stats_a[1], mu2=stats_b[0], sigma2=stats_b[1]), 0.0))


def fcd_value(generated_smiles: list[str], reference_smiles: list[str], max_reference: int | None = None, seed: int = 0) -> float:
    """FCD between two lists of canonical SMILES (reference subsampled to ``max_reference`` by a seeded permutation)."""
    if len(generated_smiles) < 2:
        raise ValueError(f"FCD needs at least 2 valid molecules, got {len(generated_smiles)}; draw more samples or train longer")
    ref = subsample(reference_smiles, max_reference, seed)
    if len(ref) < 2:
        raise ValueError(f"FCD needs at least 2 reference molecules, got {len(ref)}; use a larger reference split")
    return _frechet(_moments(_fcd_activations(list(generated_smiles))), reference_statistics(ref))


def floor_sample(pool_smiles: Sequence[str], reference_smiles: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """``n`` real molecules for a noise floor: the pool without any molecule of the reference (so the two
    sets are disjoint), subsampled by a seeded permutation; fewer when the pool is smaller."""
    ref = set(reference_smiles)
    return subsample([s for s in pool_smiles if s not in ref], n, seed)


def fcd_figures(a: Analysis, reference_smiles: Sequence[str], pool_smiles: Sequence[str] | None = None, max_reference: int | None = None,
                seed: int = 0) -> dict:
    """FCD of every protocol against the (subsampled) reference, and the floor at each protocol's size."""
    ref = subsample(reference_smiles, max_reference, seed)
    ref_stats = None
    out = {"fcd_reference_n": len(ref)}
    floors: dict = {}
    for p in PROTOCOLS:
        generated = a.compared(p)
        out["fcd" + SUFFIX[p]] = fcd_value(generated, ref)
        out["fcd_valid_n" + SUFFIX[p]] = len(generated)
        if pool_smiles is None:
            continue
        if len(generated) not in floors:
            sample = floor_sample(pool_smiles, ref, len(generated), seed)
            if len(sample) < 2:  # no floor without real molecules outside the reference
                continue
            ref_stats = ref_stats or reference_statistics(ref)
            floors[len(generated)] = (_frechet(reference_statistics(sample), ref_stats), len(sample))
        if len(generated) in floors:
            out["fcd_floor" + SUFFIX[p]], out["fcd_floor_n" + SUFFIX[p]] = floors[len(generated)]
    return out


def nspdk_figures(a: Analysis, reference_smiles: Sequence[str], pool_smiles: Sequence[str] | None = None, max_reference: int | None = None,
                  seed: int = 0, radius: int = 3, distance: int = 3) -> dict:
    """NSPDK MMD² of the GDSS-protocol molecules against the reference, and its floor at the same size."""
    from diffkit_molecule import nspdk

    ref = subsample(reference_smiles, max_reference, seed)
    generated = a.compared("gdss")
    if not generated:
        raise ValueError("NSPDK needs at least 1 valid molecule under the GDSS protocol, got 0; draw more samples or train longer")
    ref_graphs = nspdk.smiles_graphs(ref)
    out = {"nspdk_gdss": nspdk.nspdk_mmd(nspdk.smiles_graphs(generated), ref_graphs, radius, distance), "nspdk_n_gdss": len(generated),
           "nspdk_reference_n": len(ref)}
    sample = floor_sample(pool_smiles, ref, len(generated), seed) if pool_smiles is not None else []
    if sample:  # no floor without real molecules outside the reference
        out["nspdk_floor_gdss"] = nspdk.nspdk_mmd(nspdk.smiles_graphs(sample), ref_graphs, radius, distance)
        out["nspdk_floor_n_gdss"] = len(sample)
    return out


# --- registered metrics -----------------------------------------------------------------------------------
def validity_metric(ctx, **_) -> dict:
    """``validity``: fraction of all samples whose heavy-atom graph, read as a neutral molecule with implicit
    hydrogens, passes full RDKit sanitisation (the whole molecule, fragments included; DiGress's validity);
    ``validity_relaxed``: fraction passing GDSS's validity without correction (N, O, S may carry one extra
    bond as a +1 formal charge; RDKit's valence check); ``connected``: fraction of all samples whose bond
    graph is a single connected component, valid or not; ``valid_connected``: fraction of all samples that are
    strictly valid and a single fragment (never above ``validity`` or ``connected``)."""
    return validity_figures(_context_analysis(ctx))


def uniqueness_metric(ctx, **_) -> dict:
    """``uniqueness``: number of distinct canonical SMILES among the strictly valid samples (whole molecules,
    fragments included) divided by the number of strictly valid samples; ``uniqueness_digress`` and
    ``uniqueness_gdss``: the same under DiGress's protocol (+1 charges on N, O, S with one extra bond, full
    sanitisation, the fragment with the most heavy atoms) and GDSS's (relaxed valence check, the longest
    dot-separated part of the SMILES), over the samples valid under each (0 when none is)."""
    return uniqueness_figures(_context_analysis(ctx))


def _train_smiles_list(ctx, train_dataset: dict | None) -> tuple[list, object]:
    """The canonical SMILES of the training molecules in dataset order, and the training dataset."""
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
        return list(smiles), train
    from diffkit.evaluation import split_items

    items, _ = split_items(train)
    return [s for s in analyse(_graphs(items, getattr(train, "space", ctx.space)), protocols=False).smiles if s is not None], train


def _train_smiles(ctx, train_dataset: dict | None) -> set:
    return set(_train_smiles_list(ctx, train_dataset)[0])


def novelty_metric(ctx, train_dataset: dict | None = None, **_) -> dict:
    """``novelty``: fraction of the distinct strictly valid molecules (canonical SMILES of the whole molecule)
    that do not occur in the training split; ``vun``: number of samples that are valid, unique (first
    occurrence of their canonical SMILES) and novel, divided by all samples; ``novelty_all_splits`` and
    ``vun_all_splits``: the same against every split of the dataset (train, validation and test: all of QM9
    for QM9), so held-out molecules do not count as new; each of the four also with the suffix ``_digress``
    and ``_gdss``, under those protocols (see molecule-uniqueness)."""
    smiles, train = _train_smiles_list(ctx, train_dataset)
    dataset = getattr(train, "dataset_smiles", None)
    return novelty_figures(_context_analysis(ctx), set(smiles), set(dataset) if dataset is not None else None)


def distribution_metric(ctx, **_) -> dict:
    """``atom_types_distance``, ``bond_types_distance``, ``valency_distance``, ``size_distance``: total variation
    distance ``½ Σ_k |p_k − q_k|`` between the generated and the reference histograms of, respectively, atom
    elements (over all atoms), bond orders (over bonded pairs), per-atom valency (sum of bond orders) and the
    number of heavy atoms per molecule. All samples count, valid or not."""
    return distribution_figures(_graphs(ctx.generated, ctx.space), _graphs(ctx.reference, ctx.space))


def _reference_smiles(ctx) -> list[str]:
    return [s for s in analyse(_graphs(ctx.reference, ctx.space), protocols=False).smiles if s is not None]


def filters_metric(ctx, train_dataset: dict | None = None, **_) -> dict:
    """``filters``: fraction of the strictly valid samples whose molecule matches none of the QM9/GDB-style
    stability SMARTS of ``diffkit_molecule.chem.STABILITY_FILTERS`` (a triple bond in a ring of at most 8
    atoms, an atom with two double bonds, an enol or imidic acid, an ynol, a double bond in a three-membered
    ring; listed in docs/metrics.md); ``filters_fail_<name>``: fraction of the strictly valid samples matching
    each pattern; ``filters_reference``: the fraction of reference molecules passing (1.0 on every split of
    QM9); ``filters_novel``: the fraction passing among the distinct strictly valid single-fragment molecules
    that occur in no split of the dataset (``filters_novel_n`` of them; needs the training dataset, as novelty
    does), which separates new chemistry from molecules QM9's rules leave out."""
    try:
        train = _train_smiles_list(ctx, train_dataset)[1]
    except ValueError:  # no training data: the figure over novel molecules is left out
        train = None
    dataset = getattr(train, "dataset_smiles", None)
    return filter_figures(_context_analysis(ctx), _reference_smiles(ctx), set(dataset) if dataset is not None else None)


def fcd_metric(ctx, max_reference: int | None = None, seed: int = 0, floor: bool = True, train_dataset: dict | None = None, **_) -> dict:
    """``fcd``: Fréchet ChemNet Distance (Preuer et al. 2018; the ``fcd`` package) between the canonical SMILES
    of the strictly valid samples and of the reference molecules (the reference split, subsampled to
    ``max_reference`` by a permutation under ``seed`` when given); ``fcd_digress``, ``fcd_gdss``: the same for
    the molecules of those protocols (see molecule-uniqueness); ``fcd_valid_n``, ``fcd_valid_n_digress``,
    ``fcd_valid_n_gdss``: how many generated molecules entered each; ``fcd_reference_n``: how many reference
    molecules; ``fcd_floor``, ``fcd_floor_digress``, ``fcd_floor_gdss``: the FCD of as many real molecules
    (``fcd_floor_n…``; drawn from the training split without the reference's molecules, permutation under
    ``seed``) against the same reference, the score of a model that reproduces the data at that sample size
    (``floor = false`` skips it). Statistics of the reference and floor samples are cached."""
    a = _context_analysis(ctx)
    pool = _train_smiles_list(ctx, train_dataset)[0] if floor else None
    return fcd_figures(a, _reference_smiles(ctx), pool, max_reference, seed)


def nspdk_metric(ctx, max_reference: int | None = None, seed: int = 0, floor: bool = True, radius: int = 3, distance: int = 3,
                 train_dataset: dict | None = None, **_) -> dict:
    """``nspdk_gdss``: the squared maximum mean discrepancy (biased, diagonal terms included, as GDSS reports it)
    between the molecules of GDSS's protocol and the reference molecules under the neighbourhood subgraph
    pairwise distance kernel (Costa & De Grave 2010; nodes labelled by element, edges by the integer part of
    RDKit's bond order; radius and distance up to 3; ``diffkit_molecule.nspdk``), the reference subsampled to
    ``max_reference`` when given; ``nspdk_n_gdss``, ``nspdk_reference_n``: the set sizes;
    ``nspdk_floor_gdss``: the same statistic for as many real molecules from the training split (without the
    reference's molecules; ``nspdk_floor_n_gdss`` of them) against the same reference."""
    a = _context_analysis(ctx)
    pool = _train_smiles_list(ctx, train_dataset)[0] if floor else None
    return nspdk_figures(a, _reference_smiles(ctx), pool, max_reference, seed, radius, distance)


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


def canonical_training_smiles(smiles_list) -> list:
    """Canonical SMILES (graph rule) of training molecules in their order; unreadable or invalid entries are skipped."""
    graphs, _ = _graphs_from_smiles(smiles_list)
    return [s for s in analyse(graphs, protocols=False).smiles if s is not None]


def evaluate_smiles(smiles_list: Sequence[str], reference_smiles: Sequence[str], train_smiles: Sequence[str], *, dataset_smiles: Sequence[str] | None = None,
                    fcd: bool = True, nspdk: bool = True, floors: bool = True, max_reference: int | None = None, seed: int = 0) -> dict:
    """Every molecule figure for generated SMILES against reference and training SMILES.

    Generated SMILES that RDKit cannot parse count as invalid samples (in every denominator) and are
    listed under ``unreadable`` with the reason; SMILES that parse but break valence rules are read as
    graphs and scored as invalid molecules. Formal charges written in a SMILES are ignored (graphs carry
    none), so every sample is judged by the same graph rules as sampled graphs. ``dataset_smiles`` (every
    split) gives the ``*_all_splits`` novelty. Figures: see :func:`validity_metric`,
    :func:`uniqueness_metric`, :func:`novelty_metric`, :func:`filters_metric`, :func:`distribution_metric`,
    :func:`fcd_metric` and :func:`nspdk_metric` (``fcd=False``/``nspdk=False`` skip those; ``floors=False``
    skips their floors, which draw from ``train_smiles``)."""
    graphs, failures = _graphs_from_smiles(list(smiles_list))
    ref_graphs, ref_failures = _graphs_from_smiles(list(reference_smiles))
    a = analyse(graphs, len(smiles_list))
    train = canonical_training_smiles(train_smiles)
    dataset = set(canonical_training_smiles(dataset_smiles)) if dataset_smiles is not None else None
    ref_valid = [s for s in analyse(ref_graphs, protocols=False).smiles if s is not None]
    figures = {**validity_figures(a), **uniqueness_figures(a), **novelty_figures(a, set(train), dataset), **filter_figures(a, ref_valid, dataset)}
    figures.update(distribution_figures(graphs, ref_graphs) if graphs and ref_graphs else {})
    for wanted, name, compute in ((fcd, "fcd", fcd_figures), (nspdk, "nspdk", nspdk_figures)):
        if not wanted:
            continue
        try:
            figures.update(compute(a, ref_valid, train if floors else None, max_reference, seed))
        except ValueError as exc:
            figures[f"{name}_error"] = str(exc)
    return {"n": len(smiles_list), "n_unreadable": len(failures), "unreadable": failures, "n_reference": len(ref_graphs),
            "reference_unreadable": len(ref_failures), "figures": figures}
