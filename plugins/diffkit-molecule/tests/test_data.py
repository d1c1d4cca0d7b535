"""QM9 from qm9pack (on the first rows) and the smiles-file dataset."""
import warnings
from pathlib import Path

import pytest
import torch
from rdkit import Chem

from diffkit.spaces.base import SpaceError
from diffkit.testing.datasets import check_dataset
from diffkit_molecule.data import cache_root, qm9, qm9_files, smiles_file, split_indices

ROWS = 1500


def test_qm9_subset_loads_with_disjoint_deterministic_splits(qm9_small):
    sizes = {k: len(v) for k, v in qm9_small.items()}
    info = qm9_small["train"].info
    assert info["counts"]["read"] == ROWS
    assert sum(sizes.values()) == info["counts"]["kept"] == ROWS - info["counts"].get("charged_dropped", 0)
    assert sizes["test"] == round(0.1 * info["counts"]["kept"])
    idx = split_indices(info["counts"]["kept"], 0, max_train=100_000)
    together = torch.cat([idx["train"], idx["val"], idx["test"]])
    assert torch.equal(together.sort().values, torch.arange(info["counts"]["kept"]))   # disjoint and complete
    assert [len(idx[k]) for k in ("train", "val", "test")] == [sizes["train"], sizes["val"], sizes["test"]]
    again = qm9("train", source_limit=ROWS)
    assert again.smiles == qm9_small["train"].smiles
    assert torch.equal(again.bonds, qm9_small["train"].bonds)
    # the cache holds safetensors + text + JSON, never pickles
    files = {p.suffix for p in cache_root().rglob("*") if p.is_file()}
    assert files <= {".safetensors", ".txt", ".json"}


def test_qm9_items_are_heavy_atom_graphs_that_round_trip(qm9_small):
    ds = qm9_small["train"]
    space = ds.space
    assert space.name == "molecule" and space.atom_types == ("C", "N", "O", "F") and space.max_atoms == 9
    for i in range(0, len(ds), 97):
        item = ds[i]
        assert space.to_smiles([item])[0] == ds.smiles[i]
        assert Chem.MolFromSmiles(ds.smiles[i]) is not None
    data = ds.to_pyg(5)
    item = ds[5]
    assert data.num_nodes == item["atoms"].numel()
    assert data.edge_index.shape[1] == int((item["bonds"] > 0).sum())
    assert torch.equal(data.x.argmax(1), item["atoms"])
    assert torch.equal(data.edge_attr.argmax(1) + 1, item["bonds"][data.edge_index[0], data.edge_index[1]])


def test_qm9_dataset_contract_and_onehot_encoding(qm9_small):
    assert "determinism" in check_dataset(qm9, options={"source_limit": ROWS})
    onehot = qm9("train", source_limit=ROWS, subset=10, encoding="onehot")
    assert onehot.space.name == "molecule-onehot" and len(onehot) == 10


def test_qm9_source_is_read_from_the_package_files():
    files = qm9_files()
    assert [f.name for f in files] == ["qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"] and all(f.exists() for f in files)


def test_split_sizes_match_the_papers():
    s = split_indices(130251, 0, max_train=100_000)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (100_000, 17226, 13025)


def test_smiles_file_skips_and_summarises_invalid_lines(tmp_path):
    path = tmp_path / "mols.smi"
    good = ["CCO", "c1ccccc1", "CC(=O)N", "C#N", "OCC=O", "CCCC", "C1CC1", "CN", "FC(F)F", "COC"]
    path.write_text("\n".join(good[:4] + ["C1CC", "xyz"] + good[4:] + ["C[NH3+]", ""]) + "\n")
    with pytest.warns(UserWarning, match=r"skipped 3 of 13 lines .*2 unreadable, 1 charged.*line 5 'C1CC'"):
        train = smiles_file("train", path=str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [train] + [smiles_file(s, path=str(path)) for s in ("val", "test")]
    assert sum(len(p) for p in parts) == len(good)
    assert sorted(s for p in parts for s in p.smiles) == sorted(Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in good)
    assert train.info["counts"]["invalid"] == 2 and train.info["invalid_examples"][1]["line"] == 6
    assert set(train.space.atom_types) == {"C", "O", "N", "F"} and train.space.atom_types[0] == "C"


def test_smiles_file_atoms_outside_the_vocabulary_are_listed(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text("CCO\nCCCl\nCBr\nCC\n")
    with pytest.raises(SpaceError, match=r"atoms \['Br', 'Cl'\] are outside the vocabulary \['C', 'O'\]"):
        smiles_file("train", path=str(path), atom_types=["C", "O"])


def test_smiles_file_missing_path_is_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; pass path="):
        smiles_file("train", path=str(tmp_path / "nope.smi"))


@pytest.mark.parametrize("encoding", ["categorical", "onehot"])
def test_the_packed_paths_equal_the_per_item_ones(qm9_small, encoding):
    """space_statistics() and collate_all() (one pass over the packed tensors, what training uses) give
    exactly space.fit and space.collate of the items, for both encodings; the statistics are cached."""
    from diffkit.evaluation import split_items
    from diffkit.recipe import collate_dataset

    ds = qm9("train", source_limit=ROWS, encoding=encoding)
    items, _ = split_items(ds)
    assert ds.space_statistics() == ds.space.fit(items)
    assert (Path(ds.info["stats_path"])).exists()
    state, labels = collate_dataset(ds.space, ds)
    reference = ds.space.collate(items)
    assert labels is None and set(state) == set(reference)
    assert all(torch.equal(state[k], reference[k]) for k in state)


def test_a_damaged_packed_graph_is_named(qm9_small):
    ds = qm9("test", source_limit=ROWS, subset=20)
    ds.bonds = ds.bonds.clone()
    ds.bonds[7, 0, 1] = 2  # one direction only: no longer symmetric
    ds.bonds[7, 1, 0] = 1
    with pytest.raises(SpaceError, match=r"graph 7 \(.*\) breaks a rule: bonds must be symmetric"):
        ds.collate_all()
    ds = qm9("test", source_limit=ROWS, subset=20)
    ds.atoms = ds.atoms.clone()
    ds.atoms[3, 0] = 9
    with pytest.raises(SpaceError, match=r"graph 3 .*atom indices must lie in 0\.\.3"):
        ds.check_packed()
