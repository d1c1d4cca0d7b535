"""Conformers: the RMSD protocol, the ETKDG baseline, and the recipes end to end on a tiny model
(train a few steps, `diffkit sample RUN --reference molecules.smi --n K`, the de novo recipe's files and figures)."""
import json

import numpy as np
import pytest
import torch

from diffkit.cli import main as cli
from diffkit.recipe import load_recipe
from diffkit.runs import sample_run
from diffkit.training.trainer import train

from diffkit_molecule import chem, sdf
from diffkit_molecule.conformers import best_rmsd, etkdg_positions, kabsch_rmsd, rmsd_figures

TINY = {"hidden": 16, "edge": 8, "layers": 2, "rbf": 8}


def ethanol():
    from rdkit.Chem import AllChem

    mol = chem.Chem.AddHs(chem.Chem.MolFromSmiles("OCC(=O)N"))
    AllChem.EmbedMolecule(mol, randomSeed=3)
    e = sdf.mol_to_element(mol)
    return e["atoms"], e["charges"], e["bonds"], e["pos"]


def test_rmsd_is_invariant_to_motion_and_symmetry():
    s, c, b, p = ethanol()
    assert best_rmsd((s, c, b, p), (s, c, b, p)) < 1e-6
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    moved = p @ q.T + np.array([3.0, -1.0, 2.0])
    assert best_rmsd((s, c, b, moved), (s, c, b, p)) < 1e-6
    # swap the amide's O and N positions' neighbours? no: swap the two symmetric hydrogens on C (heavy-atom RMSD ignores H anyway)
    rng = np.random.default_rng(1)
    noisy = p + rng.normal(scale=0.3, size=p.shape)
    assert 0.1 < best_rmsd((s, c, b, noisy), (s, c, b, p)) < 1.0


def test_symmetric_atoms_are_matched():
    # acetate-like symmetry: the two O of a carboxylate are equivalent; swapping their positions costs nothing
    from rdkit.Chem import AllChem

    mol = chem.Chem.AddHs(chem.Chem.MolFromSmiles("CC(=O)[O-]"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    e = sdf.mol_to_element(mol)
    s, c, b, p = e["atoms"], e["charges"], e["bonds"], e["pos"]
    o1, o2 = [i for i, x in enumerate(s) if x == "O"]
    swapped = p.copy()
    swapped[[o1, o2]] = p[[o2, o1]]
    assert best_rmsd((s, c, b, swapped), (s, c, b, p)) < 1e-6


def test_etkdg_baseline_and_figures():
    s, c, b, p = ethanol()
    confs = etkdg_positions(s, c, b, k=3, seed=0)
    assert len(confs) == 3 and confs[0].shape == p.shape
    relaxed = etkdg_positions(s, c, b, k=1, seed=0, mmff=True)
    assert len(relaxed) == 1
    f = rmsd_figures([0.2, 0.4, 0.9], failed=1)
    assert f["coverage"] == 0.5 and f["failed"] == 1 and f["rmsd_median"] == pytest.approx(0.4)  # median/mean over the 3 with an RMSD
    assert f["rmsd_mean"] == pytest.approx(0.5)
    assert rmsd_figures([0.3, float("nan")])["failed"] == 1


def test_kabsch_fallback():
    s, c, b, p = ethanol()
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))
    q = q * np.sign(np.linalg.det(q))  # a rotation
    assert kabsch_rmsd(p @ q.T + 1.0, p) < 1e-9
    assert kabsch_rmsd(p * 1.2, p) > 0.05
    collapsed = np.zeros_like(p)  # every atom at one point: still a finite RMSD
    assert np.isfinite(best_rmsd((s, c, b, collapsed), (s, c, b, p)))


def _tiny(name, tmp_path):
    recipe = load_recipe(name)
    recipe["data"]["options"] = {"source_limit": 300}
    recipe["model"]["options"] = dict(TINY)
    recipe["train"].update(steps=4, batch_size=8, log_every=2, checkpoint_every=4, max_minutes=None)
    recipe["sample"].update(n=6, steps=5, batch_size=6)
    out = tmp_path / name
    train(recipe, out, progress=False)
    return out


