"""Classifier-free guidance in a limited interval of times (``guided(..., interval=(t_lo, t_hi))``, ``[sample]
guidance_interval``, ``diffkit sample --guidance-interval``), checked against exact class-conditional scores."""
from __future__ import annotations

import pytest
import torch

from diffkit.denoiser import Denoiser, check_guidance_interval, guided
from diffkit.oracle import AnalyticBackbone, GaussianMixture
from diffkit.processes import Diffusion, VPLinear
from diffkit.samplers import sample
from diffkit.state import State

MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
STD = 0.5
TINY_RECIPE = {"name": "gi", "data": {"dataset": "gmm", "options": {"name": "ring8", "n": 64}}, "diffusion": {"x": {"process": "vp-cosine"}},
               "model": {"backbone": "mlp", "options": {"hidden": 16, "depth": 1}}, "train": {"steps": 2, "batch_size": 16}}


class ExactConditional(torch.nn.Module):
    """Class c is component c of a two-component mixture; the null label (-1) is the mixture. Counts the rows it
    is asked to evaluate, so the tests can see when guidance doubled a batch."""

    def __init__(self, proc):
        super().__init__()
        self.proc, self.full = proc, GaussianMixture(MEANS, STD)
        self.parts = [GaussianMixture(MEANS[i:i + 1], STD) for i in range(2)]
        self.rows = []

    def forward(self, state, t, cond=None):
        self.rows.append(state["x"].shape[0])
        outs = []
        for i in range(state["x"].shape[0]):
            c = -1 if cond is None else int(cond[i])
            mix = self.full if c < 0 else self.parts[c]
            outs.append(AnalyticBackbone(mix, self.proc, "eps")(State(x=state["x"][i:i + 1]), t[i:i + 1])["x"])
        return {"x": torch.cat(outs)}


@pytest.fixture
def denoiser():
    proc = VPLinear()
    return Denoiser(ExactConditional(proc), Diffusion({"x": proc}), "eps")


def test_inside_the_interval_the_prediction_is_guided_outside_it_plainly_conditional(denoiser):
    labels = torch.tensor([1, 0, 1, 0])
    x = State(x=torch.randn(4, 2, generator=torch.Generator().manual_seed(0)))
    fn = guided(denoiser, labels, 3.0, interval=(0.2, 0.6))
    for t in (0.1, 0.2, 0.35, 0.6, 0.9):
        expected = guided(denoiser, labels, 3.0 if 0.2 < t <= 0.6 else 1.0)(x, t)["x"]
        denoiser.backbone.rows.clear()
        got = fn(x, t)["x"]
        assert torch.allclose(got, expected), t
        assert denoiser.backbone.rows == ([8] if 0.2 < t <= 0.6 else [4]), (t, denoiser.backbone.rows)  # outside: one evaluation, not two
    # guidance that differs from w = 1 at all, or the checks above compare equal things
    assert not torch.allclose(guided(denoiser, labels, 3.0)(x, 0.35)["x"], guided(denoiser, labels, 1.0)(x, 0.35)["x"])


def test_per_item_times_take_each_its_own_prediction(denoiser):
    labels = torch.tensor([1, 0, 1])
    x = State(x=torch.randn(3, 2, generator=torch.Generator().manual_seed(1)))
    t = torch.tensor([0.1, 0.4, 0.8])
    got = guided(denoiser, labels, 3.0, interval=(0.2, 0.6))(x, t)["x"]
    for i, w in enumerate([1.0, 3.0, 1.0]):
        expected = guided(denoiser, labels[i:i + 1], w)(State(x=x["x"][i:i + 1]), float(t[i]))["x"]
        assert torch.allclose(got[i:i + 1], expected, atol=1e-6), i


def test_an_interval_over_every_level_is_plain_guidance_and_one_over_none_is_no_guidance(denoiser):
    n, labels = 64, torch.ones(64, dtype=torch.long)
    tpl = State(x=torch.zeros(n, 2))
    run = lambda w, interval=None: sample(guided(denoiser, labels, w, interval), tpl, steps=8, generator=torch.Generator().manual_seed(0))["x"]  # noqa: E731
    assert torch.equal(run(3.0, (0.0, 1.0)), run(3.0))
    assert torch.equal(run(3.0, (1.5, 2.0)), run(1.0))
    assert not torch.allclose(run(3.0), run(1.0))


