import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffkit import registry
from diffkit.rundir import tensor_path


def make_dist(root: Path, name: str, entry_points: str, modules: dict | None = None) -> Path:
    """A minimal installed distribution (a .dist-info folder) on a private sys.path entry."""
    info = root / f"{name.replace('-', '_')}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for mod, source in (modules or {}).items():
        (root / f"{mod}.py").write_text(textwrap.dedent(source))
    return root


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    make_dist(tmp_path, "good-plugin", """
        [diffkit.samplers]
        good-sampler = good_mod:sampler
        """, {"good_mod": "def sampler(denoiser, state, times, **kw):\n    return state\n"})
    make_dist(tmp_path, "broken-plugin", """
        [diffkit.backbones]
        broken-net = broken_mod:build
        """, {"broken_mod": "import not_a_real_module_xyz\n"})
    make_dist(tmp_path, "rival-a", "[diffkit.metrics]\nshared-name = good_mod:sampler\n")
    make_dist(tmp_path, "rival-b", "[diffkit.metrics]\nshared-name = good_mod:sampler\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.discover(refresh=True)
    yield tmp_path
    monkeypatch.undo()
    registry.discover(refresh=True)


def run_cli(*args, extra_path=None, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "diffkit", *args], capture_output=True, text=True, env=env, timeout=600)


def test_core_registers_its_own_components():
    for kind, name in [("samplers", "dpmpp-2m"), ("processes", "vp-cosine"), ("spaces", "molecular-graph"), ("recipes", "gmm"), ("datasets", "gmm"), ("backbones", "mlp"), ("metrics", "sliced-wasserstein")]:
        comp = registry.discover()[(kind, name)]
        assert comp.distribution == "diffkit"
        assert registry.load(kind, name) is not None


def test_broken_plugin_is_reported_and_breaks_nothing(fake_plugins):
    assert registry.load("samplers", "good-sampler")(None, "s", None) == "s"
    with pytest.raises(registry.RegistryError, match="broken-net.*broken-plugin.*No module named 'not_a_real_module_xyz'"):
        registry.load("backbones", "broken-net")
    assert registry.load("samplers", "ddim") is not None


def test_name_claimed_twice_names_both_distributions(fake_plugins):
    with pytest.raises(registry.RegistryError) as err:
        registry.load("metrics", "shared-name")
    assert "rival-a" in str(err.value) and "rival-b" in str(err.value)


def test_unknown_name_gets_the_core_extras_as_install_hint():
    # the core knows its own extras (its metadata), never the names its plugins register
    with pytest.raises(registry.RegistryError, match=r"no backbone named 'imaginary-net'.*pip install 'diffkit\[molecule\]'"):
        registry.load("backbones", "imaginary-net")


def test_unknown_name_recorded_with_its_distribution_names_that_distribution():
    with pytest.raises(registry.RegistryError, match=r"came from the distribution diffkit-imaginary: pip install diffkit-imaginary"):
        registry.load("backbones", "imaginary-net", provided_by="diffkit-imaginary")


def test_cli_plugins_json_lists_every_component_with_status(fake_plugins):
    res = run_cli("plugins", "--json", extra_path=fake_plugins)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    by_name = {(r["kind"], r["name"]): r for r in rows}
    assert set(rows[0]) >= {"kind", "name", "distribution", "version", "status"}
    assert by_name[("sampler", "good-sampler")]["status"] == "ok" and by_name[("sampler", "good-sampler")]["version"] == "0.3"
    assert by_name[("backbone", "broken-net")]["status"] == "broken" and "not_a_real_module_xyz" in by_name[("backbone", "broken-net")]["error"]
    assert by_name[("metric", "shared-name")]["status"] == "conflict"
    assert by_name[("sampler", "dpmpp-2m")]["distribution"] == "diffkit"


