import json
import math
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffkit import registry
from diffkit.metrics import sliced_wasserstein
from diffkit.oracle import ring
from diffkit.recipe import load_recipe
from diffkit.runs import generate, load_run, read_log
from diffkit.rundir import tensor_path
from diffkit.training import CheckpointError
from diffkit.training.trainer import TrainingDiverged, train


def small_recipe(**train_overrides):
    recipe = load_recipe("gmm")
    recipe["name"] = "gmm-test"
    recipe["data"]["options"] = {"name": "ring8", "n": 2000}
    recipe["model"]["options"] = {"hidden": 32, "depth": 1}
    recipe["train"].update(steps=40, batch_size=64, checkpoint_every=20, log_every=10, warmup=5)
    recipe["train"].update(train_overrides)
    return recipe


def weights(run_dir):
    return load_file(str(tensor_path(run_dir)))


def test_run_directory_layout_and_log(tmp_path):
    summary = train(small_recipe(), tmp_path / "run", progress=False)
    assert summary["steps"] == 40
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert names == {"checkpoints", "config.json", "log.jsonl"}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["checkpoint"].startswith("checkpoints/step-00000040.")
    checkpoint = tmp_path / "run" / config["checkpoint"]
    assert {p.name for p in checkpoint.iterdir()} == {"model.safetensors", "trainer.safetensors", "checkpoint.json"}
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert len(kept) == 2 and kept[0].startswith("step-00000020.") and config["previous"] == f"checkpoints/{kept[0]}", "the previous checkpoint is kept"
    assert not [p for p in (tmp_path / "run").rglob("*.tmp")], "temporary files must not outlive a write"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["format"] == "diffkit-run" and config["step"] == 40
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == [10, 20, 30, 40]
    assert all(r["loss"] > 0 and r["items_per_second"] > 0 for r in log)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    train(small_recipe(), tmp_path / "full", progress=False)
    train(small_recipe(), tmp_path / "split", steps=20, progress=False)
    halfway = weights(tmp_path / "split")
    train(small_recipe(), tmp_path / "split", steps=40, resume=True, progress=False)
    a, b = weights(tmp_path / "full"), weights(tmp_path / "split")
    assert a.keys() == b.keys()
    assert any(not torch.equal(halfway[k], b[k]) for k in b), "the resumed run must have trained further"
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resuming"


def test_time_budget_stops_early_with_a_checkpoint_and_a_log_entry(tmp_path):
    summary = train(small_recipe(steps=10_000_000), tmp_path / "run", progress=False, max_minutes=0.02)  # 1.2 s
    assert 0 < summary["steps"] < 10_000_000
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["step"] == summary["steps"], "the last step is checkpointed"
    assert any(r.get("event") == "time budget" for r in read_log(tmp_path / "run"))
    with pytest.raises(ValueError, match="max_minutes"):
        train(small_recipe(), tmp_path / "other", progress=False, max_minutes=0)


def test_learning_rate_cosine_ends_at_steps_or_at_the_budget():
    from diffkit.training.trainer import learning_rate

    cfg = {"lr": 1.0, "warmup": 10, "steps": 110, "lr_decay": "cosine", "lr_decay_until": "steps"}
    assert learning_rate(4, cfg) == pytest.approx(0.5)  # warm-up: (4 + 1) / 10
    assert learning_rate(60, cfg) == pytest.approx(0.5)  # halfway through the cosine
    assert learning_rate(60, cfg, budget_used=0.9) == pytest.approx(0.5), "'steps' ignores the clock"
    budget = {**cfg, "lr_decay_until": "budget"}
    assert learning_rate(60, budget, budget_used=0.1) == pytest.approx(0.5), "the steps are ahead of the clock"
    assert learning_rate(60, budget, budget_used=0.75) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
    assert learning_rate(20, budget, budget_used=1.0) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(20, {**budget, "lr_decay": "none"}, budget_used=0.9) == 1.0


