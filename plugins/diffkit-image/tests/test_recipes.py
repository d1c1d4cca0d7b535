"""Recipes, the conformance kit on every registered component, and the digits-smoke recipe end to end."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from diffkit.recipe import build_run, load_recipe

from diffkit.runs import sample_run
from diffkit.registry import load, names
from diffkit.testing import check_dataset, plugin_checks
from diffkit.training.trainer import train


def test_everything_is_registered():
    assert {"digits", "digits-smoke"} <= set(names("recipes"))
    assert {"digits", "image-folder"} <= set(names("datasets"))
    assert {"digits-frechet", "digits-accuracy"} <= set(names("metrics"))
    assert "unet" in names("backbones") and load("spaces", "image").name == "image"


@pytest.mark.parametrize("name", ["digits", "digits-smoke"])
def test_recipes_load(name):
    r = load_recipe(name)
    assert r["name"] == name and r["data"]["dataset"] == "digits" and r["data"]["options"]["size"] == 8
    assert r["model"]["backbone"] == "unet" and r["model"]["num_classes"] == 10 and r["train"]["p_uncond"] > 0
    assert set(r["diffusion"]) == {"x"} and r["eval"]["reference"] == "test"
    assert set(r["eval"]["metrics"]) == {"digits-frechet", "digits-accuracy"}
    assert ("bench" in r) == (name == "digits")  # smoke copies of recipes are not bench tasks


def test_bench_table_is_complete():
    from diffkit.bench import tier_recipe

    r = load_recipe("digits")
    for tier in ("quick", "standard", "full"):
        recipe, plan = tier_recipe(r, tier)
        assert plan["primary"] in ("digits_frechet_ratio", "digits_accuracy") and plan["nfe"] and plan["n"] >= 2
        assert {"ddim", "euler", "heun", "dpmpp-2m", "dpmpp-3m"} <= set(plan["samplers"])
    quick, plan = tier_recipe(r, "quick")
    assert quick["train"]["steps"] <= 300 and plan["n"] <= 200 and plan["ancestral_steps"] <= 100


# --- the conformance kit ----------------------------------------------------------------------------------
def _kit():
    """plugin_checks('diffkit-image'), less image-folder: no recipe uses it (it needs a folder), so it is checked below on one."""
    return [pytest.param(fn, id=cid) for cid, fn in plugin_checks("diffkit-image") if cid != "dataset:image-folder"]


@pytest.mark.parametrize("check", _kit())
def test_conformance(check):
    assert check(), "a check returns the list of contracts it verified"


def test_conformance_of_image_folder(tmp_path):
    g = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(5):
            path = tmp_path / "imgs" / cls / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(g.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(path)
    checked = check_dataset(load("datasets", "image-folder"), options={"root": str(tmp_path / "imgs"), "size": 8}, name="image-folder")
    assert "space" in checked


def test_plugin_kit_covers_every_component():
    ids = {cid for cid, _ in plugin_checks("diffkit-image")}
    assert ids == {"space:image", "backbone:unet", "dataset:digits", "dataset:image-folder", "metric:digits-frechet", "metric:digits-accuracy",
                   "recipe:digits", "recipe:digits-flow", "recipe:digits-smoke", "dataset:mnist", "representation:autoencoder", "recipe:mnist", "recipe:mnist-latent",
                   "shipped model:digits", "shipped model:mnist-latent"}


# --- end to end -------------------------------------------------------------------------------------------
def test_digits_smoke_end_to_end(tmp_path, classifier):
    recipe = load_recipe("digits-smoke")
    recipe["train"].update(steps=20, checkpoint_every=20, log_every=10)
    run_dir = tmp_path / "run"
    summary = train(recipe, run_dir, progress=False)
    assert summary["steps"] == 20 and math.isfinite(summary["loss"])
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20] and all(r["items_per_second"] > 0 for r in log)
    report = sample_run(run_dir, n=30, steps=4, out=tmp_path / "samples", progress=False)
    out = tmp_path / "samples"
    assert (out / "samples.png").exists() and all((out / f"samples_class{c}.png").exists() for c in range(10))
    assert len(list((out / "images").glob("*.png"))) == 30
    saved = json.loads((out / "metrics.json").read_text())
    figures = saved["metrics"]
    assert "errors" not in figures, figures.get("errors")
    for key in ("digits_frechet_distance", "digits_frechet_train_floor", "digits_frechet_ratio", "digits_accuracy", "digits_reference_accuracy"):
        assert math.isfinite(figures[key]), key
    assert 0.0 <= figures["digits_accuracy"] <= 1.0 and figures["digits_frechet_distance"] > 0
    assert saved["sampler"] == "dpmpp-2m" and saved["nfe"] == 4  # one (guided) evaluation per step
    assert report["files"][0].endswith("samples.png")
    # diffkit eval on the written PNGs reads back the same images and labels, so it gives the same figures
    from diffkit.evaluator import evaluate_path

    scored = evaluate_path("digits-smoke", out)
    assert scored["n_read"] == 30 and scored["n_labelled"] == 30 and scored["n_invalid"] == 0
    for key in ("digits_frechet_distance", "digits_frechet_train_floor", "digits_accuracy", "digits_reference_accuracy"):
        assert scored["figures"][key] == pytest.approx(figures[key], rel=1e-9, abs=1e-12), key


def test_bits_per_dim_is_not_blocked_by_the_image_space(classifier):
    """The core's probability-flow likelihood runs on the plugin's space and UNet (bits/dim is the core's metric)."""
    from diffkit.evaluation import EvalContext, bits_per_dim_metric

    run = build_run(load_recipe("digits-smoke"))
    reference = [run.dataset[i][0] for i in range(4)]
    ctx = EvalContext(generated=reference, reference=reference, labels=None, reference_labels=None, space=run.space,
                      extras={"denoiser": run.denoiser.eval(), "num_classes": run.num_classes, "memo": {}})
    out = bits_per_dim_metric(ctx, n=4, steps=3, batch_size=4)
    assert math.isfinite(out["bits_per_dim"]) and out["bits_per_dim"] > 0
    assert run.space.bin_width == pytest.approx(2 / 17)
