"""QM9 in 3-D with hydrogens: processing, split, cache, the 3-D spaces and their files."""
import numpy as np
import pytest
import torch

from diffkit.spaces.base import SpaceError

from diffkit_molecule import chem, sdf
from diffkit_molecule.data3d import molecule_from_row, qm9_3d
from diffkit_molecule.metrics3d import stability_figures
from diffkit_molecule.space3d import ConformerSpace, Molecule3DSpace

ROWS = 400


@pytest.fixture(scope="module")
def qm9_3d_small(molecule_cache):
    return {split: qm9_3d(split, source_limit=ROWS) for split in ("train", "val", "test")}


def test_processing_and_split(qm9_3d_small):
    train, val, test = qm9_3d_small["train"], qm9_3d_small["val"], qm9_3d_small["test"]
    counts = train.info["counts"]
    assert counts["read"] == ROWS and counts["kept"] == len(train) + len(val) + len(test)
    assert counts["kept"] >= 0.9 * ROWS  # dropped molecules are counted, and few
    assert sum(v for k, v in counts.items() if k not in ("read", "kept", "charged_kept")) == ROWS - counts["kept"]
    assert not set(train.smiles) & set(test.smiles) or len(set(train.smiles) & set(test.smiles)) < 3  # QM9 repeats a few graphs as stereoisomers
    again = qm9_3d("test", source_limit=ROWS)  # from the cache, the same split
    assert again.smiles == test.smiles and torch.equal(again.pos, test.pos)


def test_molecules_are_consistent(qm9_3d_small):
    data = qm9_3d_small["train"]
    space = data.space
    table = chem.Chem.GetPeriodicTable()
    molecules = []
    for i in range(len(data)):
        item = data[i]
        symbols, charges, bonds, pos = space.parts(item)
        masses = np.array([table.GetAtomicWeight(s) for s in symbols])
        np.testing.assert_allclose((masses[:, None] * pos).sum(0) / masses.sum(), 0.0, atol=1e-4)  # centred at the centre of mass
        assert (bonds == bonds.T).all() and len(symbols) <= space.max_atoms
        molecules.append((symbols, charges, bonds, pos))
        if i < 60:  # the graph (hydrogens removed) is the source molecule
            mol, _ = sdf.sanitized(sdf.graph_to_mol3d(symbols, charges, bonds))
            assert chem.canonical(chem.Chem.RemoveHs(mol)) == data.smiles[i]
    # QM9's own molecules are stable with their bonds and charges; with bonds from distances most are
    f = stability_figures(molecules)
    assert f["molecule_stability"] == 1.0
    assert f["molecule_stability_distances"] > 0.8


def test_row_whose_geometry_lacks_a_bond_is_refused():
    # water's geometry with one hydrogen 3 Å away: the SMILES bond O-H is not a contact of the geometry
    xyz = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-3.0, 0.0, 0.0]])
    with pytest.raises(chem.ChemError, match="does not contain"):
        molecule_from_row("O", ["O", "H", "H"], xyz)
    symbols, charges, bonds, pos = molecule_from_row("O", ["O", "H", "H"], np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]))
    assert bonds.tolist() == [[0, 1, 1], [1, 0, 0], [1, 0, 0]] and charges == [0, 0, 0]


def test_collate_decode_roundtrip(qm9_3d_small):
    data = qm9_3d_small["test"]
    space = data.space
    items = [data[i] for i in range(6)]
    state = space.collate(items)
    assert state["charges"].shape[-1] == 3 and state["atoms"].shape[-1] == 5
    decoded = space.decode(state)
    for a, b in zip(items, decoded):
        assert torch.equal(a["atoms"], b["atoms"]) and torch.equal(a["bonds"], b["bonds"]) and torch.equal(a["charges"], b["charges"])
        torch.testing.assert_close(b["pos"], a["pos"] - a["pos"].mean(0), atol=1e-5, rtol=0)
    stats = space.fit(items)
    assert set(stats["frequencies"]) == {"atoms", "bonds", "charges"} and abs(sum(stats["frequencies"]["charges"]) - 1) < 1e-6


def test_conformer_space_pads_and_conditions(qm9_3d_small):
    items = [qm9_3d_small["test"][i] for i in range(3)]
    space = ConformerSpace()
    state = space.collate(items)
    assert state["pos"].shape == (3, space.max_atoms, 3) and state["mask"].shape == (3, space.max_atoms)
    assert [f.name for f in space.fields if f.diffused] == ["pos"]
    template = space.template(3, sizes=torch.tensor([4, 5, 6]))
    assert template["pos"].shape == state["pos"].shape
    # a graph without positions is an element of the conformer space (its positions are to be generated)
    no_pos = {k: v for k, v in items[0].items() if k != "pos"}
    assert space.validate(no_pos)["pos"].abs().sum() == 0
    with pytest.raises(SpaceError, match="pos"):
        Molecule3DSpace().validate(no_pos)


