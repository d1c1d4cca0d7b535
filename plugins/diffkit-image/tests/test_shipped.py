"""The shipped digits model: found by name, checked against its card, sampled from Python in [0, 1], and
reproducing the card's figures from the command line outside the checkout."""
import json
import subprocess
import sys

import pytest
import torch

import diffkit
from diffkit import pretrained

pytestmark = pytest.mark.skipif("digits" not in pretrained.names(), reason="diffkit-image's shipped digits model is not installed")


def test_load_gives_images_in_the_unit_cube_for_the_labels_asked():
    model = diffkit.load("digits")
    images = model.sample(10, labels=list(range(10)), steps=10)
    assert len(images) == 10 and all(x.shape == (1, 8, 8) and x.min() >= 0 and x.max() <= 1 for x in images)
    with pytest.raises(ValueError, match="one label per sample"):
        model.sample(3, labels=[1, 2])


def test_sample_by_name_reproduces_the_card(tmp_path):
    card = pretrained.card("digits")
    res = subprocess.run([sys.executable, "-m", "diffkit", "sample", "digits", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["shipped_model"] == "digits" and summary["n"] == card["figures"]["n"]
    assert (tmp_path / "digits-samples" / "samples.png").exists()
    tol = card["tolerance"]["relative"]
    for name in ("digits_accuracy", "digits_frechet_ratio"):
        got, recorded = summary["metrics"][name], card["figures"]["metrics"][name]
        assert abs(got - recorded) <= tol * abs(recorded), (name, got, recorded)
    assert torch.tensor(summary["metrics"]["digits_accuracy"]) >= 0.9
