"""The engine's contracts: process families as types, the sampler driver, sampler declarations."""
import math

import pytest
import torch

from diffkit import registry
from diffkit.bench import bench_samplers
from diffkit.denoiser import Denoiser, guided
from diffkit.oracle import AnalyticBackbone, ring
from diffkit.processes import CategoricalProcess, Diffusion, FieldProcess, VPLinear
from diffkit.processes.gaussian import probability_flow_drift, reverse_sde_drift, score_from_x0
from diffkit.samplers import ancestral, dpmpp_2m, drive, make_times, sample, sampler, steps_for_nfe
from diffkit.spaces.base import FieldSpec
from diffkit.state import State
from diffkit.testing import ConformanceError, check_process, check_sampler


class Rounding(FieldProcess):
    """A toy family with no randomness: x_t = x_0 (1 - t), prior zeros, the step moves to the prediction's level."""

    name = "rounding"

    def diffuse(self, x0, t, generator=None, mask=None):
        return x0 * (1 - t.to(x0.dtype)).reshape(-1, *([1] * (x0.dim() - 1))), None

    def prior(self, like, generator=None, mask=None):
        return torch.zeros_like(like)

    def read(self, raw, x_t, t, **_):
        return raw.float()

    def loss(self, raw, x0, x_t, noise, t, mask=None, **_):
        return (raw.float() - x0).pow(2).reshape(x0.shape[0], -1).mean(1)

    def step(self, x_t, prediction, t, s, generator=None, mask=None):
        return prediction * (1.0 if s is None else 1 - s)


class WrongShapeStep(Rounding):
    name = "wrong-shape-step"

    def step(self, x_t, prediction, t, s, generator=None, mask=None):
        return prediction[:, :1]


def test_a_new_family_passes_the_kit_and_a_broken_one_is_caught():
    assert check_process(Rounding(), name="rounding") == ["attributes", "family", "determinism"]
    with pytest.raises(ConformanceError, match=r"check_process\[family\] failed for process 'wrong-shape-step'.*step returned shape"):
        check_process(WrongShapeStep(), name="wrong-shape-step")


def test_diffusion_refuses_an_object_that_is_not_a_family():
    class Duck:
        kind = "gaussian"

    with pytest.raises(TypeError, match="field 'x' is a Duck, not a diffkit.processes.FieldProcess; subclass"):
        Diffusion({"x": Duck()})


def test_categorical_noise_schedule_is_a_parameter():
    cosine, linear = CategoricalProcess(4), CategoricalProcess(4, schedule="linear")
    assert cosine.config()["schedule"] == "cosine" and linear.config()["schedule"] == "linear"
    for t in (0.0, 0.25, 0.5, 1.0):
        assert linear.alphabar(t) == pytest.approx(1 - t)
    assert cosine.alphabar(0.5) == pytest.approx(math.cos(math.pi / 2 * 0.508 / 1.008) ** 2 / math.cos(math.pi / 2 * 0.008 / 1.008) ** 2)
    assert "posterior" in check_process(linear, n=4000, name="categorical-linear")
    with pytest.raises(ValueError, match="unknown noise schedule 'cubic'; use one of"):
        CategoricalProcess(4, schedule="cubic")


def _oracle(n=256):
    proc = VPLinear()
    diff = Diffusion({"x": proc})
    return guided(Denoiser(AnalyticBackbone(ring(8), proc, "eps"), diff, "eps")), State(x=torch.zeros(n, 2))


