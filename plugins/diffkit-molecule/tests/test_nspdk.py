"""NSPDK features and MMD on graphs whose answers are known by hand."""
import pytest
from rdkit import Chem

from diffkit_molecule import nspdk


def _graph(smiles):
    return nspdk.molecule_graph(Chem.MolFromSmiles(smiles))


def _renumbered(smiles, order):
    mol = Chem.MolFromSmiles(smiles)
    return nspdk.molecule_graph(Chem.RenumberAtoms(mol, order))


def test_identical_sets_give_zero_and_a_graph_has_unit_self_kernel():
    graphs = [_graph(s) for s in ("CCO", "c1ccccc1", "CC#N", "OC1CC1")]
    assert nspdk.nspdk_mmd(graphs, graphs) == 0.0
    interner = nspdk._Interner()
    for g in graphs:
        phi = nspdk.graph_features(*g, interner=interner)
        assert nspdk.kernel(phi, phi) == pytest.approx(1.0)


def test_features_do_not_depend_on_atom_order():
    interner = nspdk._Interner()
    a = nspdk.graph_features(*_graph("OC1CC1C#N"), interner=interner)
    b = nspdk.graph_features(*_renumbered("OC1CC1C#N", [5, 4, 3, 2, 1, 0]), interner=interner)
    assert a == b
    assert nspdk.nspdk_mmd([_graph("OC1CC1C#N")], [_renumbered("OC1CC1C#N", [3, 0, 5, 1, 2, 4])]) == pytest.approx(0.0, abs=1e-15)


def test_single_atoms_at_radius_and_distance_zero():
    # with r = d = 0 a feature is an atom label: {C} vs {O} are orthogonal unit vectors, ‖e1 − e2‖² = 2;
    # {C} vs the mean of {C, O}: ‖e1 − (e1 + e2)/2‖² = 1/2
    c, o = (["C"], {}), (["O"], {})
    assert nspdk.nspdk_mmd([c], [o], radius=0, distance=0) == pytest.approx(2.0)
    assert nspdk.nspdk_mmd([c], [c, o], radius=0, distance=0) == pytest.approx(0.5)


def test_distance_separates_ethanol_from_dimethyl_ether():
    # same atoms and bond labels: equal at d = 0 (atom counts only), different once pairs at distance 1 count
    assert nspdk.nspdk_mmd([_graph("CCO")], [_graph("COC")], radius=0, distance=0) == 0.0
    assert nspdk.nspdk_mmd([_graph("CCO")], [_graph("COC")], radius=0, distance=1) > 0.1


def test_linear_time_mmd_equals_the_pairwise_kernel_means():
    xs = [_graph(s) for s in ("CCO", "CC(C)=O", "c1ccncc1")]
    ys = [_graph(s) for s in ("CCN", "C1CC1", "OCC#C", "CC(C)=O")]
    interner = nspdk._Interner()
    fx = [nspdk.graph_features(*g, interner=interner) for g in xs]
    fy = [nspdk.graph_features(*g, interner=interner) for g in ys]

    def mean_k(a, b):
        return sum(nspdk.kernel(u, v) for u in a for v in b) / (len(a) * len(b))

    brute = mean_k(fx, fx) + mean_k(fy, fy) - 2 * mean_k(fx, fy)
    assert nspdk.nspdk_mmd(xs, ys) == pytest.approx(brute, abs=1e-12)
    assert 0.0 < brute < 2.0


def test_aromatic_bonds_are_labelled_as_gdss_labels_them():
    labels, edges = _graph("c1ccccc1")
    assert labels == ["C"] * 6 and set(edges.values()) == {1}       # int(1.5) = 1
    assert set(_graph("C#N")[1].values()) == {3}
    with pytest.raises(ValueError, match="cannot read SMILES"):
        nspdk.smiles_graphs(["C1CC"])
    with pytest.raises(ValueError, match="both sides"):
        nspdk.nspdk_mmd([], [_graph("C")])