def test_conformer_recipe_samples_from_a_smiles_file(tmp_path, molecule_cache):
    torch.manual_seed(0)
    run = _tiny("qm9-conformers-cpu", tmp_path)
    summary = sample_run(run, progress=False)  # conditioned on the test split, scored against its DFT geometries
    assert set(summary["metrics"]) >= {"rmsd_median", "rmsd_mean", "coverage", "failed"} and "errors" not in summary["metrics"]
    smi = tmp_path / "molecules.smi"
    smi.write_text("CCO\nC1=CC=CN1\nnot_a_smiles((\nCCCl\n")
    out = tmp_path / "conformers"
    code = cli(["sample", str(run), "--reference", str(smi), "--n", "3", "--steps", "4", "--out", str(out), "--quiet"])
    assert code == 0
    back, failures = sdf.read_sdf(out / "samples.sdf")
    assert not failures and len(back) == 6  # 2 readable molecules x 3 conformers; the bad lines were skipped
    names = [line for line in (out / "samples.sdf").read_text().split("$$$$\n") if line.strip()]
    assert names[0].startswith("mol0_conf0") and names[5].startswith("mol1_conf2")
    assert [len(x["atoms"]) for x in back] == [9, 9, 9, 10, 10, 10]
    for element in back:  # the graph is the reference's, only positions were generated
        assert np.isfinite(element["pos"]).all() and np.abs(element["pos"]).sum() > 0
    assert sorted(back[0]["atoms"]) == sorted(["C", "C", "O"] + ["H"] * 6)


def test_reference_file_errors_are_one_line(tmp_path, molecule_cache, capsys):
    run = _tiny("qm9-conformers-cpu", tmp_path)
    bad = tmp_path / "bad.smi"
    bad.write_text("not_a_smiles((\nCCCl\n")
    assert cli(["sample", str(run), "--reference", str(bad), "--n", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no usable element" in err[0] and "2 skipped" in err[0]
    assert cli(["sample", str(run), "--reference", str(tmp_path / "missing.smi"), "--quiet"]) == 2


def test_de_novo_recipe_writes_files_and_figures(tmp_path, molecule_cache):
    torch.manual_seed(0)
    run = _tiny("qm9-3d-cpu", tmp_path)
    summary = sample_run(run, progress=False)
    files = sorted(p.rsplit("/", 1)[-1] for p in summary["files"])
    assert files == ["graphs.json", "molecules.png", "samples.sdf", "samples.xyz"]
    metrics = summary["metrics"]
    assert "errors" not in metrics
    for key in ("atom_stability", "molecule_stability", "atom_stability_distances", "molecule_stability_distances", "validity",
                "validity_largest_fragment", "validity_distances", "uniqueness", "atom_types_tv", "charges_tv", "bond_lengths_w1", "bond_angles_w1"):
        assert key in metrics
    assert json.loads((run / "samples" / "metrics.json").read_text())["n"] == 6
    # --reference needs conditioning fields: the de novo space has none
    assert cli(["sample", str(run), "--reference", str(run / "samples" / "samples.sdf"), "--quiet"]) == 2


@pytest.mark.parametrize("name,fields", [("qm9-3d", {"atoms", "charges", "bonds", "pos"}), ("qm9-3d-cpu", {"atoms", "charges", "bonds", "pos"}),
                                         ("qm9-conformers", {"pos"}), ("qm9-conformers-cpu", {"pos"})])
def test_recipes_load(name, fields):
    recipe = load_recipe(name)
    assert recipe["name"] == name and set(recipe["diffusion"]) == fields
    assert recipe["model"]["backbone"] == "egnn" and recipe["diffusion"]["pos"]["process"] == "zero-com-gaussian"
    assert recipe["sample"]["steps"] <= 100 and recipe["eval"]["reference"] == "test"
