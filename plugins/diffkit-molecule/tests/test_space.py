"""The molecule spaces keep the core's Space contract and write SMILES files and drawings."""
import pytest
import torch
from PIL import Image

from diffkit.testing.spaces import check_space
from diffkit_molecule.space import MoleculeSpace, OneHotMoleculeSpace

SMILES = ["CCO", "c1ccoc1", "N#CC(F)C=O", "C", "CC1(C)CN1"]


@pytest.mark.parametrize("cls", [MoleculeSpace, OneHotMoleculeSpace])
def test_space_contract(cls):
    space = cls()
    examples = [space.from_smiles(s) for s in SMILES]
    bad = [("a dict without bonds", {"atoms": [0, 1]}), ("atom index out of range", {"atoms": [0, 9], "bonds": [[0, 1], [1, 0]]}),
           ("asymmetric bonds", {"atoms": [0, 1], "bonds": [[0, 1], [0, 0]]}), ("too many atoms", {"atoms": [0] * 10, "bonds": [[0] * 10] * 10})]
    checked = check_space(space, examples, bad_examples=bad, registered_name=cls.name)
    assert "round-trip" in checked and "write" in checked


def test_onehot_encoding_is_pm_one_and_zero_on_padding():
    space = OneHotMoleculeSpace()
    state = space.collate([space.from_smiles("CC=O"), space.from_smiles("C")])
    atoms, bonds = state["atoms"], state["bonds"]
    assert set(atoms[0].unique().tolist()) == {-1.0, 1.0}
    assert atoms[1, 1:].abs().sum() == 0 and bonds[1].abs().sum() == 0          # padded node, single-atom graph
    assert torch.diagonal(bonds[0], dim1=0, dim2=1).abs().sum() == 0             # no self bonds
    assert torch.equal(bonds, bonds.transpose(1, 2))
    assert space.to_smiles(space.decode(state)) == ["CC=O", "C"]


def test_write_smiles_file_and_png_grid_then_read_back(tmp_path):
    space = MoleculeSpace()
    items = [space.from_smiles(s) for s in SMILES] + [space.from_smiles("CC(C)(C)(C)C", allow_invalid=True)]
    paths = space.write(items, tmp_path / "out")
    names = {p.name for p in paths}
    assert {"samples.smi", "molecules.png"} <= names
    lines = (tmp_path / "out" / "samples.smi").read_text().splitlines()
    assert len(lines) == len(items) and lines[0] == "CCO"
    with Image.open(tmp_path / "out" / "molecules.png") as im:
        assert im.size[0] > 200 and im.size[1] >= 200
    # reading back: the invalid molecule stays a (chemically invalid) graph; bad lines are failures with reasons
    with open(tmp_path / "out" / "samples.smi", "a") as fh:
        fh.write("C1CC\nCCCl\n\n")
    read, failures = space.read(tmp_path / "out")
    assert len(read) == len(items)
    assert [f["item"].split(":")[0] for f in failures] == [f"line {len(items) + 1}", f"line {len(items) + 2}"]
    assert "cannot parse" in failures[0]["reason"] and "vocabulary" in failures[1]["reason"]
    assert space.to_smiles(read) == lines


def test_template_draws_sizes_from_fit():
    space = MoleculeSpace()
    stats = space.fit([space.from_smiles(s) for s in ["CCO", "CCN", "CCC", "C=O"]])  # sizes 3, 3, 3, 2
    state = space.template(400, stats, torch.Generator().manual_seed(0))
    sizes = state["mask"].sum(1)
    assert set(sizes.tolist()) == {2.0, 3.0}
    assert abs((sizes == 3).float().mean().item() - 0.75) < 0.08


def test_natural_form_is_rdkit_molecules():
    from rdkit import Chem

    space = MoleculeSpace()
    mols = space.natural([space.from_smiles("CCO"), space.from_smiles("C1=CC=CC=C1")])
    assert all(isinstance(m, Chem.Mol) for m in mols)
    assert [Chem.MolToSmiles(m) for m in mols] == ["CCO", "c1ccccc1"]
