"""What a new user meets first: a help that answers at once, progress that reads well in a log."""
import io
import os
import subprocess
import sys

from diffkit.cli import main
from diffkit.progress import progress_bar


def test_the_help_path_imports_no_torch():
    probe = ("import sys\nfrom diffkit.cli import main\n"
             "for argv in (['--help'], ['train', '--help'], ['--version']):\n"
             "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
             "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_diffkit_state_is_still_reachable_from_the_package():
    import diffkit
    from diffkit.state import State

    assert diffkit.State is State


def test_the_cli_asks_openmp_to_wait_passively_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["--version"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["--version"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_progress_in_a_log_is_whole_lines_without_carriage_returns(monkeypatch):
    monkeypatch.setenv("DIFFKIT_PROGRESS_SECONDS", "0")
    log = io.StringIO()  # not a terminal
    bar = progress_bar(5, "train demo", stream=log)
    for _ in range(5):
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) >= 5 and all(line.startswith("train demo:") for line in lines)
    assert "5/5" in lines[-1]


def test_progress_in_a_log_is_rate_limited(monkeypatch):
    monkeypatch.setenv("DIFFKIT_PROGRESS_SECONDS", "3600")
    log = io.StringIO()
    bar = progress_bar(10_000, "sampling", stream=log)
    for _ in range(10_000):
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) <= 3, lines  # the start, (at most one more,) and the final count
    assert "10000/10000" in lines[-1]


def test_a_bad_progress_interval_is_one_clear_error(monkeypatch):
    import pytest

    monkeypatch.setenv("DIFFKIT_PROGRESS_SECONDS", "often")
    with pytest.raises(ValueError, match="DIFFKIT_PROGRESS_SECONDS must be a number"):
        progress_bar(3, "x", stream=io.StringIO())


# --- recipes reject typos ----------------------------------------------------------------------
import pytest  # noqa: E402

from diffkit.recipe import RecipeError, load_recipe  # noqa: E402
from diffkit.recipe_schema import validate_components, validate_recipe  # noqa: E402

GMM = {"name": "tiny", "data": {"dataset": "gmm", "options": {"name": "ring8", "n": 256}}, "diffusion": {"x": {"process": "vp-cosine"}},
       "model": {"backbone": "mlp", "options": {"hidden": 16, "depth": 1}}, "train": {"steps": 2, "batch_size": 32}}


def _with(**sections):
    import copy

    recipe = copy.deepcopy(GMM)
    for key, value in sections.items():
        recipe[key] = value
    return recipe


@pytest.mark.parametrize("recipe, named, hint", [
    (_with(train={"batchsize": 512}), "'batchsize' in [train]", "did you mean 'batch_size'?"),
    (_with(trian={"steps": 3}), "unknown section 'trian'", "did you mean 'train'?"),
    (_with(sample={"samplr": "heun"}), "'samplr' in [sample]", "did you mean 'sampler'?"),
    (_with(data={"dataset": "gmm", "option": {}}), "'option' in [data]", "did you mean 'options'?"),
    (_with(eval={"metric": ["sliced-wasserstein"]}), "'metric' in [eval]", "did you mean 'metrics'?"),
    (_with(bench={"quick": {"trian": {"steps": 3}}}), "'trian' in [bench.quick]", "did you mean 'train'?"),
    (_with(bench={"quick": {"train": {"stpes": 3}}}), "'stpes' in [bench.quick.train]", "did you mean 'steps'?"),
    (_with(diffusion={"x": {"proces": "vp-cosine"}}), "[diffusion.x] has no 'process' key", "'proces' is not 'process'"),
])
def test_an_unknown_key_or_section_is_named_with_the_closest_valid_name(recipe, named, hint):
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe)
    message = str(err.value)
    assert named in message and hint in message and "\n" not in message


