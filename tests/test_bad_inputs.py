"""Bad inputs a careful user or an attacker might give: each is refused in one line naming the fix (the table
in docs/contracts.md), or handled as documented."""
import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffkit import cli, rundir
from diffkit.recipe import RecipeError, load_dataset, load_recipe
from diffkit.rundir import read_config, tensor_path
from diffkit.training.trainer import TrainingDiverged, train

TINY = """
name = "tiny"
seed = 1
[data]
dataset = "gmm"
options = {{ name = "ring8", n = 500 }}
[diffusion.x]
process = "vp-cosine"
[model]
backbone = "mlp"
options = {{ hidden = 16, depth = 1 }}
[train]
steps = {steps}
batch_size = 32
checkpoint_every = {every}
log_every = 1
{extra}
[sample]
n = 16
steps = 4
"""


def tiny_recipe(tmp_path: Path, steps: int = 4, every: int = 2, extra: str = "") -> Path:
    path = tmp_path / f"tiny-{steps}-{every}-{abs(hash(extra))}.toml"
    path.write_text(TINY.format(steps=steps, every=every, extra=extra))
    return path


def one_line_error(capsys, *argv) -> tuple[int, str]:
    code = cli.main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err, "the command must fail with a message"
    return code, err[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    train(str(tiny_recipe(tmp)), tmp / "run", progress=False)
    return tmp / "run"


# --- 2: a NaN stop keeps the last finite checkpoint; sampling refuses non-finite samples ------------------------
@pytest.mark.parametrize("every", [500, 1])
def test_exploding_training_keeps_the_last_checkpoint_with_finite_weights_and_loss(tmp_path, every):
    """lr 1e6 without clipping: step 1 blows the weights up to ~1e5 and step 2's gradient overflows. Whether or not
    step 1 was checkpointed, the checkpoint kept is step 0's, and it samples finite values."""
    recipe = tiny_recipe(tmp_path, steps=20, every=every, extra="lr = 1e6\ngrad_clip = 0\nwarmup = 3")
    with pytest.raises(TrainingDiverged, match=r"at step 2; stopped and kept the last good checkpoint \(step 0\)"):
        train(str(recipe), tmp_path / "run", progress=False)
    assert read_config(tmp_path / "run")["step"] == 0
    weights = load_file(str(tensor_path(tmp_path / "run")))
    assert max(float(v.abs().max()) for v in weights.values()) < 10, "the kept weights are the initial ones, not the exploded ones"
    code = cli.main(["sample", str(tmp_path / "run"), "--n", "8", "--steps", "4", "--quiet", "--no-metrics"])
    assert code == 0


def test_sample_refuses_to_write_non_finite_samples(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "exploded"
    shutil.copytree(trained, run)
    config = read_config(run)
    tensors = load_file(str(tensor_path(run)))
    huge = {k: v * 1e30 if v.dtype.is_floating_point and v.dim() > 1 else v for k, v in tensors.items()}  # finite, but overflows in use
    trainer = load_file(str(tensor_path(run, "trainer.safetensors")))
    rundir.write_checkpoint(run, {**config, "step": config["step"] + 1}, {"model.safetensors": huge, "trainer.safetensors": trainer})
    code, line = one_line_error(capsys, "sample", str(run), "--n", "8", "--steps", "4", "--quiet", "--no-metrics", "--out", str(tmp_path / "s"))
    assert code == 1 and "NaN or infinite values in field 'x'" in line and "nothing was written" in line
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


# --- 3: recipe names and paths never shadow each other --------------------------------------------------------
def test_a_folder_named_like_a_recipe_does_not_shadow_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gmm-smoke").mkdir()
    assert load_recipe("gmm-smoke")["name"] == "gmm-smoke"


def test_an_old_recipe_name_loads_the_renamed_recipe_with_a_note(tmp_path, monkeypatch, capsys):
    """A recipe's ``aliases`` keep old names working for a release: the old name loads the recipe (by its new
    name), with one line on stderr naming the new name and where recognisable samples come from."""
    from diffkit import registry

    assert load_recipe("gmm-quick")["name"] == "gmm-smoke"
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and "'gmm-quick' is now called 'gmm-smoke' (smoke test: checks the path, not the quality)" in note[0]
    assert "diffkit pretrained" in note[0] and "diffkit sample NAME" in note[0]
    assert load_recipe("recipe:gmm-quick")["name"] == "gmm-smoke"
    assert "'gmm-quick' is now called 'gmm-smoke'" in capsys.readouterr().err
    load_recipe("gmm-smoke")
    assert capsys.readouterr().err == ""  # the new name says nothing
    registry.register("recipes", "renamed-recipe", lambda: {**load_recipe("gmm-smoke"), "name": "renamed-recipe", "aliases": ["older-name"]})
    try:  # any registered recipe may declare aliases: the core knows no plugin's names
        assert load_recipe("older-name")["name"] == "renamed-recipe"
        assert "'older-name' is now called 'renamed-recipe'" in capsys.readouterr().err
    finally:
        registry.unregister("recipes", "renamed-recipe")
    with pytest.raises(RecipeError, match="no recipe named 'gmm-slow' is installed"):
        load_recipe("gmm-slow")
    monkeypatch.chdir(tmp_path)
    Path("gmm-quick").write_text(TINY.format(steps=2, every=2, extra=""))
    with pytest.raises(RecipeError, match=r"both a registered recipe and a file here; write ./gmm-quick"):
        load_recipe("gmm-quick")


def test_a_run_trained_under_an_old_recipe_name_resumes_under_the_new_one(tmp_path):
    from diffkit.training.trainer import train

    old = load_recipe("gmm-smoke")
    old.update(name="gmm-quick", data={**old["data"], "options": {"name": "ring8", "n": 500}}, model={**old["model"], "options": {"hidden": 16, "depth": 1}})
    old.pop("aliases")
    old["train"].update(steps=2, checkpoint_every=2, log_every=1, batch_size=32)
    train(old, tmp_path / "run", progress=False)
    new = {**old, "name": "gmm-smoke", "aliases": ["gmm-quick"], "train": {**old["train"], "steps": 4}}
    assert train(new, tmp_path / "run", resume=True, progress=False)["steps"] == 4
    with pytest.raises(Exception, match="holds a run of recipe 'gmm-smoke', not 'gmm'"):
        train({**new, "name": "gmm", "aliases": [], "train": {**new["train"], "steps": 6}}, tmp_path / "run", resume=True, progress=False)


def test_a_file_named_like_a_recipe_is_an_ambiguity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("gmm-smoke").write_text(TINY.format(steps=2, every=2, extra=""))
    with pytest.raises(RecipeError, match=r"both a registered recipe and a file here; write ./gmm-smoke .* or recipe:gmm-smoke"):
        load_recipe("gmm-smoke")
    assert load_recipe("./gmm-smoke")["name"] == "tiny"
    assert load_recipe("recipe:gmm-smoke")["name"] == "gmm-smoke"
    Path("mine").write_text(TINY.format(steps=2, every=2, extra=""))
    with pytest.raises(RecipeError, match=r"no recipe named 'mine' is registered, but a file mine is here; write ./mine"):
        load_recipe("mine")
    with pytest.raises(RecipeError, match="is a folder"):
        load_recipe("./")


def test_train_resume_into_an_out_folder_named_like_the_recipe(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_recipe(tmp_path, steps=2)
    (tmp_path / "tiny.toml").write_text(recipe.read_text())
    assert cli.main(["train", "./tiny.toml", "--out", "tiny", "--quiet", "--steps", "2"]) == 0
    assert cli.main(["train", "./tiny.toml", "--out", "tiny", "--quiet", "--steps", "3", "--resume"]) == 0
    assert read_config(tmp_path / "tiny")["step"] == 3


# --- 4 and 11: --out ----------------------------------------------------------------------------------------
def test_out_folder_with_other_files_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.png").write_bytes(b"precious")
    code, line = one_line_error(capsys, "train", str(tiny_recipe(tmp_path)), "--out", str(out), "--quiet")
    assert code == 2 and "holds files but no run (holiday.png)" in line and "new or empty folder" in line
    assert [p.name for p in out.iterdir()] == ["holiday.png"] and (out / "holiday.png").read_bytes() == b"precious"


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, line = one_line_error(capsys, "train", str(tiny_recipe(tmp_path)), "--out", str(tmp_path / "f"), "--quiet")
    assert code == 2 and "is an existing file; choose a folder path" in line


def test_sample_out_that_is_a_file_is_refused(trained, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, line = one_line_error(capsys, "sample", str(trained), "--out", str(tmp_path / "f"), "--quiet", "--n", "4")
    assert code == 2 and "is an existing file; choose a folder path for the samples" in line


def test_sample_with_a_constraint_the_space_does_not_offer_is_refused_before_sampling(trained, tmp_path, capsys):
    code, line = one_line_error(capsys, "sample", str(trained), "--constraint", "valence", "--quiet", "--no-metrics", "--out", str(tmp_path / "s"))
    assert code == 2 and "has no constraint 'valence'; it offers none: leave [sample] constraint unset" in line
    assert not (tmp_path / "s").exists()


def test_a_folder_left_by_a_run_killed_before_its_first_checkpoint_is_reused(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "step-00000000.abc123.tmp").mkdir(parents=True)
    (out / ".config.json.1.ab.tmp").write_text("{")
    train(str(tiny_recipe(tmp_path, steps=2)), out, progress=False)
    assert read_config(out)["step"] == 2 and not list(out.rglob("*.tmp"))


# --- 8: numbers -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["--n", "-5"], "the number of samples (--n) must be a positive whole number, got -5"),
    (["--n", "0"], "the number of samples (--n) must be a positive whole number, got 0"),
    (["--steps", "0"], "the number of sampling steps (--steps) must be a positive whole number, got 0"),
    (["--steps", "-3"], "the number of sampling steps (--steps) must be a positive whole number, got -3"),
])
def test_sample_counts_must_be_positive(trained, tmp_path, capsys, args, needle):
    code, line = one_line_error(capsys, "sample", str(trained), "--quiet", "--no-metrics", "--out", str(tmp_path / "s"), *args)
    assert code == 2 and needle in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("steps", ["-5", "0"])
def test_train_steps_must_be_positive(tmp_path, capsys, steps):
    code, line = one_line_error(capsys, "train", str(tiny_recipe(tmp_path)), "--out", str(tmp_path / "r"), "--steps", steps, "--quiet")
    assert code == 2 and f"steps must be a positive whole number of training steps, got {steps}" in line
    assert not (tmp_path / "r").exists()


def test_large_n_is_drawn_in_batches(trained, monkeypatch):
    """2,500 samples with a batch size of 1,000: the sampler sees batches of at most 1,000."""
    from diffkit import runs
    from diffkit.samplers import sample as real_sample

    sizes = []

    def spy(denoiser, state, **kwargs):
        sizes.append(state.batch_size)
        return real_sample(denoiser, state, **kwargs)

    monkeypatch.setattr("diffkit.samplers.sample", spy)
    run = runs.load_run(trained)
    items, _, _ = runs.generate(run, 2500, steps=2, batch_size=1000)
    assert len(items) == 2500 and sizes == [1000, 1000, 500]


# --- 11: run directories and recipes with wrong contents ----------------------------------------------------------
def test_unknown_space_option_names_the_options(tmp_path):
    recipe = load_recipe(str(tiny_recipe(tmp_path)))
    recipe["data"]["space"] = {"bogus": 1}
    with pytest.raises(RecipeError, match=r"\[data\] space option\(s\) \['bogus'\] are not options of space 'euclidean'; its options are"):
        load_dataset(recipe)


@pytest.mark.parametrize("edit,needle", [
    (lambda c: c.pop("recipe"), "has no 'recipe' table"),
    (lambda c: c.update(checksums=["x"]), "has 'checksums' as list"),
    (lambda c: c.update(format_version="2"), "has format_version '2', not a positive integer"),
])
def test_sample_of_an_edited_config_gets_one_line(trained, tmp_path, capsys, edit, needle):
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(trained, run)
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))
    code, line = one_line_error(capsys, "sample", str(run), "--quiet", "--n", "4")
    assert code == 2 and needle in line