def test_lr_decay_until_budget_anneals_when_the_budget_stops_training(tmp_path, monkeypatch):
    """On a clock that advances one second per reading, a 60-second budget stops a 10-million-step recipe after a
    few dozen steps: with ``lr_decay_until = "budget"`` the last steps run at a learning rate near zero, with
    ``"steps"`` near the peak. Misspelt settings are refused before training."""
    import diffkit.training.trainer as trainer_module

    def run(until, name):
        clock = iter(range(10**9))
        monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: float(next(clock)))
        train(small_recipe(steps=10_000_000, lr_decay="cosine", lr_decay_until=until, log_every=1, warmup=0),
              tmp_path / name, progress=False, max_minutes=1.0)
        return [r["lr"] for r in read_log(tmp_path / name) if "lr" in r]

    lr = small_recipe()["train"]["lr"]
    by_budget, by_steps = run("budget", "budget"), run("steps", "steps")
    assert 10 <= len(by_budget) < 60 and len(by_steps) == len(by_budget)
    assert by_budget[-1] < 0.02 * lr and by_budget == sorted(by_budget, reverse=True)
    assert by_steps[-1] > 0.99 * lr
    with pytest.raises(ValueError, match="lr_decay_until"):
        train(small_recipe(lr_decay="cosine", lr_decay_until="budgte"), tmp_path / "typo", progress=False, max_minutes=1.0)
    with pytest.raises(ValueError, match="needs a time budget"):
        train(small_recipe(lr_decay="cosine", lr_decay_until="budget"), tmp_path / "nobudget", progress=False)
    with pytest.raises(ValueError, match="lr_decay must be one of"):
        train(small_recipe(lr_decay="cosin"), tmp_path / "typo2", progress=False)


def test_existing_run_needs_resume(tmp_path):
    train(small_recipe(steps=2), tmp_path / "run", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(small_recipe(steps=2), tmp_path / "run", progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    from diffkit.backbones import build_mlp

    class PoisonAfter(torch.nn.Module):
        def __init__(self, inner, good_calls):
            super().__init__()
            self.inner, self.good_calls, self.calls = inner, good_calls, 0

        def forward(self, state, t, cond=None):
            self.calls += 1
            out = self.inner(state, t, cond)
            if self.calls > self.good_calls:
                out = {k: v * float("nan") for k, v in out.items()}
            return out

    registry.register("backbones", "poison-after-7", lambda space, diffusion, num_classes=0, **o: PoisonAfter(build_mlp(space, diffusion, **o), 7))
    try:
        recipe = small_recipe(checkpoint_every=5)
        recipe["model"]["backbone"] = "poison-after-7"
        with pytest.raises(TrainingDiverged, match="step 8") as err:
            train(recipe, tmp_path / "run", progress=False)
        assert "last good checkpoint (step 5)" in str(err.value)
        config = json.loads((tmp_path / "run" / "config.json").read_text())
        assert config["step"] == 5
        w = weights(tmp_path / "run")
        assert all(torch.isfinite(v).all() for v in w.values())
    finally:
        registry.unregister("backbones", "poison-after-7")


@pytest.fixture
def trained(tmp_path):
    train(small_recipe(steps=5), tmp_path / "run", progress=False)
    return tmp_path / "run"


def test_truncated_checkpoint_is_refused(trained):
    path = tensor_path(trained)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_run(trained)


def test_flipped_byte_is_refused(trained):
    path = tensor_path(trained)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_run(trained)


def test_run_records_which_distribution_provided_each_component(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["providers"]["backbones/mlp"] == "diffkit" and config["providers"]["datasets/gmm"] == "diffkit"


def test_run_whose_plugin_is_missing_names_the_distribution_to_install(trained):
    path = trained / "config.json"
    config = json.loads(path.read_text())
    config["providers"]["backbones/imaginary-net"] = "diffkit-imaginary"
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"backbone 'imaginary-net' from diffkit-imaginary, which is not installed here; pip install diffkit-imaginary"):
        load_run(trained)


class _Trap:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_checkpoint_is_refused_and_never_executed(trained, tmp_path):
    marker = tmp_path / "executed"
    (tensor_path(trained)).write_bytes(pickle.dumps(_Trap(str(marker))))
    with pytest.raises(CheckpointError, match="pickle"):
        load_run(trained)
    assert not marker.exists()
    torch.save({"w": torch.zeros(2)}, tensor_path(trained))  # zip-based torch.save format
    with pytest.raises(CheckpointError, match="pickle"):
        load_run(trained)


@pytest.mark.parametrize("low_bytes", [b"\x80", b"PK"])
def test_safetensors_whose_header_length_looks_like_a_pickle_or_zip_is_accepted(tmp_path, low_bytes):
    """A safetensors file starts with its header's length; when that length's low byte is 0x80 (pickle's
    opening byte) or its low two bytes spell "PK" (a zip's), the file is still safetensors and is loaded."""
    from safetensors.torch import save_file

    from diffkit.rundir import _refuse_foreign

    def write(pad: int) -> int:  # the header grows by exactly ``pad`` bytes when ``pad`` keeps its 8-byte alignment
        save_file({"w": torch.arange(3.0)}, str(path), metadata={"pad": "x" * pad})
        return int.from_bytes(path.read_bytes()[:8], "little")

    path = tmp_path / "model.safetensors"
    write((int.from_bytes(low_bytes, "little") - write(0)) % 256 ** len(low_bytes))
    assert path.read_bytes()[: len(low_bytes)] == low_bytes
    _refuse_foreign(path)  # no error: the header says safetensors
    assert torch.equal(load_file(str(path))["w"], torch.arange(3.0))
    path.write_bytes(pickle.dumps({"w": [0.0, 1.0, 2.0]}))
    with pytest.raises(CheckpointError, match="pickle"):
        _refuse_foreign(path)


@pytest.mark.parametrize("content,needle", [("{not json", "not valid JSON"), ('{"hello": 1}', "not a diffkit checkpoint")])
def test_foreign_config_is_refused(trained, content, needle):
    (trained / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=needle):
        load_run(trained)


@pytest.mark.slow
def test_gmm_recipe_trains_and_samples_the_mixture(tmp_path):
    """The built-in ``gmm`` recipe, trained in full: DPM-Solver++(2M) at NFE 20 on 5,000 samples is within
    SW2 0.15 of fresh mixture draws (two-sample floor at this size: about 0.03)."""
    train("gmm", tmp_path / "gmm", progress=False)
    run = load_run(tmp_path / "gmm")
    items, _, timing = generate(run, 5000, sampler="dpmpp-2m", steps=20)
    assert timing["nfe"] == 20
    target = ring(8).sample(5000, torch.Generator().manual_seed(99))
    sw = sliced_wasserstein(torch.stack(items), target)
    assert sw < 0.15, sw


DDP_SCRIPT = r"""
import sys, torch
from diffkit.training.trainer import train
sys.path.insert(0, sys.argv[2])
from test_training import small_recipe
torch.set_num_threads(1)
train(small_recipe(steps=6, batch_size=64, warmup=0), sys.argv[1], progress=False)
"""


@pytest.mark.slow
def test_two_process_data_parallel_matches_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) on a global batch of 64 gives the weights of one process on
    the same global batch, to 1e-5 (floating-point summation order differs)."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tests_dir = str(Path(__file__).parent)
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one"), tests_dir], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    with socket.socket() as probe:  # a free port: a fixed one collides with a second test run on the same machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", str(script), str(tmp_path / "two"), tests_dir],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), (k, float((a[k] - b[k]).abs().max()))


