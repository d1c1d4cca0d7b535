"""The run directory as a unit: kills during checkpoint writes, stale temporaries, the previous checkpoint,
old-format runs, permissions and the log after a resume."""
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffkit import rundir
from diffkit.rundir import CheckpointError, read_config, read_log, tensor_path

TINY_RECIPE = """
name = "kill-test"
seed = 3
[data]
dataset = "gmm"
options = {{ name = "ring8", n = 1000 }}
[diffusion.x]
process = "vp-cosine"
[model]
backbone = "mlp"
parameterization = "v"
options = {{ hidden = 16, depth = 1 }}
[train]
steps = {steps}
batch_size = 32
lr = 1e-3
warmup = 3
checkpoint_every = {every}
log_every = 1
[sample]
n = 16
steps = 4
"""


def _recipe_file(tmp_path: Path, steps: int, every: int) -> Path:
    path = tmp_path / f"kill-test-{every}.toml"
    path.write_text(TINY_RECIPE.format(steps=steps, every=every))
    return path


# A launcher that imports torch and diffkit once and then forks one real training process per request, so
# each kill-and-restart cycle costs a fork rather than a fresh interpreter. Protocol, one line each way:
# "train RECIPE OUT [--resume]" -> the child's pid; "wait PID" -> its exit status.
LAUNCHER = r"""
import os, sys
import torch
torch.set_num_threads(1)
from diffkit import cli
import diffkit.training.trainer, diffkit.backbones  # noqa: F401  (imported before forking)
torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # its first construction imports torch._dynamo: seconds
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "train":
        pid = os.fork()
        if pid == 0:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            code = 1
            try:
                code = cli.main(["--threads", "1", "train", args[0], "--out", args[1], "--quiet", *args[2:]])
            finally:
                os._exit(code)
        print(pid, flush=True)
    elif cmd == "wait":
        _, status = os.waitpid(int(args[0]), 0)
        print(status, flush=True)
"""


class Launcher:
    def __init__(self, tmp_path: Path):
        script = tmp_path / "launcher.py"
        script.write_text(LAUNCHER)
        self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})

    def _ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def train(self, recipe: Path, out: Path, *, resume: bool) -> int:
        return int(self._ask(f"train {recipe} {out}" + (" --resume" if resume else "")))

    def wait(self, pid: int) -> int:
        """The child's exit status as os.waitpid gives it (0: exited with 0)."""
        return int(self._ask(f"wait {pid}"))

    def running(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ", 1)[1][0] != "Z"  # not yet a zombie
        except OSError:
            return False

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _leftovers(run: Path) -> list[str]:
    """What a write in progress leaves: temporaries and checkpoint folders config.json does not name."""
    out = [p.name for p in run.glob(".*.tmp")]
    try:
        config = json.loads((run / "config.json").read_text())
        keep = {config.get("checkpoint"), config.get("previous")}
    except (OSError, json.JSONDecodeError):
        keep = set()
    if (run / "checkpoints").is_dir():
        out += [f"checkpoints/{p.name}" for p in (run / "checkpoints").iterdir() if f"checkpoints/{p.name}" not in keep]
    return out


@pytest.mark.slow
def test_sigkill_at_random_points_of_checkpoint_writes_never_breaks_the_run(tmp_path):
    """A training that checkpoints every step is SIGKILLed 12 times at seeded random moments (most of a step's
    time is the checkpoint write). After every kill the run loads for sampling, resumes, and holds no stale
    temporary once resumed; the final weights after all the resumes equal an uninterrupted run's."""
    from diffkit.training.trainer import Trainer

    try:
        from diffkit.runs import generate, load_run
    except ImportError:  # before the pipeline split
        from diffkit.pipeline import generate, load_run

    total = 400  # long enough that twelve kills land before the run ends, however fast the machine
    recipe = _recipe_file(tmp_path, total, every=1)
    run = tmp_path / "run"
    rng = random.Random(19)
    kills = mid_write = 0
    launcher = Launcher(tmp_path)
    deadline = time.monotonic() + 120
    try:
        while kills < 12 and time.monotonic() < deadline:
            config_path = run / "config.json"
            before = config_path.stat().st_mtime_ns if config_path.exists() else None
            pid = launcher.train(recipe, run, resume=before is not None)
            while launcher.running(pid):  # wait until this process commits its first checkpoint: it is in the loop
                now = config_path.stat().st_mtime_ns if config_path.exists() else None
                if now is not None and now != before:
                    break
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.15))
            if not launcher.running(pid):
                assert launcher.wait(pid) == 0, "the training process failed"
                break  # trained to the end before the kill
            os.kill(pid, signal.SIGKILL)
            assert launcher.wait(pid) == signal.SIGKILL
            kills += 1
            mid_write += bool(_leftovers(run))
            loaded = load_run(run, weights="model")  # what 'diffkit sample' does first
            items, _, _ = generate(loaded, 8, steps=2)
            assert all(torch.isfinite(x).all() for x in items)
            step = read_config(run)["step"]
            resumed = Trainer(str(recipe), run, resume=True, progress=False)  # what '--resume' does first
            assert resumed.step == step
            assert not _leftovers(run), "a resume cleans what the kill left"
            assert [r["step"] for r in read_log(run) if "loss" in r] == list(range(1, step + 1)), "the log holds each step once, up to the checkpoint"
        assert kills >= 10, f"only {kills} kills happened before the deadline"
        assert mid_write >= 1, "no kill landed inside a checkpoint write; the test did not exercise what it is for"
        assert launcher.wait(launcher.train(recipe, run, resume=True)) == 0, "the last resume failed"
        reference = tmp_path / "reference"  # uninterrupted, in a process of the same kind (same thread count)
        assert launcher.wait(launcher.train(_recipe_file(tmp_path, total, every=total), reference, resume=False)) == 0
    finally:
        launcher.close()
    assert read_config(run)["step"] == total
    a, b = load_file(str(tensor_path(reference))), load_file(str(tensor_path(run)))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs from the uninterrupted run after {kills} kills"