def test_bad_elements_are_refused():
    space = Molecule3DSpace()
    good = {"atoms": ["O", "H", "H"], "charges": [0, 0, 0], "bonds": [[0, 1, 1], [1, 0, 0], [1, 0, 0]], "pos": [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]}
    space.validate(good)
    with pytest.raises(SpaceError, match="formal charge"):
        space.validate({**good, "charges": [2, 0, 0]})
    with pytest.raises(SpaceError, match="vocabulary"):
        space.validate({**good, "atoms": ["S", "H", "H"]})
    with pytest.raises(SpaceError, match="NaN"):
        space.validate({**good, "pos": [[float("nan"), 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]})


def test_write_and_read_files(qm9_3d_small, tmp_path):
    data = qm9_3d_small["test"]
    space = data.space
    items = [data[i] for i in range(5)]
    paths = space.write(items, tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["graphs.json", "molecules.png", "samples.sdf", "samples.xyz"]
    back, failures = space.read(tmp_path / "out" / "samples.sdf")
    assert not failures and len(back) == 5
    for a, b in zip(items, back):
        assert torch.equal(a["atoms"], b["atoms"]) and torch.equal(a["bonds"], b["bonds"])
        torch.testing.assert_close(a["pos"], b["pos"], atol=1e-4, rtol=0)
    xyz = (tmp_path / "out" / "samples.xyz").read_text().splitlines()
    assert int(xyz[0]) == items[0]["atoms"].numel()


def test_bad_files_are_counted_and_skipped(tmp_path):
    space = ConformerSpace()
    smi = tmp_path / "molecules.smi"
    smi.write_text("CCO\nnot_a_smiles((\nCCCl\nC1=CC=CN1\n")
    items, failures = space.read(smi)
    assert len(items) == 2 and len(failures) == 2
    reasons = " ".join(f["reason"] for f in failures)
    assert "cannot parse" in reasons and "Cl" in reasons
    # an SDF written without hydrogens: counted and skipped with the fix named
    mol = chem.Chem.MolFromSmiles("CCO")
    from rdkit.Chem import AllChem

    with_h = chem.Chem.AddHs(mol)
    AllChem.EmbedMolecule(with_h, randomSeed=0)
    writer = chem.Chem.SDWriter(str(tmp_path / "mixed.sdf"))
    writer.write(with_h)
    writer.write(chem.Chem.RemoveHs(with_h))
    writer.close()
    items, failures = space.read(tmp_path / "mixed.sdf")
    assert len(items) == 1 and len(failures) == 1 and "explicit hydrogens" in failures[0]["reason"]
    assert items[0]["pos"].abs().sum() > 0


def test_training_batches_are_cut_to_their_largest_molecule(qm9_3d_small):
    data = qm9_3d_small["train"]
    space = ConformerSpace()
    items = [data[i] for i in range(4)]
    state = space.collate(items)  # padded to max_atoms
    cut = space.train_transform(state)
    n = max(x["atoms"].numel() for x in items)
    assert cut["pos"].shape[1] == n and cut["bonds"].shape[1:3] == (n, n) and cut["mask"].shape[1] == n
    assert torch.equal(cut["pos"], state["pos"][:, :n]) and cut["mask"].sum() == state["mask"].sum()


@pytest.mark.parametrize("task", ["generation", "conformers"])
def test_packed_collate_and_statistics_equal_the_per_item_path(qm9_3d_small, task):
    """collate_all / space_statistics work on the packed tensors in one pass; they must give what
    space.collate and space.fit give item by item (positions to float rounding of the mean)."""
    base = qm9_3d_small["train"]
    data = qm9_3d("train", source_limit=ROWS, task=task)
    assert len(data) == len(base) > 50
    items = [data[i] for i in range(len(data))]
    packed, labels = data.collate_all()
    looped = data.space.collate(items)
    assert labels is None and set(packed) == set(looped)
    for name in looped:
        assert packed[name].shape == looped[name].shape, name
        if name == "pos":
            torch.testing.assert_close(packed[name], looped[name], atol=1e-5, rtol=0)
        else:
            assert torch.equal(packed[name], looped[name]), name
    stats, fitted = data._statistics(), data.space.fit(items)
    assert stats["sizes"] == pytest.approx(fitted["sizes"])
    for field in ("atoms", "bonds", "charges"):
        assert stats["frequencies"][field] == pytest.approx(fitted["frequencies"][field]), field


def test_packed_checks_name_the_bad_molecule(qm9_3d_small):
    data = qm9_3d("train", source_limit=ROWS)
    data.charges = data.charges.clone()
    data.charges[3, 0] = 2  # outside charge_values (-1, 0, 1)
    with pytest.raises(SpaceError, match=r"graph 3 .*formal charges must lie in charge_values"):
        data.collate_all()
    data = qm9_3d("train", source_limit=ROWS)
    data.pos = data.pos.clone()
    data.pos[5, 1, 2] = float("nan")
    with pytest.raises(SpaceError, match=r"graph 5 .*positions must be finite"):
        data.collate_all()