def test_bf16_precision_runs_the_backbone_in_bfloat16_and_keeps_float32_weights(tmp_path, monkeypatch):
    """``[train] precision = "bf16"``: the backbone computes under bfloat16 autocast (a hook sees its output's
    dtype), the saved weights stay float32, and the logged losses follow the float32 run's on the same batches."""
    from diffkit.recipe import build_run

    seen = set()
    recipe = small_recipe(precision="bf16")
    original = build_run

    def hooked(*args, **kwargs):
        run = original(*args, **kwargs)
        run.denoiser.backbone.register_forward_hook(lambda m, i, o: seen.update(v.dtype for v in (o.values() if isinstance(o, dict) else [o]) if torch.is_tensor(v)))
        return run

    import diffkit.training.trainer as trainer_module

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "build_run", hooked)
        train(recipe, tmp_path / "bf16", progress=False)
    train(small_recipe(), tmp_path / "fp32", progress=False)
    assert torch.bfloat16 in seen
    assert all(v.dtype == torch.float32 for v in weights(tmp_path / "bf16").values())
    low, full = ([r["loss"] for r in read_log(tmp_path / name) if "loss" in r] for name in ("bf16", "fp32"))
    assert all(math.isfinite(a) for a in low) and all(abs(a - b) <= 0.1 * b for a, b in zip(low, full)), (low, full)


def test_an_unknown_precision_is_refused_when_the_recipe_is_loaded():
    from diffkit.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"\[train\] precision must be one of fp32, bf16.*'fp16'"):
        load_recipe(small_recipe(precision="fp16"))


def test_auto_precision_is_resolved_for_the_device_and_logged(tmp_path, monkeypatch):
    from diffkit import cpu

    monkeypatch.setattr(cpu, "native_bf16", lambda device="cpu": False)
    summary = train(small_recipe(precision="auto", steps=10), tmp_path / "run", progress=False)
    assert summary["precision"] == "fp32"
    assert {"step": 0, "event": "precision", "requested": "auto", "precision": "fp32"} in read_log(tmp_path / "run")
