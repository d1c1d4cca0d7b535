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


def best_rmsd(probe: tuple, reference: tuple) -> float:
    """Symmetry-aware heavy-atom RMSD (Å) after optimal alignment between two geometries of one graph;
    each argument is ``(symbols, charges, bonds, pos)``."""
    from rdkit.Chem import rdMolAlign

    p, r = heavy_molecule(*probe), heavy_molecule(*reference)
    if p.GetNumAtoms() == 1:
        return 0.0
    return float(rdMolAlign.GetBestRMS(p, r))


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
    """``rmsd_median``, ``rmsd_mean`` and ``coverage`` (fraction under ``threshold`` Å) over molecules;
    failures count as misses in the coverage and as infinite in the median."""
    values = np.array(list(rmsds) + [np.inf] * int(failed), dtype=np.float64)
    if values.size == 0:
        return {"rmsd_median": float("nan"), "rmsd_mean": float("nan"), "coverage": 0.0, "failed": int(failed)}
    finite = values[np.isfinite(values)]
    return {"rmsd_median": float(np.median(values)), "rmsd_mean": float(finite.mean()) if finite.size else float("nan"),
            "coverage": float((values < threshold).mean()), "failed": int(failed)}


def conformer_rmsd_metric(ctx, threshold: float = 0.5, **_) -> dict:
    """``rmsd_median``, ``rmsd_mean`` (Å) and ``coverage`` (fraction under ``threshold`` = 0.5 Å): the heavy-atom
    RMSD of generated conformer ``i`` to the geometry of reference molecule ``i`` (the one it was conditioned
    on; the DFT geometry for QM9), after optimal alignment and minimised over the graph's symmetries
    (RDKit ``GetBestRMS``). ``failed``: samples whose RMSD could not be computed (counted as misses)."""
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