@pytest.fixture
def small_run(tmp_path):
    from diffkit.training.trainer import train

    train(str(_recipe_file(tmp_path, 6, every=2)), tmp_path / "run", progress=False)
    return tmp_path / "run"


def test_a_write_interrupted_before_the_commit_leaves_the_old_checkpoint_current(small_run, monkeypatch):
    before = read_config(small_run)
    weights = load_file(str(tensor_path(small_run)))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for a kill between writing the folder and switching config.json

    monkeypatch.setattr(rundir, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        rundir.write_checkpoint(small_run, {**before, "step": 7}, {"model.safetensors": {k: v + 1 for k, v in weights.items()}})
    monkeypatch.undo()
    assert read_config(small_run) == before
    assert all(torch.equal(load_file(str(tensor_path(small_run)))[k], v) for k, v in weights.items())
    assert [x for x in rundir.clean_stale(small_run) if x.startswith("checkpoints/step-00000007.")], "the uncommitted folder is stale"
    assert not list((small_run / "checkpoints").glob("step-00000007*"))


def test_stale_temporaries_are_removed_when_training_resumes(small_run, tmp_path):
    from diffkit.training.trainer import Trainer

    (small_run / ".config.json.123.abcd.tmp").write_text("{")
    (small_run / "checkpoints" / "step-00000009.aaaaaa.tmp").mkdir()
    (small_run / "checkpoints" / "step-00000009.aaaaaa.tmp" / "model.safetensors").write_bytes(b"half")
    Trainer(str(_recipe_file(tmp_path, 8, every=2)), small_run, resume=True, progress=False)
    assert not list(small_run.rglob("*.tmp"))
    config = read_config(small_run)
    assert sorted(f"checkpoints/{p.name}" for p in (small_run / "checkpoints").iterdir()) == sorted([config["checkpoint"], config["previous"]])


def test_resume_truncates_the_log_to_the_checkpoint(small_run, tmp_path):
    from diffkit.training.trainer import train

    with open(small_run / "log.jsonl", "a") as f:  # steps a killed process trained after its last checkpoint
        f.write(json.dumps({"step": 7, "loss": 1.0}) + "\n" + '{"step": 8, "lo')
    train(str(_recipe_file(tmp_path, 8, every=2)), small_run, resume=True, progress=False)
    assert [r["step"] for r in read_log(small_run) if "loss" in r] == list(range(1, 9))


def test_files_follow_the_umask(tmp_path):
    from diffkit.training.trainer import train

    old = os.umask(0o022)
    try:
        train(str(_recipe_file(tmp_path, 2, every=2)), tmp_path / "run", progress=False)
    finally:
        os.umask(old)
    run = tmp_path / "run"
    modes = {p.relative_to(run).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_old_format_runs_still_load_and_resume(small_run, tmp_path):
    """A format-version-1 run (tensor files beside config.json) loads; resuming it writes version 2."""
    from diffkit.training.trainer import train

    try:
        from diffkit.runs import load_run
    except ImportError:
        from diffkit.pipeline import load_run
    config = read_config(small_run)
    for name in rundir.TENSOR_FILES:
        (small_run / config["checkpoint"] / name).rename(small_run / name)
    import shutil

    shutil.rmtree(small_run / "checkpoints")
    old = {k: v for k, v in config.items() if k not in ("checkpoint", "previous")}
    (small_run / "config.json").write_text(json.dumps({**old, "format_version": 1}))
    weights = load_file(str(small_run / "model.safetensors"))
    run = load_run(small_run, weights="model")
    live = run.denoiser.backbone.state_dict()
    assert all(torch.equal(live[k], v) for k, v in rundir.unprefixed("model", weights).items())
    train(str(_recipe_file(tmp_path, 8, every=2)), small_run, resume=True, progress=False)
    assert read_config(small_run)["format_version"] == 2 and read_config(small_run)["step"] == 8
    assert not (small_run / "model.safetensors").exists()


@pytest.mark.parametrize("edit,needle", [
    (lambda c: c.pop("recipe"), "no 'recipe' table"),
    (lambda c: c.update(checksums=["a", "b"]), "'checksums' as list"),
    (lambda c: c.update(format_version="two"), "format_version 'two'"),
    (lambda c: c.update(format_version=1.5), "format_version 1.5"),
    (lambda c: c.update(checkpoint="../../etc"), "names no checkpoint folder"),
])
def test_malformed_config_gets_one_line(small_run, edit, needle):
    config = json.loads((small_run / "config.json").read_text())
    edit(config)
    (small_run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=needle) as err:
        read_config(small_run)
    assert "\n" not in str(err.value)


def test_non_finite_weights_are_never_written(small_run):
    before = read_config(small_run)
    bad = {"model.w": torch.tensor([1.0, float("nan")])}
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        rundir.write_checkpoint(small_run, {**before, "step": 9}, {"model.safetensors": bad})
    assert read_config(small_run) == before
    assert not list((small_run / "checkpoints").glob("step-00000009*"))


def test_weights_of_another_shape_name_the_tensor_and_the_recipe(small_run):
    """A model of another shape under a matching checksum is refused before torch sees it."""
    try:
        from diffkit.runs import load_run
    except ImportError:
        from diffkit.pipeline import load_run
    path = tensor_path(small_run)
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.startswith("ema.") and k.endswith("weight"))
    tensors[key] = torch.zeros(3, 3)
    save_file(tensors, str(path))
    config = json.loads((small_run / "config.json").read_text())
    config["checksums"]["model.safetensors"] = rundir.sha256(path)
    (small_run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=rf"recipe 'kill-test'.*tensor '{key[4:]}' has shape \(3, 3\)") as err:
        load_run(small_run)
    assert "\n" not in str(err.value)


def test_resume_into_a_run_of_another_recipe_or_shape_is_refused(small_run, tmp_path):
    from diffkit.training.trainer import train

    wide = tmp_path / "wide.toml"  # the same name, a wider model
    wide.write_text(TINY_RECIPE.format(steps=8, every=2).replace("hidden = 16", "hidden = 24"))
    with pytest.raises(CheckpointError, match=r"recipe 'kill-test'.*has shape \(16, .*needs \(24, .*resume with the recipe the run was trained with"):
        train(str(wide), small_run, resume=True, progress=False)
    renamed = tmp_path / "renamed.toml"
    renamed.write_text(TINY_RECIPE.format(steps=8, every=2).replace('name = "kill-test"', 'name = "other"'))
    with pytest.raises(CheckpointError, match="holds a run of recipe 'kill-test', not 'other'; resume with the same recipe"):
        train(str(renamed), small_run, resume=True, progress=False)
