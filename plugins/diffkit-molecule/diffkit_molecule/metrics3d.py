"""Metrics of 3-D molecules with explicit hydrogens (``molecule-3d`` samples). Each figure is defined in the
docstring of the metric that reports it; docs/metrics.md states the two stability protocols side by side.

Two protocols for bonds, because the field uses both:

- **generated bonds** (MiDi's protocol): the sample's own bond orders and formal charges are judged;
- **distance bonds** (EDM's protocol): bonds are inferred from interatomic distances alone
  (:func:`bonds_from_distances`) and charges are ignored (every atom judged as neutral).

An atom is *stable* when the sum of its bond orders equals the valence of its element at its formal
charge (:data:`VALENCE`: H 1, C 4, N 3, O 2, F 1 when neutral; N⁺ 4, O⁺ 3, C⁺ 3; N⁻ 2, O⁻ 1, C⁻ 3); a
molecule is stable when all its atoms are.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from diffkit_molecule import chem, sdf

VALENCE = {("H", 0): 1, ("C", 0): 4, ("N", 0): 3, ("O", 0): 2, ("F", 0): 1,
           ("C", 1): 3, ("N", 1): 4, ("O", 1): 3, ("C", -1): 3, ("N", -1): 2, ("O", -1): 1}

# Typical bond lengths in Å (standard covalent values) for single / double / triple bonds between H, C, N, O, F.
BOND_LENGTHS = {
    1: {("H", "H"): 0.74, ("C", "H"): 1.09, ("H", "N"): 1.01, ("H", "O"): 0.96, ("F", "H"): 0.92, ("C", "C"): 1.54, ("C", "N"): 1.47,
        ("C", "O"): 1.43, ("C", "F"): 1.35, ("N", "N"): 1.45, ("N", "O"): 1.40, ("F", "N"): 1.36, ("O", "O"): 1.48, ("F", "O"): 1.42, ("F", "F"): 1.42},
    2: {("C", "C"): 1.34, ("C", "N"): 1.29, ("C", "O"): 1.20, ("N", "N"): 1.25, ("N", "O"): 1.21, ("O", "O"): 1.21},
    3: {("C", "C"): 1.20, ("C", "N"): 1.16, ("C", "O"): 1.13, ("N", "N"): 1.10},
}
BOND_MARGINS = {1: 0.10, 2: 0.05, 3: 0.03}  # Å added to each typical length


def bonds_from_distances(symbols: Sequence[str], pos) -> np.ndarray:
    """Bond orders inferred from distances (EDM's rule, with :data:`BOND_LENGTHS` and :data:`BOND_MARGINS`):
    a pair at distance ``d`` is triple if ``d < l3 + 0.03``, else double if ``d < l2 + 0.05``, else single if
    ``d < l1 + 0.10`` Å (``l_k``: the typical length of that order for the two elements; orders with no
    typical length are never assigned), else unbonded."""
    pos = np.asarray(pos, dtype=np.float64)
    n = len(symbols)
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    bonds = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(i + 1, n):
            key = tuple(sorted((symbols[i], symbols[j])))
            for order in (3, 2, 1):
                length = BOND_LENGTHS[order].get(key)
                if length is not None and d[i, j] < length + BOND_MARGINS[order]:
                    bonds[i, j] = bonds[j, i] = order
                    break
    return bonds


def stable_atoms(symbols: Sequence[str], charges: Sequence[int], bonds) -> list[bool]:
    """Per atom: its bond-order sum equals :data:`VALENCE` of (element, formal charge) (unknown pairs are unstable)."""
    valence = np.asarray(bonds).sum(1)
    return [VALENCE.get((s, int(c))) == int(v) for s, c, v in zip(symbols, charges, valence)]


def valid_molecule(symbols, charges, bonds, largest_fragment: bool = False):
    """The sanitised RDKit molecule (explicit hydrogens only) when it passes RDKit sanitisation and has no
    radical electrons, else None. With ``largest_fragment``, only the fragment with most atoms is judged."""
    mol = sdf.graph_to_mol3d(symbols, charges, bonds)
    if largest_fragment:
        frags = chem.Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
        if frags:
            mol = max(frags, key=lambda m: m.GetNumAtoms())
    ok, _ = sdf.sanitized(mol)
    if ok is None or any(a.GetNumRadicalElectrons() for a in ok.GetAtoms()):
        return None
    return ok


def smiles_of(mol) -> str:
    """Canonical heavy-atom SMILES of a sanitised molecule with explicit hydrogens."""
    return chem.canonical(chem.Chem.RemoveHs(mol))


def _n_total(ctx) -> int | None:
    """All samples, unreadable ones included (``diffkit eval`` reading a file with bad records)."""
    extras = getattr(ctx, "extras", None)
    return extras.get("n_total") if isinstance(extras, dict) else None


def _parts(items, space) -> list[tuple]:
    return [space.parts(x) for x in items]


# --- figures ------------------------------------------------------------------------------------------
def stability_figures(molecules: Sequence[tuple], n_total: int | None = None) -> dict:
    """``molecules``: ``(symbols, charges, bonds, pos)``; ``n_total``: samples including unreadable ones
    (which count as unstable molecules). See :func:`stability_metric`."""
    atoms_gen = atoms_dist = mols_gen = mols_dist = total = 0
    for symbols, charges, bonds, pos in molecules:
        gen = stable_atoms(symbols, charges, bonds)
        dist = stable_atoms(symbols, [0] * len(symbols), bonds_from_distances(symbols, pos))
        atoms_gen, atoms_dist, total = atoms_gen + sum(gen), atoms_dist + sum(dist), total + len(symbols)
        mols_gen, mols_dist = mols_gen + all(gen), mols_dist + all(dist)
    n, total = max(len(molecules), int(n_total or 0), 1), max(total, 1)
    return {"atom_stability": atoms_gen / total, "molecule_stability": mols_gen / n,
            "atom_stability_distances": atoms_dist / total, "molecule_stability_distances": mols_dist / n}


def validity_figures(molecules: Sequence[tuple], n_total: int | None = None) -> dict:
    """See :func:`validity_metric`; ``n_total`` counts unreadable samples too (as invalid)."""
    whole, largest, distances, connected, smiles = 0, 0, 0, 0, []
    for symbols, charges, bonds, pos in molecules:
        mol = valid_molecule(symbols, charges, bonds)
        whole += mol is not None
        if mol is not None:
            smiles.append(smiles_of(mol))
        largest += valid_molecule(symbols, charges, bonds, largest_fragment=True) is not None
        inferred = bonds_from_distances(symbols, pos)
        distances += valid_molecule(symbols, [0] * len(symbols), inferred, largest_fragment=True) is not None
        connected += chem.is_connected(bonds)
    n = max(len(molecules), int(n_total or 0), 1)
    return {"validity": whole / n, "validity_largest_fragment": largest / n, "validity_distances": distances / n,
            "connected": connected / n, "uniqueness": len(set(smiles)) / len(smiles) if smiles else 0.0}


def wasserstein_1d(a, b, grid: int = 2000) -> float:
    """``W1 = integral_0^1 |F_a^-1(u) - F_b^-1(u)| du`` between two empirical distributions (midpoint rule
    over ``grid`` quantile levels); NaN when either is empty."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan")
    u = (np.arange(grid) + 0.5) / grid
    return float(np.abs(np.quantile(a, u) - np.quantile(b, u)).mean())


