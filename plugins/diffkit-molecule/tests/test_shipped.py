"""The shipped QM9 models (``qm9-cpu``, the categorical diffusion, and ``qm9-cpu-flow``, discrete flow matching): found
by name, checked against their cards, sampled from Python as RDKit molecules, reproducing their cards' figures from the
command line outside the checkout; ``qm9-cpu`` fine-tuned on a SMILES file and sampled under the valence constraint."""
import json
import subprocess
import sys

import pytest
import torch

import diffkit
from diffkit import pretrained
from diffkit.testing import needs_shipped

pytestmark = needs_shipped("qm9-cpu", "diffkit-molecule")
BOTH = pytest.mark.parametrize("name", [
    "qm9-cpu", pytest.param("qm9-cpu-flow", marks=needs_shipped("qm9-cpu-flow", "diffkit-molecule"))])

CHECKED = ("validity", "valid_connected", "uniqueness", "connected")


@BOTH
def test_load_gives_rdkit_molecules(name):
    from rdkit import Chem

    mols = diffkit.load(name).sample(6, steps=20)
    assert len(mols) == 6 and all(isinstance(m, Chem.Mol) and 1 <= m.GetNumAtoms() <= 9 for m in mols)


@BOTH
def test_sample_by_name_reproduces_the_card(tmp_path, name):
    card = pretrained.card(name)
    res = subprocess.run([sys.executable, "-m", "diffkit", "sample", name, "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["shipped_model"] == name and summary["n"] == card["figures"]["n"] and summary["steps"] == card["figures"]["steps"]
    assert summary["sampler"] == card["figures"]["sampler"]
    assert (tmp_path / f"{name}-samples" / "samples.smi").exists() and (tmp_path / f"{name}-samples" / "molecules.png").exists()
    tol = card["tolerance"]["relative"]
    for metric in CHECKED:
        got, recorded = summary["metrics"][metric], card["figures"]["metrics"][metric]
        assert abs(got - recorded) <= tol * abs(recorded), (name, metric, got, recorded)
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


def test_sampling_keeps_the_valence_constraint_when_asked(monkeypatch):
    """``generate(..., constraint="valence")`` hands the space's constraint to the sampler, which applies it once per
    level (or on the late levels only with ``constraint_below``); the samples then break fewer valences than free ones."""
    from diffkit.runs import generate
    from diffkit_molecule.constraints import ValenceConstraint, largest_valence

    run = diffkit.load("qm9-cpu").run
    calls = []
    keep = ValenceConstraint.__call__
    monkeypatch.setattr(ValenceConstraint, "__call__", lambda self, before, after: calls.append(1) or keep(self, before, after))

    def over_valence(items):
        count = 0
        for item in items:
            symbols, bonds = run.space.to_graph(item)
            count += sum(int(v > largest_valence(s)) for s, v in zip(symbols, bonds.sum(1)))
        return count

    free, _, _ = generate(run, 64, steps=20, seed=3)
    kept, _, timing = generate(run, 64, steps=20, seed=3, constraint="valence")
    assert len(calls) == 20 and timing["constraint"] == "valence"
    assert over_valence(kept) <= over_valence(free) and over_valence(free) > 0
    calls.clear()
    generate(run, 64, steps=20, seed=3, constraint="valence", constraint_below=0.3)
    assert 0 < len(calls) < 20