def test_a_sampler_passed_by_name_or_as_a_function_walks_the_same_grid():
    fn, tpl = _oracle()
    by_name = sample(fn, tpl, sampler="dpmpp-2m", steps=8, generator=torch.Generator().manual_seed(0))
    by_function = sample(fn, tpl, sampler=dpmpp_2m, steps=8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(by_name["x"], by_function["x"])
    assert dpmpp_2m.spec.schedule == "logsnr-trailing" and steps_for_nfe("heun", 19) == steps_for_nfe(dpmpp_2m, 10) == 10


def test_samplers_and_bench_lists_come_from_the_declarations():
    from diffkit import samplers

    @sampler("local-euler", schedule="karras", nfe=lambda steps, **_: steps)
    def local_euler(denoiser, state, times, *, generator=None, callback=None):
        return samplers.euler(denoiser, state, times, generator=generator, callback=callback)

    registry.register("samplers", "local-euler", local_euler)
    try:
        assert samplers.SAMPLERS["local-euler"] is local_euler and samplers.DEFAULT_SCHEDULE["local-euler"] == "karras"
        assert samplers.DEFAULT_SCHEDULE["euler"] == "logsnr-trailing" and samplers.DEFAULT_SCHEDULE["ancestral"] == "uniform"
        gaussian = Diffusion({"x": VPLinear()})
        categorical = Diffusion({"c": CategoricalProcess(3)})
        assert bench_samplers(["ddim", "not-installed"], gaussian) == ["ddim", "local-euler"]
        assert bench_samplers(["ddim"], categorical) == ["ddim"]  # it updates no family this task has
        assert check_sampler("local-euler", name="local-euler")[0] == "declaration"
    finally:
        registry.unregister("samplers", "local-euler")
    assert "local-euler" not in samplers.SAMPLERS


def test_the_driver_steps_fields_a_sampler_does_not_update_with_their_own_family():
    """A sampler that updates only the toy family: the Gaussian field then takes the Gaussian family's own step,
    which is the ancestral kernel, so it matches the ancestral sampler draw for draw (the toy family draws nothing)."""
    gproc, toy = VPLinear(), Rounding()
    diff = Diffusion({"x": gproc, "r": toy})

    class Net(torch.nn.Module):
        def forward(self, state, t, cond=None):
            return {"x": AnalyticBackbone(ring(8), gproc, "eps")(state, t)["x"], "r": torch.full_like(state["r"], 0.5)}

    fn = guided(Denoiser(Net(), diff, "eps"))
    seen = []

    @sampler("toy-only", updates=(Rounding,))
    def toy_only(denoiser, state, times, *, generator=None, callback=None):
        def update(lv, name):
            seen.append((lv.i, name))
            return lv.pred[name] + 1.0

        return drive(toy_only.spec, denoiser, state, times, update, generator=generator, callback=callback)

    tpl = State(x=torch.zeros(64, 2), r=torch.zeros(64, 3))
    times = make_times(diff, 6, "uniform")
    x_T = diff.prior(tpl, torch.Generator().manual_seed(1))
    mine = toy_only(fn, x_T, times, generator=torch.Generator().manual_seed(2))
    reference = ancestral(fn, x_T, times, generator=torch.Generator().manual_seed(2))
    assert seen == [(i, "r") for i in range(6)]
    assert torch.equal(mine["x"], reference["x"])
    assert torch.equal(mine["r"], torch.full((64, 3), 1.5)) and torch.equal(reference["r"], torch.full((64, 3), 0.5))


def test_score_and_reverse_time_drifts():
    proc, mix = VPLinear(), ring(8)
    x = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(0.4, dtype=torch.float64)
    a, s = float(proc.alpha(t)), float(proc.sigma(t))
    x0 = AnalyticBackbone(mix, proc, "x0")(State(x=x), t.reshape(1).expand(32))["x"]
    exact_score = AnalyticBackbone(mix, proc, "score")(State(x=x), t.reshape(1).expand(32))["x"]
    score = score_from_x0(x, x0, a, s)
    assert torch.allclose(score, exact_score, atol=1e-10)
    f, g2 = (float(v) for v in proc.sde_coefficients(t))
    assert torch.allclose(probability_flow_drift(x, x0, a, s, f, g2), f * x - 0.5 * g2 * score, atol=1e-10)
    assert torch.allclose(reverse_sde_drift(x, score, f, g2), f * x - g2 * score)


def test_langevin_needs_at_least_one_move_per_level():
    fn, tpl = _oracle(8)
    with pytest.raises(ValueError, match="n_steps >= 1"):
        sample(fn, tpl, sampler="langevin", steps=4, n_steps=0)


def test_check_process_names_the_family_contract_for_a_non_family():
    class NotAFamily:
        name, t_min, t_max = "not-a-family", 0.0, 1.0

    with pytest.raises(ConformanceError, match=r"\[attributes\].*not a process family; subclass"):
        check_process(NotAFamily(), field=FieldSpec("x"), name="not-a-family")
