"""`diffkit new-plugin`: the scaffold is complete, refuses bad names, and its output installs, trains,
samples and passes its own conformance tests unchanged (the slow end-to-end test)."""
import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import diffkit
from diffkit.scaffold import new_plugin, placeholders, render, template_files


def test_templates_are_data_not_modules():
    names = [rel for rel, _ in template_files()]
    assert names and all(rel.endswith(".tmpl") for rel in names)
    assert {"setup.cfg.tmpl", "pyproject.toml.tmpl", "README.md.tmpl", "__module__/__init__.py.tmpl", "tests/test___module__.py.tmpl"} <= set(names)


def test_scaffold_writes_a_complete_distribution(tmp_path):
    root = new_plugin("point-cloud", tmp_path)
    assert root == tmp_path.resolve() / "diffkit-point-cloud"
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert {"setup.cfg", "pyproject.toml", "README.md", "diffkit_point_cloud/__init__.py", "diffkit_point_cloud/space.py", "diffkit_point_cloud/data.py",
            "diffkit_point_cloud/model.py", "diffkit_point_cloud/recipes/point-cloud.toml", "tests/test_diffkit_point_cloud.py"} <= files
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "{{" not in text and "__module__" not in str(path), f"unfilled placeholder in {path}"
            if path.suffix == ".py":
                ast.parse(text, filename=str(path))
    cfg = (root / "setup.cfg").read_text()
    assert "name = diffkit-point-cloud" in cfg and "point-cloud = diffkit_point_cloud.space:PointCloudSpace" in cfg
    assert 'name = "point-cloud"' in (root / "diffkit_point_cloud/space.py").read_text()


@pytest.mark.parametrize("bad", ["Bad", "9lives", "two--hyphens", "under_score", "diffkit-x", ""])
def test_bad_names_are_refused_with_one_line(tmp_path, bad):
    with pytest.raises(ValueError) as err:
        new_plugin(bad, tmp_path)
    assert "\n" not in str(err.value) and repr(bad) in str(err.value)


def test_existing_target_is_refused(tmp_path):
    new_plugin("demo", tmp_path)
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        new_plugin("demo", tmp_path)


def test_unknown_placeholder_is_an_error():
    values = placeholders("demo")
    assert render("{{module}}:{{Class}}", values) == "diffkit_demo:DemoSpace"
    with pytest.raises(KeyError, match="unknown"):
        render("{{nope}}", values)


def _venv_seeing_this_environment(path: Path) -> Path:
    """A new virtual environment at ``path`` whose interpreter sees the packages of the one running the tests.

    ``python -m venv --system-site-packages`` is not that when the tests run in a virtual environment:
    the new one would see the *base* interpreter's site-packages (perhaps an old setuptools without
    ``bdist_wheel`` and no ``wheel``), not the outer environment's. So the new environment gets no pip of
    its own and a ``.pth`` file that adds every site-packages folder on this interpreter's ``sys.path``
    (``site.addsitedir``, so the editable installs' own ``.pth`` files there are honoured too)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    outer = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    inner = subprocess.run([str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(inner) / "_outer_environment.pth").write_text(f"import site; list(map(site.addsitedir, {outer!r}))\n")
    return path / "bin" / "python"


def test_a_child_venv_sees_the_packages_of_the_environment_running_the_tests(tmp_path):
    import torch

    py = _venv_seeing_this_environment(tmp_path / "venv")
    probe = "import setuptools, torch, pip; print(torch.__file__); print(setuptools.__version__)"
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    import setuptools

    assert out.stdout.split() == [torch.__file__, setuptools.__version__]


@pytest.mark.slow
def test_scaffolded_plugin_installs_trains_samples_and_passes_its_tests(tmp_path):
    """Scaffold, install into a fresh venv that sees this interpreter's packages (torch, this diffkit, pip, setuptools, wheel),
    then `diffkit plugins`, `diffkit train NAME-smoke --steps 20`, `diffkit sample`, `diffkit bench --tier quick --task NAME`
    and the plugin's own pytest."""
    root = new_plugin("demo-e2e", tmp_path)
    py = str(_venv_seeing_this_environment(tmp_path / "venv"))
    env = {**os.environ, "PYTHONPATH": str(Path(diffkit.__file__).resolve().parents[1]), "DIFFKIT_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}

    def run(*args, cwd=tmp_path):
        res = subprocess.run([py, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"{' '.join(args)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
        return res

    run("-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", str(root))
    rows = json.loads(run("-m", "diffkit", "plugins", "--json").stdout)
    mine = {(r["kind"], r["name"]): r["status"] for r in rows if r["distribution"] == "diffkit-demo-e2e"}
    assert mine == {("space", "demo-e2e"): "ok", ("backbone", "demo-e2e-mlp"): "ok", ("dataset", "demo-e2e-blobs"): "ok",
                    ("metric", "demo-e2e-moments"): "ok", ("recipe", "demo-e2e"): "ok", ("recipe", "demo-e2e-smoke"): "ok"}
    trained = json.loads(run("-m", "diffkit", "train", "demo-e2e-smoke", "--steps", "20", "--out", str(tmp_path / "run"), "--quiet").stdout)
    assert trained["steps"] == 20
    sampled = json.loads(run("-m", "diffkit", "sample", str(tmp_path / "run"), "--n", "64", "--steps", "5", "--quiet").stdout)
    assert sampled["n"] == 64 and all(Path(p).exists() for p in sampled["files"])
    assert "moments_error" in sampled["metrics"]
    run("-m", "diffkit", "bench", "--tier", "quick", "--task", "demo-e2e", "--out", str(tmp_path / "bench"), "--quiet")
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    task = report["tasks"]["demo-e2e"]
    assert "error" not in task, task
    assert {r["sampler"] for r in task["rows"]} == {"ddim", "heun", "dpmpp-2m", "ancestral"}
    assert all(math.isfinite(r["metrics"]["moments_error"]) for r in task["rows"])
    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(root), cwd=root)
    assert " passed" in tests.stdout and "failed" not in tests.stdout
