"""Recipes and conformance. The conformance kit's plugin_checks would pick the GPU-sized ``spoken-digits`` recipe
(3000 clips, 18-layer DiffWave) for every component, so the checks here run each component on the quick recipe."""
import json

import pytest

from diffkit.evaluation import EvalContext, split_items
from diffkit.recipe import build_run, load_dataset, load_recipe
from diffkit.runs import load_run
from diffkit.registry import load, names
from diffkit.testing import check_backbone, check_metric, check_recipe, check_space


def test_everything_is_registered():
    assert {"spoken-digits", "spoken-digits-smoke", "spoken-digits-vocoder-smoke"} <= set(names("recipes"))
    assert {"spoken-digits", "audio-folder"} <= set(names("datasets"))
    assert {"spoken-digits-frechet", "spoken-digits-is", "spoken-digits-accuracy", "mrstft"} <= set(names("metrics"))
    assert "diffwave" in names("backbones") and load("spaces", "audio").name == "audio"


@pytest.mark.parametrize("name", ["spoken-digits", "spoken-digits-smoke"])
def test_recipes_load(name):
    r = load_recipe(name)
    assert r["name"] == name and r["data"]["dataset"] == "spoken-digits" and r["model"]["backbone"] == "diffwave"
    assert set(r["diffusion"]) == {"wave"} and r["model"]["num_classes"] == 10 and r["eval"]["reference"] == "test"
    assert set(r["eval"]["metrics"]) == {"spoken-digits-frechet", "spoken-digits-is", "spoken-digits-accuracy", "mrstft"}


@pytest.fixture(scope="module")
def quick_run():
    return build_run(load_recipe("spoken-digits-smoke"))


def test_space_and_backbone_conformance(quick_run):
    elements, _ = split_items([quick_run.dataset[i] for i in range(6)])
    assert "round-trip" in check_space(quick_run.space, elements, registered_name="audio")
    opts = load_recipe("spoken-digits-smoke")["model"]["options"]
    checked = check_backbone(load("backbones", "diffwave"), quick_run.space, quick_run.diffusion, examples=elements[:4], stats=quick_run.stats,
                             num_classes=10, options=opts, name="diffwave")
    assert "gradients" in checked and "batch-independence" in checked


@pytest.mark.slow
def test_smoke_recipe_trains_samples_and_scores(tmp_path):
    checked = check_recipe("spoken-digits-smoke", steps=2, sample_n=4, sample_steps=2, out_dir=tmp_path / "run")
    assert "evaluate" in checked
    metrics = (tmp_path / "run" / "samples" / "metrics.json")
    assert metrics.exists() and "spoken_digits_fd" in metrics.read_text()
    assert (tmp_path / "run" / "samples" / "sample_spectrograms.png").exists()


def test_registered_metrics_conformance(quick_run):
    recipe = load_recipe("spoken-digits-smoke")
    ref = load_dataset(recipe, "test")
    gen, gen_labels = split_items([quick_run.dataset[i] for i in range(40)])
    ref_items, ref_labels = split_items(ref)
    ctx = EvalContext(generated=gen, reference=ref_items, labels=gen_labels, reference_labels=ref_labels, train=quick_run.dataset, space=ref.space)
    for name in recipe["eval"]["metrics"]:
        assert "output" in check_metric(load("metrics", name), ctx, name=name)


@pytest.mark.slow
def test_vocoder_recipe_trains_and_samples_from_reference_mels(tmp_path):
    recipe = load_recipe("spoken-digits-vocoder-smoke")
    assert recipe["data"]["space"] == {"n_mels": 40, "hop": 64} and "mel" not in recipe["diffusion"] and recipe["model"]["num_classes"] == 0
    checked = check_recipe("spoken-digits-vocoder-smoke", steps=2, sample_n=4, sample_steps=2, out_dir=tmp_path / "run")
    assert "evaluate" in checked
    run = load_run(tmp_path / "run")
    assert run.space.config()["n_mels"] == 40 and run.denoiser.backbone.n_mels == 40 and list(run.diffusion.processes) == ["wave"]
    samples = tmp_path / "run" / "samples"
    generated = sorted(p.name for p in samples.glob("*.wav"))
    real = sorted(p.name for p in (samples / "reference").glob("*.wav"))
    assert len(generated) == 4 and generated == real  # each vocoded clip beside the clip whose mels it was given
    test = load_dataset(recipe, "test")
    assert [int(name.split("class")[1][0]) for name in real] == [test[i][1] for i in range(4)]
    metrics = json.loads((samples / "metrics.json").read_text())["metrics"]
    assert metrics["mrstft_distance"] > 0 and 0 <= metrics["spoken_digits_accuracy"] <= 1
