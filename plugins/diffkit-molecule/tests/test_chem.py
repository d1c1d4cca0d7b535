"""SMILES ↔ graph round trips and validity, uniqueness and novelty on hand-made lists."""
import numpy as np
import pytest
from rdkit import Chem

from diffkit_molecule import chem
from diffkit_molecule.metrics import evaluate_smiles
from diffkit_molecule.space import MoleculeSpace

ROUND_TRIP = ["C", "CC#N", "c1ccccc1", "O=C1CC1", "Cc1ccc(F)cc1", "N#CC1=CN=CO1", "OC1C2CC1O2", "CN1C=CC=C1", "FC(F)(F)C=O", "O=c1cc[nH]cc1"]


@pytest.mark.parametrize("smiles", ROUND_TRIP)
def test_smiles_graph_round_trip(smiles):
    space = MoleculeSpace()
    element = space.from_smiles(smiles)
    # kekulé bond orders only, symmetric, zero diagonal
    bonds = element["bonds"].numpy()
    assert set(np.unique(bonds)) <= {0, 1, 2, 3}
    assert (bonds == bonds.T).all() and not bonds.diagonal().any()
    again = space.to_smiles([element])[0]
    assert again == Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
    assert space.to_molecules([element])[0][1] == "valid"


def test_graph_of_a_smiles_counts_heavy_atoms_and_orders():
    symbols, bonds, charges = chem.smiles_to_graph("C#CC=O")
    assert symbols == ["C", "C", "C", "O"]
    assert bonds[0, 1] == 3 and bonds[1, 2] == 1 and bonds[2, 3] == 2 and bonds.sum() == 2 * (3 + 1 + 2)
    assert charges == [0, 0, 0, 0]


def test_outside_vocabulary_is_a_clear_error():
    from diffkit.spaces.base import SpaceError

    with pytest.raises(SpaceError, match=r"\['Cl'\].*vocabulary"):
        MoleculeSpace().from_smiles("CCCl")


# (SMILES, strictly valid, relaxed valid)
VALIDITY = [
    ("CCO", True, True),
    ("C.C", True, True),                 # disconnected but every fragment sanitises
    ("C[N+](C)(C)C", False, True),       # graph has a 4-valent N: relaxed allows N+
    ("C[O+](C)C", False, True),          # 3-valent O: relaxed allows O+
    ("CC(C)(C)(C)C", False, False),      # pentavalent carbon
    ("FC(F)(F)(F)F", False, False),
    ("CN(C)(C)(C)C", False, False),      # 5-valent N: two extra bonds
    ("c1ccccc1", True, True),
]


def test_strict_and_relaxed_validity_of_hand_made_smiles():
    smiles = [s for s, _, _ in VALIDITY] + ["C1CC", "not a smiles"]   # two unreadable lines
    out = evaluate_smiles(smiles, reference_smiles=["CCO", "CCN"], train_smiles=["CCO"], fcd=False)
    n = len(smiles)
    strict = sum(v for _, v, _ in VALIDITY)
    relaxed = sum(r for _, _, r in VALIDITY)
    assert out["figures"]["validity"] == pytest.approx(strict / n)
    assert out["figures"]["validity_relaxed"] == pytest.approx(relaxed / n)
    assert out["n_unreadable"] == 2
    assert [f["index"] for f in out["unreadable"]] == [len(VALIDITY), len(VALIDITY) + 1]
    assert all(f["reason"] for f in out["unreadable"])
    assert out["figures"]["connected"] == pytest.approx(sum(1 for s, _, _ in VALIDITY if "." not in s) / n)
    for s, v, r in VALIDITY:
        symbols, bonds, _ = chem.smiles_to_graph(s, allow_invalid=True)
        assert (chem.strict_molecule(symbols, bonds)[0] is not None) == v, s
        assert (v or chem.relaxed_molecule(symbols, bonds)[0] is not None) == r, s


def test_uniqueness_novelty_and_vun():
    # valid: CCO, OCC (same molecule), CCN, CCC, C1CC1 ; invalid: CC(C)(C)(C)C ; unreadable: "xx"
    smiles = ["CCO", "OCC", "CCN", "CCC", "C1CC1", "CC(C)(C)(C)C", "xx"]
    out = evaluate_smiles(smiles, reference_smiles=["CCO"], train_smiles=["OCC", "CCC", "bad(("], fcd=False)
    f = out["figures"]
    assert f["validity"] == pytest.approx(5 / 7)
    assert f["uniqueness"] == pytest.approx(4 / 5)          # 4 distinct among 5 valid
    assert f["novelty"] == pytest.approx(2 / 4)             # CCN and C1CC1 are new; CCO and CCC are in training
    assert f["vun"] == pytest.approx(2 / 7)


def test_distribution_distances_are_zero_at_identity_and_positive_otherwise():
    ref = ["CCO", "CCN", "C#N", "c1ccccc1"]
    same = evaluate_smiles(ref, ref, [], fcd=False)["figures"]
    other = evaluate_smiles(["FC(F)F", "CC"], ref, [], fcd=False)["figures"]
    for k in ("atom_types_distance", "bond_types_distance", "valency_distance", "size_distance"):
        assert same[k] == 0.0
        assert 0.0 < other[k] <= 1.0