def test_an_unknown_key_with_no_near_name_lists_the_valid_ones():
    with pytest.raises(RecipeError, match=r"unknown key 'zzz' in \[model\] \(valid: \['backbone', 'num_classes', 'options', 'parameterization'\]\)"):
        validate_recipe(_with(model={"backbone": "mlp", "zzz": 1}))


def test_every_problem_is_named_at_once_and_a_missing_section_too():
    recipe = _with(train={"batchsize": 1, "stpes": 2})
    del recipe["model"]
    with pytest.raises(RecipeError) as err:
        validate_recipe(recipe)
    assert all(part in str(err.value) for part in ("'batchsize'", "'stpes'", "no [model] section"))


def test_a_section_that_is_not_a_table_is_refused():
    with pytest.raises(RecipeError, match=r"\[train\] must be a table"):
        validate_recipe(_with(train=5))


def test_every_registered_recipe_passes_its_schema():
    from diffkit.registry import names

    for name in names("recipes"):
        recipe = load_recipe(name)  # validates
        validate_components(recipe)


def test_a_toml_typo_fails_train_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "typo.toml"
    path.write_text('name = "typo"\n[data]\ndataset = "gmm"\n[diffusion.x]\nprocess = "vp-cosine"\n[model]\nbackbone = "mlp"\n[train]\nbatchsize = 512\n')
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'batchsize' in [train] (did you mean 'batch_size'?)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("section, value, message", [
    ("sample", {"sampler": "huen"}, "[sample] sampler names sampler 'huen', which is not installed (did you mean 'heun'?)"),
    ("eval", {"metrics": ["sliced-wasserstien"]}, "[eval] metrics names metric 'sliced-wasserstien', which is not installed (did you mean 'sliced-wasserstein'?)"),
    ("model", {"backbone": "mpl"}, "[model] backbone names backbone 'mpl', which is not installed (did you mean 'mlp'?)"),
    ("data", {"dataset": "gmn"}, "[data] dataset names dataset 'gmn', which is not installed (did you mean 'gmm'?)"),
    ("diffusion", {"x": {"process": "vp-cosin"}}, "[diffusion.x] process names process 'vp-cosin', which is not installed (did you mean 'vp-cosine'?)"),
])
def test_train_checks_every_component_name_before_training(tmp_path, section, value, message):
    from diffkit.training.trainer import train

    with pytest.raises(RecipeError) as err:
        train(_with(**{section: value}), tmp_path / "run", progress=False)
    assert message in str(err.value)
    assert not (tmp_path / "run").exists()


# --- sample: names, guidance, overwriting, devices -------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from diffkit.training.trainer import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    train(GMM, out, progress=False)
    return out


def test_a_wrong_sampler_name_fails_before_any_progress_output(tiny_run, capsys):
    assert main(["sample", str(tiny_run), "--sampler", "huen", "--n", "8"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "sampling" not in lines[0]
    assert lines[0].startswith("diffkit sample: error: --sampler names sampler 'huen', which is not installed (did you mean 'heun'?); installed: ")


def test_guidance_on_an_unconditional_model_is_refused(tiny_run, capsys):
    assert main(["sample", str(tiny_run), "--guidance", "2", "--n", "8", "--quiet"]) == 2
    assert "needs a class-conditional model" in capsys.readouterr().err


def test_sampling_over_earlier_samples_says_so(tiny_run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["sample", str(tiny_run), "--n", "8", "--steps", "2", "--out", str(out), "--quiet", "--no-metrics"]) == 0
    assert "already holds samples" not in capsys.readouterr().err
    assert main(["sample", str(tiny_run), "--n", "8", "--steps", "2", "--out", str(out), "--quiet", "--no-metrics"]) == 0
    assert f"{out} already holds samples; writing over them" in capsys.readouterr().err


def test_a_gpu_device_without_a_gpu_says_to_use_the_cpu(tiny_run, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert main(["sample", str(tiny_run), "--device", "cuda", "--n", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("sees no usable CUDA GPU on this machine; use --device cpu")
