"""Shipped models: cut from a trained run, found through entry points, checked on load, sampled by name
from Python and from the command line, and used to initialise a new training run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import diffkit
from diffkit import pretrained, registry
from diffkit.pretrained import PretrainedError, export, resolve
from diffkit.recipe import load_recipe
from diffkit.rundir import tensor_path
from diffkit.testing import needs_shipped
from diffkit.training.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[1]


def small_recipe(**model):
    recipe = load_recipe("gmm")
    recipe["name"] = "gmm-tiny"
    recipe["data"]["options"] = {"name": "ring8", "n": 2000}
    recipe["model"]["options"] = {"hidden": 32, "depth": 1, **model}
    recipe["train"].update(steps=20, batch_size=64, checkpoint_every=20, log_every=10, warmup=2)
    recipe["sample"].update(n=300)
    return recipe


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    root = tmp_path_factory.mktemp("shipped")
    train(small_recipe(), root / "run", progress=False)
    info = export(root / "run", root / "gmm-tiny", figures={"sampler": "dpmpp-2m", "steps": 20, "n": 300, "seed": 0, "metrics": {}},
                  made_by="test", tolerance={"relative": 0.1})
    registry.register("pretrained", "gmm-tiny", lambda: root / "gmm-tiny")
    yield root, info
    registry.unregister("pretrained", "gmm-tiny")


def test_export_keeps_only_what_sampling_needs(shipped):
    root, info = shipped
    files = sorted(p.name for p in (root / "gmm-tiny").iterdir())
    assert files == ["card.json", "config.json", "model.safetensors"]
    config = json.loads((root / "gmm-tiny" / "config.json").read_text())
    assert "optimizer" not in config and list(config["checksums"]) == ["model.safetensors"]
    assert info["recipe"] == "gmm-tiny" and info["steps"] == 20 and info["bytes"]["model.safetensors"] > 0
    full = tensor_path(root / "run").stat().st_size
    assert info["bytes"]["model.safetensors"] < 0.6 * full  # EMA weights only


def test_load_by_name_samples_in_the_natural_form(shipped):
    model = diffkit.load("gmm-tiny")
    xs = model.sample(7, steps=5)
    assert len(xs) == 7 and all(isinstance(x, torch.Tensor) and x.shape == (2,) and torch.isfinite(x).all() for x in xs)
    again = diffkit.load("gmm-tiny").sample(7, steps=5)
    assert all(torch.equal(a, b) for a, b in zip(xs, again)), "same seed, same samples"
    with pytest.raises(ValueError, match="n >= 1"):
        model.sample(0)


def test_load_accepts_a_run_directory(shipped):
    root, _ = shipped
    model = diffkit.load(root / "run")
    assert model.card is None and len(model.sample(3, steps=4)) == 3


def test_a_changed_byte_is_refused(shipped, tmp_path):
    root, _ = shipped
    import shutil

    copy = tmp_path / "gmm-broken"
    shutil.copytree(root / "gmm-tiny", copy)
    card = json.loads((copy / "card.json").read_text())
    card["sha256"]["model.safetensors"] = "0" * 64
    (copy / "card.json").write_text(json.dumps(card))
    registry.register("pretrained", "gmm-broken", lambda: copy)
    try:
        with pytest.raises(PretrainedError, match="does not match the SHA-256"):
            diffkit.load("gmm-broken")
    finally:
        registry.unregister("pretrained", "gmm-broken")


def test_names_and_paths_never_shadow_each_other(shipped, tmp_path, monkeypatch):
    root, _ = shipped
    monkeypatch.chdir(tmp_path)
    assert resolve("gmm-tiny") == (root / "gmm-tiny", "gmm-tiny")
    (tmp_path / "gmm-tiny").mkdir()
    with pytest.raises(PretrainedError, match=r"both a path here and a shipped model; write \./gmm-tiny .* or pretrained:gmm-tiny"):
        resolve("gmm-tiny")
    assert resolve("./gmm-tiny") == (Path("./gmm-tiny"), None)
    assert resolve("pretrained:gmm-tiny") == (root / "gmm-tiny", "gmm-tiny")
    with pytest.raises(PretrainedError, match="neither a run directory nor a shipped model"):
        resolve("no-such-thing")


def test_init_starts_from_the_shipped_weights_and_refuses_other_shapes(shipped, tmp_path):
    root, _ = shipped
    source = diffkit.load("gmm-tiny").run.denoiser.backbone.state_dict()
    trainer = Trainer(small_recipe(), tmp_path / "fine", init="gmm-tiny", progress=False)
    assert all(torch.equal(trainer.backbone.state_dict()[k], v) for k, v in source.items())
    assert trainer.recipe["train"]["init"] == "gmm-tiny"  # recorded in the run's recipe
    with pytest.raises(ValueError, match=r"tensor '.*' has shape .* in recipe 'gmm-tiny'"):
        Trainer(small_recipe(hidden=48), tmp_path / "wide", init="gmm-tiny", progress=False)


@needs_shipped("gmm", "diffkit")
def test_shipped_gmm_reproduces_its_card_from_the_command_line(tmp_path):
    card = pretrained.card("gmm")
    pretrained.verify(pretrained.locate("gmm"))
    res = subprocess.run([sys.executable, "-m", "diffkit", "sample", "gmm", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["shipped_model"] == "gmm" and (tmp_path / "gmm-samples" / "samples.png").exists()
    assert summary["n"] == card["figures"]["n"] and summary["sampler"] == card["figures"]["sampler"]
    tol = card["tolerance"]["relative"]
    for name, recorded in card["figures"]["metrics"].items():
        assert abs(summary["metrics"][name] - recorded) <= tol * abs(recorded) + 1e-9, (name, summary["metrics"][name], recorded)


def test_cli_lists_shipped_models(shipped, capsys):
    from diffkit.cli import main

    assert main(["pretrained", "--json"]) == 0
    cards = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert cards["gmm-tiny"]["recipe"] == "gmm-tiny"


def test_cli_lists_the_others_when_one_shipped_model_is_incomplete(shipped, tmp_path, capsys):
    from diffkit.cli import main

    registry.register("pretrained", "half-installed", lambda: tmp_path / "half-installed")  # no card.json there
    try:
        assert main(["pretrained", "--json"]) == 0
        captured = capsys.readouterr()
    finally:
        registry.unregister("pretrained", "half-installed")
    assert "gmm-tiny" in {c["name"] for c in json.loads(captured.out)}
    assert "skipped 'half-installed'" in captured.err and "card.json" in captured.err


def _make_pretrained():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_pretrained", REPO / "scripts" / "make_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_pretrained_cuts_a_trained_run_and_refigures_it(shipped, tmp_path, capsys):
    root, _ = shipped
    script = _make_pretrained()
    with pytest.raises(SystemExit, match=r"trained from recipe 'gmm-tiny' seed 0, not 'gmm' seed 0"):
        script.main(["gmm", "--run", str(root / "run"), "--dest", str(tmp_path / "wrong")])
    assert not (tmp_path / "wrong").exists()
    dest = tmp_path / "cut" / "gmm-cut"
    assert script.main(["gmm-tiny", "--run", str(root / "run"), "--n", "200", "--sampler", "heun", "--steps", "7", "--dest", str(dest),
                        "--trained-by", "a test"]) == 0
    card = json.loads((dest / "card.json").read_text())
    assert card["steps"] == 20 and card["figures"]["n"] == 200 and card["figures"]["training"]["steps"] == 20
    assert card["figures"]["sampler"] == "heun" and card["figures"]["steps"] == 7
    assert card["figures"]["trained_by"] == "a test" and "sliced_wasserstein" in card["figures"]["metrics"]
    # stopped by its step count, so the training time comes from the logged rates: Σ Δsteps × batch / rate
    from diffkit.rundir import read_log
    rated = [r for r in read_log(root / "run") if r.get("items_per_second")]
    batch = json.loads((root / "run" / "config.json").read_text())["recipe"]["train"]["batch_size"]
    expected = sum((r["step"] - p) * batch / r["items_per_second"] for r, p in zip(rated, [0] + [r["step"] for r in rated[:-1]]))
    training = card["figures"]["training"]
    assert training["train_seconds_from"] == "log rates" and training["train_seconds"] == pytest.approx(expected, abs=0.1) and expected > 0
    # sampling by name draws as the card's figures were measured: its count, sampler and steps
    assert {k: json.loads((dest / "config.json").read_text())["recipe"]["sample"][k] for k in ("n", "sampler", "steps")} == {"n": 200, "sampler": "heun", "steps": 7}
    pretrained.verify(dest)
    capsys.readouterr()
    assert script.main(["gmm-tiny", "--dest", str(dest), "--refigure"]) == 0
    again = json.loads((dest / "card.json").read_text())
    assert again["figures"]["figures_before"]["metrics"] == card["figures"]["metrics"]
    assert again["figures"]["metrics"] == pytest.approx(card["figures"]["metrics"])  # same code, same seed: the same figures
    pretrained.verify(dest)


def test_needs_shipped_skips_only_what_is_missing():
    missing = needs_shipped("no-such-model", "diffkit-nothing")
    assert missing.name == "skipif" and missing.args == (True,) and "diffkit-nothing's shipped no-such-model model is not installed" in missing.kwargs["reason"]
    present = pretrained.names()[0]
    assert needs_shipped(present).args == (False,)
