"""The shipped spoken-digits-mel model (two-stage: log-mel frames, Griffin-Lim): found by name, checked against its
card, sampled from Python as clips with their rate, and reproducing the card's figures from the command line."""
import json
import subprocess
import sys

import pytest

import diffkit
from diffkit import pretrained

pytestmark = pytest.mark.skipif("spoken-digits-mel" not in pretrained.names(), reason="diffkit-audio's shipped spoken-digits-mel model is not installed")


def test_load_gives_clips_with_their_rate():
    clips = diffkit.load("spoken-digits-mel").sample(3, labels=[0, 1, 2], steps=5)
    assert len(clips) == 3
    for clip in clips:
        wave, rate = clip
        assert rate == 8000 and wave.ndim == 2 and wave.shape[-1] > 1000 and float(wave.abs().max()) <= 1.0


def test_sample_by_name_reproduces_the_card(tmp_path):
    card = pretrained.card("spoken-digits-mel")
    res = subprocess.run([sys.executable, "-m", "diffkit", "sample", "spoken-digits-mel", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["shipped_model"] == "spoken-digits-mel" and summary["n"] == card["figures"]["n"]
    assert any(p.endswith(".wav") for p in summary["files"])
    tol = card["tolerance"]["relative"]
    for name in ("spoken_digits_accuracy", "spoken_digits_fd", "spoken_digits_is"):
        got, recorded = summary["metrics"][name], card["figures"]["metrics"][name]
        assert abs(got - recorded) <= tol * abs(recorded), (name, got, recorded)
