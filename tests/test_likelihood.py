"""The probability-flow likelihood against densities known in closed form.

With the exact denoiser of a Gaussian mixture the probability-flow ODE carries ``p_{t_min}`` (the
mixture convolved with the noise at ``t_min``: another Gaussian mixture) onto the prior, so the
computed log-likelihood must equal that mixture's log-density up to the ODE's discretisation.
"""
import math

import pytest
import torch

from diffkit.denoiser import Denoiser
from diffkit.evaluation import EvalContext, bits_per_dim_metric
from diffkit.likelihood import LikelihoodError, bits_per_dim, log_likelihood
from diffkit.oracle import AnalyticBackbone, GaussianMixture, random_mixture, ring
from diffkit.processes import CategoricalProcess
from diffkit.processes.composite import Diffusion
from diffkit.processes.gaussian import VPCosine, VPLinear
from diffkit.spaces.cube import ContinuousCube
from diffkit.state import State


def exact_denoiser(mixture, process):
    return Denoiser(AnalyticBackbone(mixture, process, "eps"), Diffusion({"x": process}), "eps")


def noisy_mixture(mixture, process, t):
    """``p_t``: components ``N(alpha mu_k, (alpha^2 s_k^2 + sigma^2) I)``."""
    t = torch.tensor(t, dtype=torch.float64)
    a, s = float(process.alpha(t)), float(process.sigma(t))
    return GaussianMixture(a * mixture.means, torch.sqrt(a**2 * mixture.stds**2 + s**2), mixture.weights)


@pytest.mark.parametrize("mixture, process", [(ring(), VPLinear()), (random_mixture(dim=4, n_components=4), VPCosine())], ids=["ring-vp-linear", "4d-vp-cosine"])
def test_exact_divergence_recovers_the_mixture_log_density(mixture, process):
    x = mixture.sample(48, torch.Generator().manual_seed(0)).double()
    ll = log_likelihood(exact_denoiser(mixture, process), State({"x": x}), steps=128, divergence="exact")
    expected = noisy_mixture(mixture, process, process.t_min).log_prob(x)
    assert ll.shape == (48,)
    assert torch.allclose(ll, expected, atol=0.02), f"max error {float((ll - expected).abs().max()):.4f} nats"


def test_coarse_grids_are_less_accurate_than_fine_ones():
    mixture, process = ring(), VPLinear()
    x = mixture.sample(32, torch.Generator().manual_seed(1)).double()
    expected = noisy_mixture(mixture, process, process.t_min).log_prob(x)
    err = {steps: float((log_likelihood(exact_denoiser(mixture, process), State({"x": x}), steps=steps, divergence="exact") - expected).abs().mean())
           for steps in (8, 128)}
    assert err[128] < err[8] / 4, err


def test_hutchinson_estimate_is_unbiased_within_its_standard_error():
    mixture, process = random_mixture(dim=4, n_components=4), VPCosine()
    x = mixture.sample(256, torch.Generator().manual_seed(2)).double()
    ll = log_likelihood(exact_denoiser(mixture, process), State({"x": x}), steps=64, divergence="hutchinson", generator=torch.Generator().manual_seed(3))
    diff = ll - noisy_mixture(mixture, process, process.t_min).log_prob(x)
    stderr = float(diff.std()) / math.sqrt(len(diff))
    assert float(diff.std()) > 0.05  # a single probe is noisy per example ...
    assert abs(float(diff.mean())) < 4 * stderr + 0.01  # ... but right on average


def test_bits_per_dim_of_a_uniform_density_is_log2_of_the_levels():
    dims, levels = 10, 256
    uniform_log_density = torch.tensor([-dims * math.log(2.0)])  # p(y) = 2^-D on [-1, 1]^D
    assert float(bits_per_dim(uniform_log_density, dims, 2.0 / levels)) == pytest.approx(8.0)


def test_bits_per_dim_metric_matches_the_entropy_of_quantised_gaussian_data():
    """Data ~ N(0, 0.3^2) per dimension on 256 levels of [-1, 1]: a perfect model's code length is the
    differential entropy plus the bin term, ``(0.5 log(2 pi e s^2) - log(2/256)) / ln 2`` bits per dimension."""
    std, levels = 0.3, 256
    mixture, process = GaussianMixture(torch.zeros(1, 2), std), VPLinear()
    space = ContinuousCube((2,), low=-1.0, high=1.0, levels=levels)
    data = mixture.sample(600, torch.Generator().manual_seed(4)).clamp(-1, 1)
    ctx = EvalContext(generated=[], reference=list(data), space=space,
                      extras={"denoiser": exact_denoiser(mixture, process), "num_classes": 0, "memo": {}})
    out = bits_per_dim_metric(ctx, n=600, steps=64, divergence="exact")
    expected = (0.5 * math.log(2 * math.pi * math.e * std**2) - math.log(2.0 / levels)) / math.log(2.0)
    assert out["bits_per_dim"] == pytest.approx(expected, abs=3 * out["bits_per_dim_stderr"] + 0.01)
    assert ctx.extras["memo"], "the figure is kept for the run"
    assert bits_per_dim_metric(ctx, n=600, steps=64, divergence="exact") == out


def test_likelihood_refuses_categorical_fields_and_models_without_a_denoiser():
    diffusion = Diffusion({"x": VPLinear(), "c": CategoricalProcess(4, "uniform")})

    def fn(state, t):
        raise AssertionError("never called")

    fn.diffusion = diffusion
    with pytest.raises(LikelihoodError, match="categorical"):
        log_likelihood(fn, State({"x": torch.zeros(2, 3), "c": torch.zeros(2, 3, dtype=torch.long)}))
    with pytest.raises(ValueError, match="needs the model"):
        bits_per_dim_metric(EvalContext(generated=[], reference=[torch.zeros(2)], space=ContinuousCube((2,))))