def test_a_checkpoint_log_line_cut_by_a_kill_is_skipped(trained):
    from diffkit.runs import read_log

    before = read_log(trained)
    with open(trained / "log.jsonl", "a") as f:
        f.write('{"step": 9, "lo')
    try:
        assert read_log(trained) == before and all(math.isfinite(r["step"]) for r in before)
    finally:
        rundir.truncate_log(trained, read_config(trained)["step"])


# --- 9 and 11: diffkit eval inputs ----------------------------------------------------------------------------------
def _eval(capsys, path) -> tuple[int, str]:
    return one_line_error(capsys, "eval", "--task", "gmm", str(path))


def test_eval_of_an_empty_file_or_folder_is_an_error(tmp_path, capsys, monkeypatch):
    def no_loading(*a, **k):
        raise AssertionError("the samples must be checked before any dataset is loaded")

    monkeypatch.setattr("diffkit.evaluator.load_dataset", no_loading)
    (tmp_path / "empty.txt").write_text("")
    code, line = _eval(capsys, tmp_path / "empty.txt")
    assert code == 2 and "is empty: there are no samples to score" in line
    (tmp_path / "folder").mkdir()
    code, line = _eval(capsys, tmp_path / "folder")
    assert code == 2 and "is a folder with no files" in line


def test_eval_counts_and_skips_lines_that_are_not_utf8(tmp_path):
    from diffkit.evaluator import evaluate_path

    path = tmp_path / "s.txt"
    path.write_bytes(b"1.0 0.0\n0.0 1.0\n\xff\xfe 2.0\n-1.0 0.0\n0.0 -1.0\n")
    result = evaluate_path("gmm", path)
    assert result["n_read"] == 4 and result["n_invalid"] == 1
    assert result["invalid"][0]["item"] == "s.txt line 3" and "not UTF-8" in result["invalid"][0]["reason"]