def test_import_and_help_load_no_plugin():
    code = ("import sys, diffkit, diffkit.cli\n"
            "try:\n    diffkit.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('rdkit', 'torchaudio', 'torch_geometric', 'diffkit_image', 'diffkit_audio', 'diffkit_molecule', 'sklearn')]\n"
            "print('HEAVY', heavy)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout


def test_cli_errors_are_one_line_with_the_fix(tmp_path):
    res = run_cli("train", "no-such-recipe")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no recipe named 'no-such-recipe'" in lines[0] and "Traceback" not in res.stderr
    res = run_cli("sample", str(tmp_path))
    assert res.returncode == 2 and "not a diffkit run" in res.stderr
    res = run_cli("refit-first-stage", str(tmp_path), "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "needs at least one --set KEY=VALUE" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run_cli("refit-first-stage", str(tmp_path), "--out", str(tmp_path / "x"), "--set", "learned_kind")
    assert res.returncode == 2 and "--set takes KEY=VALUE" in res.stderr
    res = run_cli("tune-first-stage", str(tmp_path), "--out", str(tmp_path / "x"), "--minutes", "1")
    assert res.returncode == 2 and "not a diffkit run" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run_cli("tune-first-stage", str(tmp_path), "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "--minutes" in res.stderr
    res = run_cli("--debug", "sample", str(tmp_path))
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_cli_train_then_sample_writes_natural_outputs(tmp_path):
    out = tmp_path / "run"
    res = run_cli("train", "gmm-smoke", "--out", str(out), "--steps", "200", "--seed", "3", "--quiet")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["steps"] == 200
    for name in ("config.json", "log.jsonl"):
        assert (out / name).exists()
    assert tensor_path(out).exists()
    res = run_cli("sample", str(out), "--n", "500", "--sampler", "heun", "--steps", "10", "--out", str(tmp_path / "s"), "--quiet")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["nfe"] == 19 and summary["sampler"] == "heun"
    assert (tmp_path / "s" / "samples.png").stat().st_size > 1000
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert 0 < metrics["metrics"]["sliced_wasserstein"] < 1.0


def test_cli_train_accepts_a_toml_recipe(tmp_path):
    from diffkit.recipes import read_packaged

    text = (Path(__import__("diffkit").__file__).parent / "recipes" / "gmm.toml").read_text()
    path = tmp_path / "mine.toml"
    path.write_text(text.replace('name = "gmm"', 'name = "mine"'))
    res = run_cli("train", str(path), "--out", str(tmp_path / "r"), "--steps", "3", "--quiet")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "r" / "config.json").read_text())["recipe"]["name"] == "mine"
    assert read_packaged("diffkit.recipes", "gmm.toml")["name"] == "gmm"
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[data\n")
    res = run_cli("train", str(bad))
    assert res.returncode == 2 and "not valid TOML" in res.stderr


@pytest.fixture
def hostile_plugins(tmp_path, monkeypatch):
    make_dist(tmp_path, "exit-plugin", """
        [diffkit.metrics]
        exits-on-import = exit_mod:metric
        """, {"exit_mod": "import sys\nsys.exit(3)\n"})
    make_dist(tmp_path, "squatter", """
        [diffkit.backbones]
        mlp = squat_mod:build
        """, {"squat_mod": "def build(*a, **k):\n    raise RuntimeError('not the real mlp')\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.discover(refresh=True)
    yield tmp_path
    monkeypatch.undo()
    registry.discover(refresh=True)


def test_plugin_calling_sys_exit_on_import_is_reported_as_broken(hostile_plugins):
    with pytest.raises(registry.RegistryError, match=r"metric 'exits-on-import' from exit-plugin 0.3 is broken \(SystemExit: 3\)"):
        registry.load("metrics", "exits-on-import")
    res = run_cli("plugins", "--json", extra_path=hostile_plugins)
    assert res.returncode == 0, res.stderr
    rows = {(r["kind"], r["name"], r["distribution"]): r for r in json.loads(res.stdout)}
    assert rows[("metric", "exits-on-import", "exit-plugin")]["status"] == "broken"
    res = run_cli("eval", "--help", extra_path=hostile_plugins)
    assert res.returncode == 0 and "exits-on-import" in res.stdout and "SystemExit" in res.stdout, res.stderr[-2000:]


def test_a_plugin_claiming_a_core_name_never_disables_the_core_component(hostile_plugins):
    from diffkit.backbones import build_mlp

    assert registry.load("backbones", "mlp") is build_mlp
    assert registry.discover()[("backbones", "mlp")].distribution == "diffkit"
    claims = [c for c in registry.components(check=False) if c.name == "mlp" and c.distribution == "squatter"]
    assert len(claims) == 1 and claims[0].status == "conflict" and "the core's is used" in claims[0].error and "Rename it in squatter" in claims[0].error
