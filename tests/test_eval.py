import json
import subprocess
import sys

import torch

from diffkit.evaluator import evaluate_path
from diffkit.oracle import ring


def test_eval_scores_a_sample_file_and_lists_bad_lines(tmp_path):
    good = ring(8).sample(1500, torch.Generator().manual_seed(4))
    lines = [f"{a:.5f} {b:.5f}" for a, b in good.tolist()] + ["not a number", "1.0 2.0 3.0"]
    path = tmp_path / "samples.txt"
    path.write_text("\n".join(lines) + "\n")
    result = evaluate_path("gmm", path)
    assert result["n_read"] == 1500 and result["n_invalid"] == 2
    reasons = {f["item"]: f["reason"] for f in result["invalid"]}
    assert "not numbers" in reasons["line 1501"] and "shape" in reasons["line 1502"]
    sw, floor = result["figures"]["sliced_wasserstein"], result["figures"]["sliced_wasserstein_floor"]
    assert sw < 3 * floor  # true draws score at the noise floor
    shifted = tmp_path / "shifted.txt"
    shifted.write_text("\n".join(f"{a + 1:.5f} {b:.5f}" for a, b in good.tolist()))
    assert evaluate_path("gmm", shifted)["figures"]["sliced_wasserstein"] > 10 * floor
    assert "SW2" in result["definitions"]["sliced-wasserstein"]


def test_eval_cli_writes_json(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": ring(8).sample(500, torch.Generator().manual_seed(1))}, str(tmp_path / "s.safetensors"))
    out = tmp_path / "figures.json"
    res = subprocess.run([sys.executable, "-m", "diffkit", "eval", "--task", "gmm", str(tmp_path / "s.safetensors"), "--json", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text())["n_read"] == 500
    res = subprocess.run([sys.executable, "-m", "diffkit", "eval", "--task", "gmm", str(tmp_path / "missing.txt")], capture_output=True, text=True)
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_every_first_party_metric_is_defined_in_the_docs_and_in_help():
    """The definitions are written once (the metric's docstring) and shown in docs/metrics.md and --help."""
    from pathlib import Path

    from diffkit.evaluator import definitions_markdown, metric_definitions
    from diffkit.registry import discover

    docs = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    ours = [c.name for (kind, _), c in discover().items() if kind == "metrics" and (c.distribution == "diffkit" or c.distribution.startswith("diffkit-"))]
    assert "sliced-wasserstein" in ours and "bits-per-dim" in ours
    stale = [name for name in ours if f"- **{name}**: {metric_definitions([name])[name]}" not in docs]
    assert not stale, f"docs/metrics.md is out of date for {stale}; regenerate it with: diffkit eval --definitions > docs/metrics.md"
    assert definitions_markdown().startswith("# Metric definitions")
    res = subprocess.run([sys.executable, "-m", "diffkit", "eval", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "sliced_wasserstein_floor" in res.stdout and "bits_per_dim" in res.stdout
