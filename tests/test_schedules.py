"""Explicit time grids: a list of times, noise levels or log-SNR values, from Python and the command line."""
import json

import pytest
import torch

from diffkit.cli import _schedule_option
from diffkit.denoiser import Denoiser, guided
from diffkit.oracle import AnalyticBackbone, ring
from diffkit.processes import CategoricalProcess, Diffusion, VPCosine, VPLinear
from diffkit.samplers import SAMPLERS, Schedule, make_times, sample
from diffkit.state import State


def _oracle(proc):
    diff = Diffusion({"x": proc})
    return diff, guided(Denoiser(AnalyticBackbone(ring(8), proc, "eps"), diff, "eps"))


@pytest.mark.parametrize("proc", [VPLinear(), VPCosine()], ids=["vp-linear", "vp-cosine"])
def test_a_grid_in_each_unit_gives_the_times_it_names(proc):
    diff = Diffusion({"x": proc})
    times = make_times(diff, 9, "karras")
    alpha, sigma = proc.alpha(times), proc.sigma(times)
    as_t = Schedule(times.tolist())
    as_sigma = Schedule((sigma / alpha).tolist() + [0.0], unit="sigma")  # a trailing clean level is dropped
    as_log_snr = Schedule(proc.log_snr(times).tolist(), unit="log-snr")
    assert len(as_sigma) == 9
    for grid in (as_t, as_sigma, as_log_snr):
        assert torch.allclose(make_times(diff, 3, grid), times, rtol=0, atol=1e-7), grid.unit  # the grid's own length wins over steps=3
    assert torch.equal(make_times(diff, 9, times.tolist()), make_times(diff, 9, Schedule(times.tolist())))


def test_sample_walks_a_user_grid_with_one_evaluation_per_level():
    proc = VPLinear()
    diff, fn = _oracle(proc)
    grid = [1.0, 0.6, 0.3, 0.12, 0.04, 0.01]
    calls = []

    def counted(state, t):
        calls.append(float(t))
        return fn(state, t)

    counted.diffusion = diff
    out = sample(counted, State(x=torch.zeros(500, 2)), sampler="ddim", schedule=grid, generator=torch.Generator().manual_seed(0))
    assert calls == grid  # steps (default 20) is not used: the grid sets the levels
    x_T = diff.prior(State(x=torch.zeros(500, 2)), torch.Generator().manual_seed(0))
    direct = SAMPLERS["ddim"](fn, x_T, torch.tensor(grid, dtype=torch.float64))
    assert torch.equal(out["x"], direct["x"])


def test_a_categorical_only_diffusion_keeps_the_user_grid():
    proc = CategoricalProcess(3, "uniform")
    diff = Diffusion({"c": proc})
    seen = []

    def denoiser(state, t):
        seen.append(float(t))
        return State(c=torch.full_like(state["c"], 1 / 3))

    denoiser.diffusion = diff
    sample(denoiser, State(c=torch.zeros(4, 5, 3)), sampler="ancestral", schedule=Schedule([0.9, 0.5, 0.2]), generator=torch.Generator().manual_seed(0))
    assert seen == [0.9, 0.5, 0.2]
    with pytest.raises(ValueError, match="needs a Gaussian field"):
        make_times(diff, 3, Schedule([10.0, 1.0], unit="sigma"))


@pytest.mark.parametrize("values, unit, message", [
    ([0.2, 0.5], "t", "must decrease strictly"),
    ([0.5, 0.5], "t", "must decrease strictly"),
    ([-4.0, -8.0], "log-snr", "must increase strictly"),
    ([], "t", "at least one level"),
    ([1.0, float("nan")], "t", "finite"),
    ([1.0, -0.5], "sigma", "must be > 0"),
    ([1.0, 0.5], "seconds", "unknown schedule unit"),
    (["a", "b"], "t", "list of numbers"),
])
def test_malformed_grids_are_refused_with_the_fix(values, unit, message):
    with pytest.raises(ValueError, match=message):
        Schedule(values, unit)


def test_levels_outside_the_diffusion_are_refused_naming_its_range():
    diff = Diffusion({"x": VPLinear()})
    with pytest.raises(ValueError, match=r"\[t_min, t_max\]"):
        make_times(diff, 2, [1.5, 0.5])
    with pytest.raises(ValueError, match=r"\[t_min, t_max\]"):
        make_times(diff, 2, [0.5, 1e-5])  # below t_min = 1e-3
    with pytest.raises(ValueError, match="range"):
        make_times(diff, 2, Schedule([1e4, 1.0], unit="sigma"))
    with pytest.raises(ValueError, match="unknown time-step schedule"):
        make_times(diff, 2, "cubic")


def test_the_command_line_reads_lists_prefixed_lists_and_json_files(tmp_path):
    assert Schedule.parse("0.9,0.5,0.1") == Schedule([0.9, 0.5, 0.1])
    assert Schedule.parse("sigma:14.6, 2.0, 0.03, 0") == Schedule([14.6, 2.0, 0.03], "sigma")
    assert Schedule.parse("log-snr:-8,0,6") == Schedule([-8.0, 0.0, 6.0], "log-snr")
    f = tmp_path / "ays.json"
    f.write_text(json.dumps({"sigma": [14.6, 6.0, 2.0, 0.5, 0.03]}))
    assert Schedule.parse(str(f)) == Schedule([14.6, 6.0, 2.0, 0.5, 0.03], "sigma")
    g = tmp_path / "times.json"
    g.write_text(json.dumps([1.0, 0.5, 0.1]))
    assert Schedule.parse(str(g)) == Schedule([1.0, 0.5, 0.1])
    assert Schedule.from_json(Schedule([3.0, 1.0], "sigma").to_json()) == Schedule([3.0, 1.0], "sigma")
    # --schedule sets the number of levels; a disagreeing --steps is an error, a named schedule passes through
    grid, steps = _schedule_option("0.9,0.5,0.1", None)
    assert steps == 3 and grid == Schedule([0.9, 0.5, 0.1])
    assert _schedule_option("karras", 12) == ("karras", 12)
    with pytest.raises(ValueError, match="disagrees"):
        _schedule_option("0.9,0.5,0.1", 10)


@pytest.mark.parametrize("text, message", [
    ("missing.json", "does not exist"),
    ("0.9,fast", "cannot read schedule"),
    ("ms:1,2", "unknown schedule unit"),
])
def test_unreadable_command_line_schedules_name_the_fix(text, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        Schedule.parse(str(tmp_path / text) if text.endswith(".json") else text)
    bad = tmp_path / "bad.json"
    bad.write_text("{sigma: [1, 2]}")
    with pytest.raises(ValueError, match="not valid JSON"):
        Schedule.parse(str(bad))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"steps": [1, 2]}))
    with pytest.raises(ValueError, match="one key"):
        Schedule.parse(str(wrong))
