"""The shipped spoken-digit models (two-stage `spoken-digits-mel`: log-mel frames and a learned vocoder; waveform
`spoken-digits-cpu`: patched DiffWave): found by name, checked against their cards, sampled from Python as clips
with their rate, and reproducing the cards' figures from the command line."""
import json
import subprocess
import sys

import pytest

import diffkit
from diffkit import pretrained
from diffkit.testing import needs_shipped

SHIPPED = ["spoken-digits-mel", "spoken-digits-cpu"]



@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_shipped(n, "diffkit-audio")) for n in SHIPPED])
def test_load_gives_clips_with_their_rate(name):
    clips = diffkit.load(name).sample(3, labels=[0, 1, 2], steps=5)
    assert len(clips) == 3
    for clip in clips:
        wave, rate = clip
        assert rate == 8000 and wave.ndim == 2 and wave.shape[-1] > 1000 and float(wave.abs().max()) <= 1.0


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_shipped(n, "diffkit-audio")) for n in SHIPPED])
def test_sample_by_name_reproduces_the_card(name, tmp_path):
    card = pretrained.card(name)
    res = subprocess.run([sys.executable, "-m", "diffkit", "sample", name, "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["shipped_model"] == name and summary["n"] == card["figures"]["n"]
    assert any(p.endswith(".wav") for p in summary["files"])
    tol = card["tolerance"]["relative"]
    for metric in ("spoken_digits_accuracy", "spoken_digits_fd", "spoken_digits_is"):
        got, recorded = summary["metrics"][metric], card["figures"]["metrics"][metric]
        assert abs(got - recorded) <= tol * abs(recorded), (metric, got, recorded)
