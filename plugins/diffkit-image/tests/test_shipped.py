"""The shipped image models (8×8 `digits`, two-stage 28×28 `mnist-latent`): found by name, checked against
their cards, sampled from Python in [0, 1], and reproducing the cards' figures from the command line outside
the checkout."""
import json
import subprocess
import sys

import pytest

import diffkit
from diffkit import pretrained
from diffkit.testing import needs_shipped

SHIPPED = {"digits": (1, 8, 8), "mnist-latent": (1, 28, 28)}



@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_shipped(n, "diffkit-image")) for n in SHIPPED])
def test_load_gives_images_in_the_unit_cube_for_the_labels_asked(name):
    model = diffkit.load(name)
    images = model.sample(10, labels=list(range(10)), steps=10)
    assert len(images) == 10 and all(x.shape == SHIPPED[name] and x.min() >= 0 and x.max() <= 1 for x in images)
    with pytest.raises(ValueError, match="one label per sample"):
        model.sample(3, labels=[1, 2])


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_shipped(n, "diffkit-image")) for n in SHIPPED])
def test_sample_by_name_reproduces_the_card(name, tmp_path):
    card = pretrained.card(name)
    res = subprocess.run([sys.executable, "-m", "diffkit", "sample", name, "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["shipped_model"] == name and summary["n"] == card["figures"]["n"]
    assert (tmp_path / f"{name}-samples" / "samples.png").exists()
    tol = card["tolerance"]["relative"]
    for metric in ("digits_accuracy", "digits_frechet_ratio"):
        got, recorded = summary["metrics"][metric], card["figures"]["metrics"][metric]
        assert abs(got - recorded) <= tol * abs(recorded), (metric, got, recorded)
    assert summary["metrics"]["digits_accuracy"] >= 0.9