@pytest.mark.parametrize("make,needle", [
    (lambda p: __import__("numpy").save(p, __import__("numpy").zeros((0, 2))), "no sample in"),
    (lambda p: __import__("numpy").save(p, __import__("numpy").array([{"a": 1}], dtype=object), allow_pickle=True), "pickled .npy"),
])
def test_eval_of_an_empty_or_pickled_npy_gets_one_line(tmp_path, capsys, make, needle):
    path = tmp_path / "s.npy"
    make(path)
    code, line = _eval(capsys, path)
    assert code == 2 and needle in line
    assert "allow_pickle" not in line, "never suggest allowing pickle"


def test_eval_of_a_folder_for_a_one_file_space(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("1 2\n")
    code, line = _eval(capsys, tmp_path / "d")
    assert code == 2 and "is a folder; euclidean samples are one file" in line


def test_smiles_file_with_a_non_utf8_byte_loses_one_line(tmp_path):
    pytest.importorskip("rdkit")
    from diffkit_molecule.space import MoleculeSpace

    path = tmp_path / "samples.smi"
    path.write_bytes(b"CCO\nC\xe9C\nc1ccccc1\n")
    items, failures = MoleculeSpace(["C", "N", "O", "F"], max_atoms=9).read(path)
    assert len(items) == 2 and len(failures) == 1
    assert failures[0]["item"] == "samples.smi line 2" and "not UTF-8" in failures[0]["reason"]


# --- 12: molecule spaces refuse values a cast would change ------------------------------------------------------
@pytest.mark.parametrize("atoms,bonds,needle", [
    ([0, 1.7], [[0, 1], [1, 0]], "atoms must be atom type indices (whole numbers), got 1.7"),
    ([0, float("nan")], [[0, 1], [1, 0]], "atoms holds NaN, infinite or complex values"),
    ([0, 1], [[0, 1.5], [1.5, 0]], "bonds must be bond orders (whole numbers), got 1.5"),
    ([0, 1], [[0, float("inf")], [float("inf"), 0]], "bonds holds NaN, infinite or complex values"),
])
def test_molecular_graph_rejects_non_integral_values(atoms, bonds, needle):
    from diffkit.spaces import MolecularGraph, SpaceError

    space = MolecularGraph(["C", "N", "O"], max_atoms=5)
    with pytest.raises(SpaceError, match=re.escape(needle)):
        space.validate({"atoms": torch.tensor(atoms), "bonds": torch.tensor(bonds)})
    assert space.validate({"atoms": torch.tensor([0.0, 1.0]), "bonds": torch.tensor([[0.0, 1.0], [1.0, 0.0]])})["atoms"].tolist() == [0, 1]


def test_sliced_wasserstein_of_many_samples_works_a_block_of_directions_at_a_time():
    """With 50,000 samples the directions are taken about 80 at a time (memory n x 80 doubles, not n x 256);
    the figure equals the all-at-once computation."""
    from diffkit.metrics import sliced_wasserstein

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50_000, 2, generator=g), torch.randn(30_000, 2, generator=g) + 0.1
    theta = torch.randn(2, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    n = 50_000
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    px = torch.sort(x.double() @ theta, dim=0).values
    py = torch.sort(y.double() @ theta, dim=0).values
    pos = (q * len(y) - 0.5).clamp(0, len(y) - 1)
    lo, w = pos.floor().long(), (pos - pos.floor()).unsqueeze(1)
    py = py[lo] * (1 - w) + py[(lo + 1).clamp(max=len(y) - 1)] * w
    pos = (q * n - 0.5).clamp(0, n - 1)
    lo, w = pos.floor().long(), (pos - pos.floor()).unsqueeze(1)
    px = px[lo] * (1 - w) + px[(lo + 1).clamp(max=n - 1)] * w
    expected = float(((px - py) ** 2).mean().sqrt())
    assert sliced_wasserstein(x, y) == pytest.approx(expected, rel=1e-12)


def test_bench_finds_its_tasks_when_files_named_like_them_lie_here(tmp_path, monkeypatch):
    from diffkit.bench import discover_tasks

    before = set(discover_tasks())
    monkeypatch.chdir(tmp_path)
    for name in before:
        Path(name).write_text("not a recipe")
    Path("gmm-smoke").mkdir()
    assert set(discover_tasks()) == before and "gmm" in before
