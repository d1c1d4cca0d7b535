"""The wheelhouse: every diffkit distribution built into one folder installs in a fresh virtual
environment with ``pip install --find-links WHEELHOUSE "diffkit[molecule]"`` and works there.

Slow (it builds wheels and installs torch and RDKit into a new environment), but CI runs it.
"""
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from diffkit.packaging import build_wheelhouse, plugin_dirs

pytestmark = pytest.mark.slow

OUTSIDE_CHECKOUT = Path(os.environ.get("TMPDIR", "/tmp"))


def _isolated_env(**extra):
    """The environment for the fresh venv's commands: no PYTHONPATH leaking the checkout in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(extra)
    return env


def _run(cmd, **kw):
    # run outside the checkout, or ``python -c "import diffkit"`` finds ./diffkit through sys.path[0]
    kw.setdefault("cwd", OUTSIDE_CHECKOUT)
    kw.setdefault("env", _isolated_env())
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, **kw)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheelhouse")
    wheels = build_wheelhouse(out)
    return out, wheels


def test_wheelhouse_holds_the_core_and_every_plugin(wheelhouse):
    _, wheels = wheelhouse
    names = {w.name.split("-")[0] for w in wheels}
    expected = {"diffkit"} | {d.name.replace("-", "_") for d in plugin_dirs()}
    assert expected <= names, f"missing wheels: {expected - names}"


@pytest.fixture(scope="module")
def molecule_env(wheelhouse, tmp_path_factory):
    if not any(d.name == "diffkit-molecule" for d in plugin_dirs()):
        pytest.skip("plugins/diffkit-molecule is not in this checkout")
    folder, _ = wheelhouse
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # diffkit's own distributions can only come from the wheelhouse: none is on any index
    # a CPU build of torch running the tests asks for the same build (pip finds it where the outer one came from:
    # a find-links folder or the CPU index in pip's configuration), not the index's multi-GB CUDA build
    import torch

    same_torch = [f"torch=={torch.__version__}"] if "+cpu" in torch.__version__ else []
    _run([str(py), "-m", "pip", "install", "--progress-bar", "off", "-q", "--find-links", str(folder), "diffkit[molecule]", *same_torch])
    return py


def test_fresh_venv_installs_diffkit_molecule_from_the_wheelhouse(molecule_env):
    py = molecule_env
    freeze = _run([str(py), "-m", "pip", "list", "--format", "json"]).stdout
    installed = {p["name"].lower(): p["version"] for p in json.loads(freeze)}
    assert installed.get("diffkit") == "0.1.0" and installed.get("diffkit-molecule") == "0.1.0"
    where = _run([str(py), "-c", "import diffkit, diffkit_molecule; print(diffkit.__file__); print(diffkit_molecule.__file__)"]).stdout
    env_root = str(py.parent.parent)
    paths = where.split()
    assert len(paths) == 2 and all(p.startswith(env_root) and "site-packages" in p for p in paths), (
        f"diffkit was imported from outside the fresh venv {env_root}: {paths}")


def test_molecule_toolkit_works_in_the_fresh_venv(molecule_env, tmp_path):
    py = molecule_env
    env = _isolated_env(DIFFKIT_CACHE=str(tmp_path / "cache"))
    rows = json.loads(_run([str(py), "-m", "diffkit", "plugins", "--json"], env=env).stdout)
    molecule = [r for r in rows if r["distribution"] == "diffkit-molecule"]
    assert molecule and all(r["status"] == "ok" for r in molecule), molecule
    assert {"qm9", "qm9-smoke"} <= {r["name"] for r in molecule if r["kind"] == "recipe"}
    run_dir = tmp_path / "run"
    _run([str(py), "-m", "diffkit", "train", "qm9-smoke", "--out", str(run_dir), "--steps", "5", "--quiet"], env=env)
    res = _run([str(py), "-m", "diffkit", "sample", str(run_dir), "--n", "16", "--steps", "10", "--out", str(tmp_path / "samples"), "--quiet"], env=env)
    summary = json.loads(res.stdout)
    assert summary["n"] == 16
    assert any(f.endswith(".smi") or f.endswith(".txt") for f in summary["files"]), summary["files"]


def test_shipped_model_samples_in_the_fresh_venv_and_matches_its_card(molecule_env, tmp_path):
    """The core's shipped gmm model, installed from the wheelhouse: sampled by name outside the checkout,
    its figures match the card within the card's tolerance."""
    py = molecule_env
    env = _isolated_env(DIFFKIT_CACHE=str(tmp_path / "cache"))
    card = json.loads(_run([str(py), "-m", "diffkit", "pretrained", "--json"], env=env).stdout)
    gmm = next(c for c in card if c["name"] == "gmm")
    res = _run([str(py), "-m", "diffkit", "sample", "gmm", "--quiet"], env=env, cwd=tmp_path)
    summary = json.loads(res.stdout)
    assert summary["shipped_model"] == "gmm" and (tmp_path / "gmm-samples" / "samples.png").exists()
    recorded = gmm["figures"]["metrics"]["sliced_wasserstein"]
    assert abs(summary["metrics"]["sliced_wasserstein"] - recorded) <= gmm["tolerance"]["relative"] * recorded


def test_shipped_molecule_model_samples_molecules_in_the_fresh_venv(molecule_env, tmp_path):
    """diffkit-molecule's shipped qm9-cpu and qm9-cpu-flow weights travel in its wheel; qm9-cpu, sampled by name in the fresh venv,
    before any training, they give SMILES that the venv's own RDKit reads (the card: 0.995 valid at 100
    steps; 20 steps and 32 molecules here, so the bar is lower, and still far above what untrained weights give)."""
    py = molecule_env
    env = _isolated_env(DIFFKIT_CACHE=str(tmp_path / "cache"))
    listed = {c["name"] for c in json.loads(_run([str(py), "-m", "diffkit", "pretrained", "--json"], env=env).stdout)}
    assert {"qm9-cpu", "qm9-cpu-flow"} <= listed, listed
    out = tmp_path / "qm9-cpu-samples"
    res = _run([str(py), "-m", "diffkit", "sample", "qm9-cpu", "--n", "32", "--steps", "20", "--no-metrics",
                "--out", str(out), "--quiet"], env=env, cwd=tmp_path)
    summary = json.loads(res.stdout)
    assert summary["shipped_model"] == "qm9-cpu" and summary["n"] == 32
    smi = next(f for f in summary["files"] if f.endswith(".smi"))
    check = ("import sys\nfrom rdkit import Chem, RDLogger\nRDLogger.DisableLog('rdApp.*')\n"
             "lines = [l.split()[0] for l in open(sys.argv[1]) if l.strip() and not l.startswith('#')]\n"
             "print(len(lines), sum(Chem.MolFromSmiles(s) is not None for s in lines))")
    total, valid = map(int, _run([str(py), "-c", check, smi], env=env).stdout.split())
    assert total == 32 and valid >= 24, f"{valid} of {total} sampled SMILES parse"
