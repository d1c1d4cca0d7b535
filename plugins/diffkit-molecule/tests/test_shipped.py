"""The shipped qm9-cpu model: found by name, checked against its card, sampled from Python as RDKit molecules,
reproducing the card's figures from the command line outside the checkout, and fine-tuned on a SMILES file."""
import json
import subprocess
import sys

import pytest
import torch

import diffkit
from diffkit import pretrained
from diffkit.testing import needs_shipped

pytestmark = needs_shipped("qm9-cpu", "diffkit-molecule")

CHECKED = ("validity", "valid_connected", "uniqueness", "connected")


def test_load_gives_rdkit_molecules():
    from rdkit import Chem

    mols = diffkit.load("qm9-cpu").sample(6, steps=20)
    assert len(mols) == 6 and all(isinstance(m, Chem.Mol) and 1 <= m.GetNumAtoms() <= 9 for m in mols)


def test_sample_by_name_reproduces_the_card(tmp_path):
    card = pretrained.card("qm9-cpu")
    res = subprocess.run([sys.executable, "-m", "diffkit", "sample", "qm9-cpu", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["shipped_model"] == "qm9-cpu" and summary["n"] == card["figures"]["n"] and summary["steps"] == card["figures"]["steps"]
    assert (tmp_path / "qm9-cpu-samples" / "samples.smi").exists() and (tmp_path / "qm9-cpu-samples" / "molecules.png").exists()
    tol = card["tolerance"]["relative"]
    for name in CHECKED:
        got, recorded = summary["metrics"][name], card["figures"]["metrics"][name]
        assert abs(got - recorded) <= tol * abs(recorded), (name, got, recorded)
    assert summary["metrics"]["validity"] >= 0.9


def test_fine_tunes_from_the_shipped_weights_on_a_smiles_file(tmp_path):
    from diffkit.training.trainer import Trainer

    smi = tmp_path / "mine.smi"
    smi.write_text("\n".join(["CCO", "CC(=O)O", "c1ccccc1O", "CCN", "OCC(O)CO", "CC#N", "CCOC", "NC(=O)C", "C1CCOC1", "CC(C)O"] * 3) + "\n")
    recipe = tmp_path / "mine.toml"
    base = pretrained.locate("qm9-cpu")
    model = json.loads((base / "config.json").read_text())["recipe"]["model"]
    opts = ", ".join(f"{k} = {v}" for k, v in model["options"].items())
    recipe.write_text(f'''name = "my-molecules"
[data]
dataset = "smiles-file"
options = {{ path = "{smi}", atom_types = ["C", "N", "O", "F"], max_atoms = 9 }}
[diffusion.atoms]
process = "categorical-marginal"
frequencies = "data"
[diffusion.bonds]
process = "categorical-marginal"
frequencies = "data"
[model]
backbone = "graph-transformer"
options = {{ {opts} }}
[train]
steps = 2
batch_size = 8
init = "pretrained:qm9-cpu"
[sample]
n = 4
''')
    shipped = diffkit.load("qm9-cpu").run.denoiser.backbone.state_dict()
    trainer = Trainer(str(recipe), tmp_path / "run", progress=False)
    assert all(torch.equal(trainer.backbone.state_dict()[k], v) for k, v in shipped.items())
    trainer.fit()
    assert (tmp_path / "run" / "config.json").exists()
