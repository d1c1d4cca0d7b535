"""Conformers: RMSD to a reference geometry, RDKit's ETKDG (and ETKDG + MMFF) as the baseline, and the
``conformer-rmsd`` metric.

RMSD protocol: both geometries become RDKit molecules of the same graph, hydrogens are removed, and
``rdMolAlign.GetBestRMS`` gives the RMSD after optimal rigid alignment, minimised over the graph's
symmetries (every mapping of the molecule onto itself), in Å.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from diffkit_molecule import chem, sdf

Chem = chem.Chem


def heavy_molecule(symbols, charges, bonds, pos):
    """The heavy-atom RDKit molecule of a graph with a 3-D conformer (sanitised when possible)."""
    mol = sdf.graph_to_mol3d(symbols, charges, bonds, pos)
    ok, _ = sdf.sanitized(mol)
    return Chem.RemoveHs(ok if ok is not None else mol, sanitize=False)


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD between two point sets in the same atom order after optimal rotation and translation (Kabsch):
    ``min_R sqrt(mean_i |R a_i' - b_i'|^2)`` over rotations ``R`` (det +1), with ``a'``, ``b'`` centred."""
    a, b = a - a.mean(0), b - b.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(((a @ rot - b) ** 2).sum(1).mean()))


def best_rmsd(probe: tuple, reference: tuple) -> float:
    """Symmetry-aware heavy-atom RMSD (Å) after optimal alignment between two geometries of one graph;
    each argument is ``(symbols, charges, bonds, pos)``. Where RDKit's ``GetBestRMS`` cannot align (degenerate
    geometries, such as every atom at one point), the Kabsch RMSD in the given atom order is returned
    instead (an upper bound of the symmetry-aware value)."""
    from rdkit.Chem import rdMolAlign

    p, r = heavy_molecule(*probe), heavy_molecule(*reference)
    if p.GetNumAtoms() == 1:
        return 0.0
    try:
        return float(rdMolAlign.GetBestRMS(p, r))
    except Exception:  # noqa: BLE001 - RDKit raises on degenerate alignments
        heavy = [i for i, s in enumerate(probe[0]) if s != "H"]
        return kabsch_rmsd(np.asarray(probe[3], dtype=np.float64)[heavy], np.asarray(reference[3], dtype=np.float64)[heavy])


def etkdg_positions(symbols, charges, bonds, k: int = 1, seed: int = 0, mmff: bool = False) -> list[np.ndarray]:
    """Up to ``k`` conformers (positions in the graph's atom order, hydrogens included) from RDKit's ETKDG
    (version 3), optionally relaxed with the MMFF94 force field; an empty list when embedding fails."""
    from rdkit.Chem import AllChem

    mol = sdf.graph_to_mol3d(symbols, charges, bonds)
    ok, _ = sdf.sanitized(mol)
    if ok is None:
        return []
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    params.numThreads = 1
    ids = list(AllChem.EmbedMultipleConfs(ok, numConfs=int(k), params=params))
    if not ids:
        return []
    if mmff and AllChem.MMFFHasAllMoleculeParams(ok):
        AllChem.MMFFOptimizeMoleculeConfs(ok, numThreads=1, maxIters=500)
    return [np.array(ok.GetConformer(i).GetPositions(), dtype=np.float64) for i in ids]


def rmsd_figures(rmsds: Sequence[float], threshold: float = 0.5, failed: int = 0) -> dict:
    """``rmsd_median``, ``rmsd_mean`` over the molecules with an RMSD, ``coverage`` (fraction of all molecules,
    failures included as misses, under ``threshold`` Å) and ``failed`` (molecules without a conformer or an RMSD)."""
    values = np.array([v for v in rmsds if np.isfinite(v)], dtype=np.float64)
    failed = int(failed) + (len(list(rmsds)) - values.size)
    total = values.size + failed
    if values.size == 0:
        return {"rmsd_median": float("nan"), "rmsd_mean": float("nan"), "coverage": 0.0, "failed": failed}
    return {"rmsd_median": float(np.median(values)), "rmsd_mean": float(values.mean()),
            "coverage": float((values < threshold).sum() / total), "failed": failed}


def conformer_rmsd_metric(ctx, threshold: float = 0.5, **_) -> dict:
    """``rmsd_median``, ``rmsd_mean`` (Å) and ``coverage`` (fraction under ``threshold`` = 0.5 Å): the heavy-atom
    RMSD of generated conformer ``i`` to the geometry of reference molecule ``i`` (the one it was conditioned
    on; the DFT geometry for QM9), after optimal alignment and minimised over the graph's symmetries
    (RDKit ``GetBestRMS``; the plain Kabsch RMSD where it cannot align). Median and mean are over samples with an
    RMSD; ``failed``: samples without one (non-finite positions), counted as misses in the coverage."""
    space = ctx.space
    if len(ctx.reference) < len(ctx.generated):
        raise ValueError(f"conformer-rmsd pairs sample i with reference molecule i, but there are {len(ctx.generated)} samples and {len(ctx.reference)} reference molecules")
    rmsds, failed = [], 0
    for gen, ref in zip(ctx.generated, ctx.reference):
        try:
            rmsds.append(best_rmsd(space.parts(gen), space.parts(ref)))
        except Exception:  # noqa: BLE001 - RDKit raises several types; counted
            failed += 1
    return rmsd_figures(rmsds, threshold, failed)


__all__ = ["best_rmsd", "conformer_rmsd_metric", "etkdg_positions", "heavy_molecule", "rmsd_figures"]