def geometry(molecules: Sequence[tuple]) -> dict:
    """Bond lengths per bond order, bond angles (degrees) per central element, element and charge counts."""
    lengths, angles, elements, charges = {1: [], 2: [], 3: []}, {}, Counter(), Counter()
    for symbols, chg, bonds, pos in molecules:
        bonds, pos = np.asarray(bonds), np.asarray(pos, dtype=np.float64)
        elements.update(symbols)
        charges.update(int(c) for c in chg)
        iu, ju = np.nonzero(np.triu(bonds, 1))
        for i, j in zip(iu.tolist(), ju.tolist()):
            lengths[int(bonds[i, j])].append(float(np.linalg.norm(pos[i] - pos[j])))
        for c in range(len(symbols)):
            nb = np.nonzero(bonds[c])[0].tolist()
            for a in range(len(nb)):
                for b in range(a + 1, len(nb)):
                    u, v = pos[nb[a]] - pos[c], pos[nb[b]] - pos[c]
                    cos = float(u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12))
                    angles.setdefault(symbols[c], []).append(float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
    return {"lengths": lengths, "angles": angles, "elements": elements, "charges": charges}


def _tv(p: Counter, q: Counter) -> float:
    sp, sq = sum(p.values()) or 1, sum(q.values()) or 1
    return 0.5 * sum(abs(p[k] / sp - q[k] / sq) for k in set(p) | set(q))


def _weighted_w1(gen: dict, ref: dict) -> float:
    weights = {k: len(v) for k, v in ref.items() if len(v)}
    total = sum(weights.values())
    if not total:
        return float("nan")
    out = 0.0
    for k, w in weights.items():
        d = wasserstein_1d(gen.get(k, []), ref[k])
        if np.isnan(d):  # the samples have none of this kind: counted as the reference's spread from zero
            d = float(np.mean(np.abs(ref[k])))
        out += w / total * d
    return out


def distribution_figures(molecules: Sequence[tuple], reference: Sequence[tuple]) -> dict:
    """See :func:`distribution_metric`."""
    g, r = geometry(molecules), geometry(reference)
    return {"atom_types_tv": _tv(g["elements"], r["elements"]), "charges_tv": _tv(g["charges"], r["charges"]),
            "bond_lengths_w1": _weighted_w1(g["lengths"], r["lengths"]), "bond_angles_w1": _weighted_w1(g["angles"], r["angles"])}


# --- registered metrics ----------------------------------------------------------------------------------
def stability_metric(ctx, **_) -> dict:
    """``atom_stability`` / ``molecule_stability``: fraction of all generated atoms / molecules that are stable
    with the sample's own bonds and formal charges (MiDi's protocol; an atom is stable when its bond-order
    sum equals the valence of its element at its charge: H 1, C 4, N 3, O 2, F 1 neutral; N⁺ 4, O⁺ 3, C⁺ 3,
    N⁻ 2, O⁻ 1, C⁻ 3); ``atom_stability_distances`` / ``molecule_stability_distances``: the same with bonds
    inferred from interatomic distances and every atom neutral (EDM's protocol: triple / double / single
    below the typical length + 0.03 / 0.05 / 0.10 Å, :data:`BOND_LENGTHS`)."""
    return stability_figures(_parts(ctx.generated, ctx.space), _n_total(ctx))


def validity_metric(ctx, **_) -> dict:
    """``validity``: fraction of samples whose whole molecule (atoms, formal charges and generated bonds,
    hydrogens explicit, no implicit hydrogens added) passes RDKit sanitisation with no radical electrons;
    ``validity_largest_fragment``: the same judged on the largest fragment only (MiDi's figure);
    ``validity_distances``: the largest fragment of the molecule with bonds inferred from distances, neutral
    (EDM's figure); ``connected``: fraction whose generated bond graph is one component; ``uniqueness``:
    distinct canonical heavy-atom SMILES among the valid (whole-molecule) samples / valid samples. Samples
    that could not be read (``diffkit eval`` on a file) count as invalid and unstable in every fraction."""
    return validity_figures(_parts(ctx.generated, ctx.space), _n_total(ctx))


def distribution_metric(ctx, max_reference: int | None = 5000, **_) -> dict:
    """Distances between generated and reference (test) distributions: ``atom_types_tv`` and ``charges_tv``,
    total variation ``½ Σ_k |p_k − q_k|`` of element (hydrogens included) and formal-charge histograms;
    ``bond_lengths_w1`` (Å), the 1-Wasserstein distance between bond lengths of each bond order (generated
    bonds vs reference bonds), averaged with the reference's bond-order frequencies as weights;
    ``bond_angles_w1`` (degrees), the same for the angles between bonds at each central element, weighted
    by the reference's frequencies of centres. ``max_reference``: the first reference molecules used."""
    reference = ctx.reference if max_reference is None else ctx.reference[: int(max_reference)]
    return distribution_figures(_parts(ctx.generated, ctx.space), _parts(reference, ctx.space))


__all__ = ["BOND_LENGTHS", "VALENCE", "bonds_from_distances", "distribution_figures", "distribution_metric", "stability_figures", "stability_metric",
           "stable_atoms", "valid_molecule", "validity_figures", "validity_metric", "wasserstein_1d"]