def test_connected_counts_invalid_graphs_and_valid_connected_does_not():
    # valid: CCO, CC.O (two fragments), benzene; invalid: two pentavalent carbons and a pentavalent-carbon fragment pair
    smiles = ["CCO", "CC.O", "CC(C)(C)(C)C", "CC(C)(C)(C)C.C", "c1ccccc1", "FC(F)(F)(F)F"]
    f = evaluate_smiles(smiles, reference_smiles=["CCO"], train_smiles=[], fcd=False, nspdk=False)["figures"]
    assert f["validity"] == pytest.approx(3 / 6)
    assert f["connected"] == pytest.approx(4 / 6)         # CCO, both single-fragment pentavalent carbons, benzene
    assert f["valid_connected"] == pytest.approx(2 / 6)   # CCO and benzene
    assert f["connected"] > f["validity"] > f["valid_connected"]


def test_the_three_protocols_on_hand_made_samples():
    # strict compares whole molecules: CCO, C.CCO, CC.CCO, CCCC are four different valid molecules;
    # digress and gdss keep the largest fragment (CCO three times) and also accept the N+ of CN(C)(C)C
    smiles = ["CCO", "CCO.C", "OCC.CC", "CN(C)(C)C", "CCCC", "CC(C)(C)(C)C"]
    f = evaluate_smiles(smiles, reference_smiles=["CCO", "CCN"], train_smiles=["CCO"], dataset_smiles=["CCO", "CCCC"], fcd=False, nspdk=False)["figures"]
    assert f["validity"] == pytest.approx(4 / 6) and f["validity_relaxed"] == pytest.approx(5 / 6)
    assert f["uniqueness"] == 1.0                                      # 4 distinct of 4
    assert f["novelty"] == pytest.approx(3 / 4) and f["vun"] == pytest.approx(3 / 6)            # C.CCO, CC.CCO, CCCC are not in training
    assert f["novelty_all_splits"] == pytest.approx(2 / 4) and f["vun_all_splits"] == pytest.approx(2 / 6)   # CCCC is in the dataset
    for p in ("digress", "gdss"):
        assert f[f"uniqueness_{p}"] == pytest.approx(3 / 5)            # CCO ×3, C[N+](C)(C)C, CCCC
        assert f[f"novelty_{p}"] == pytest.approx(2 / 3) and f[f"vun_{p}"] == pytest.approx(2 / 6)
        assert f[f"novelty_all_splits_{p}"] == pytest.approx(1 / 3) and f[f"vun_all_splits_{p}"] == pytest.approx(1 / 6)


def test_largest_fragment_rules_of_digress_and_gdss_differ_as_written():
    # pentane has more heavy atoms (DiGress keeps it); OC(F)F has the longer SMILES (GDSS keeps it)
    symbols, bonds, _ = chem.smiles_to_graph("CCCCC.OC(F)F")
    assert chem.protocol_smiles(symbols, bonds, "strict") == "CCCCC.OC(F)F"
    assert chem.protocol_smiles(symbols, bonds, "digress") == "CCCCC"
    assert chem.protocol_smiles(symbols, bonds, "gdss") == "OC(F)F"
    symbols, bonds, _ = chem.smiles_to_graph("CC(C)(C)(C)C", allow_invalid=True)
    assert all(chem.protocol_smiles(symbols, bonds, p) is None for p in chem.PROTOCOLS)
    with pytest.raises(ValueError, match="unknown protocol"):
        chem.protocol_smiles(symbols, bonds, "moses")


FILTER_CASES = [                       # SMILES, the filters it fails
    ("c1ccccc1", []),
    ("C1CC1", []),
    ("CC(C)=O", []),
    ("Oc1ccccc1", []),                 # a phenol is aromatic, not an enol
    ("C=C1CC1", []),                   # exocyclic double bond on a cyclopropane
    ("C1#CCCCCCCC1", []),              # cyclononyne: a ring of 9
    ("CC#N", []),
    ("C=CC=C", []),                    # conjugated, not cumulated
    ("OCC#C", []),                     # propargyl alcohol: the hydroxyl is not on the triple bond
    ("C1#CC1", ["ring_triple_bond"]),  # cyclopropyne
    ("C1#CCCCCCC1", ["ring_triple_bond"]),
    ("C=C=C", ["cumulated_double_bonds"]),
    ("C=C=O", ["cumulated_double_bonds"]),
    ("C=C(C)O", ["enol"]),
    ("CC(O)=N", ["enol"]),             # imidic acid
    ("OC#C", ["ynol"]),
    ("C1=CC1", ["three_ring_double_bond"]),
    ("C1=NC1", ["three_ring_double_bond"]),
]


@pytest.mark.parametrize("smiles,failed", FILTER_CASES)
def test_each_stability_filter_on_molecules_whose_answer_is_known(smiles, failed):
    from rdkit import Chem

    assert chem.failed_filters(Chem.MolFromSmiles(smiles)) == failed


def test_filters_figure_counts_valid_molecules_only():
    # valid: benzene, cyclopropyne, acetone twice, an enol, acetone with a methane fragment; invalid: a pentavalent carbon
    smiles = ["c1ccccc1", "C1#CC1", "CC(C)=O", "C=C(C)O", "CC(C)(C)(C)C", "CC(C)=O", "CC(C)=O.C"]
    f = evaluate_smiles(smiles, reference_smiles=["CCO", "C1=CC1"], train_smiles=[], dataset_smiles=["c1ccccc1"], fcd=False, nspdk=False)["figures"]
    assert f["filters"] == pytest.approx(4 / 6)
    assert f["filters_fail_ring_triple_bond"] == pytest.approx(1 / 6) and f["filters_fail_enol"] == pytest.approx(1 / 6)
    assert f["filters_fail_ynol"] == 0.0
    assert f["filters_reference"] == pytest.approx(1 / 2)
    # distinct single-fragment molecules outside the dataset: cyclopropyne, acetone, the enol; only acetone passes
    assert f["filters_novel_n"] == 3 and f["filters_novel"] == pytest.approx(1 / 3)