def test_guidance_kept_to_low_noise_keeps_the_class_and_its_spread():
    """Guidance at every level pulls a class towards its mean (its spread falls below the class's 0.5); kept to
    t <= 0.3, where the exact conditional and unconditional scores of a sample in its class's region agree, the
    class keeps most of its spread (the unguided sampler's, at the same seed), and is still the one asked for."""
    proc = VPLinear()
    den = Denoiser(ExactConditional(proc), Diffusion({"x": proc}), "eps")
    n, labels = 400, torch.ones(400, dtype=torch.long)
    tpl = State(x=torch.zeros(n, 2))
    draw = lambda interval: sample(guided(den, labels, 3.0, interval), tpl, steps=20, generator=torch.Generator().manual_seed(0))["x"]  # noqa: E731
    every, late = draw(None), draw((0.0, 0.3))
    plain = sample(guided(den, labels, 1.0), tpl, steps=20, generator=torch.Generator().manual_seed(0))["x"]  # the class itself, as sampled
    spread = lambda x: float(x[:, 0].std())  # noqa: E731
    assert (late[:, 0] > 0).float().mean() > 0.97
    assert spread(every) < 0.8 * STD, spread(every)
    assert abs(spread(late) - spread(plain)) < 0.5 * abs(spread(every) - spread(plain)), (spread(late), spread(plain), spread(every))


@pytest.mark.parametrize("bad", [(0.5, 0.2), (0.3, 0.3), (-0.1, 0.5), (0.1, float("nan")), (0.1, float("inf")), (0.1,), "early", 3])
def test_a_malformed_interval_is_refused_in_one_line(bad):
    with pytest.raises(ValueError) as err:
        check_guidance_interval(bad)
    assert "guidance_interval" in str(err.value) and "\n" not in str(err.value)


def test_a_good_interval_is_two_floats_and_an_empty_one_means_every_level():
    assert check_guidance_interval([0, 1]) == (0.0, 1.0)
    assert check_guidance_interval((0.5, 2)) == (0.5, 2.0)  # past the diffusion's last time: every level from 0.5 up
    assert check_guidance_interval(None) is None and check_guidance_interval([]) is None and check_guidance_interval(()) is None


def test_the_cli_reads_two_times_or_all():
    from diffkit.cli import _guidance_interval_option

    assert _guidance_interval_option(None) is None
    assert _guidance_interval_option(["all"]) == ()
    assert _guidance_interval_option(["0.5", "0.9"]) == (0.5, 0.9)
    for bad in (["0.5"], ["a", "b"], ["0.1", "0.2", "0.3"]):
        with pytest.raises(ValueError, match="--guidance-interval takes two times"):
            _guidance_interval_option(bad)


def test_a_recipe_with_a_malformed_interval_is_refused_before_training(tmp_path):
    from diffkit.recipe import RecipeError
    from diffkit.training.trainer import train

    recipe = {**TINY_RECIPE, "sample": {"guidance_interval": [0.9, 0.5]}}
    with pytest.raises(RecipeError, match=r"\[sample\] guidance_interval \[0.9, 0.5\] must satisfy"):
        train(recipe, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_recipe_interval_reaches_sampling_and_the_cli_refuses_it_without_classes(tmp_path, capsys):
    from diffkit.cli import main
    from diffkit.runs import generate, load_run
    from diffkit.training.trainer import train

    recipe = {**TINY_RECIPE, "sample": {"steps": 2, "n": 8}}
    out = tmp_path / "run"
    train(recipe, out, progress=False)
    assert main(["sample", str(out), "--guidance-interval", "0.1", "0.7", "--n", "8", "--quiet"]) == 2
    assert "--guidance-interval needs a class-conditional model" in capsys.readouterr().err
    run = load_run(out)
    run.recipe["sample"]["guidance_interval"] = [0.7, 0.1]
    with pytest.raises(ValueError, match="guidance_interval"):
        generate(run, 4)
    run.recipe["sample"]["guidance_interval"] = [0.1, 0.7]
    _, _, timing = generate(run, 4)
    assert timing["guidance_interval"] == [0.1, 0.7]
    _, _, timing = generate(run, 4, guidance_interval=())  # an empty interval overrides the recipe's: every level
    assert "guidance_interval" not in timing
