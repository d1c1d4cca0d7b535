"""diffkit-timeseries: the conformance kit on every component, and the generating process as stated."""
import math

import pytest
import torch

from diffkit.evaluation import EvalContext
from diffkit.spaces import SpaceError
from diffkit.testing import parametrize_checks
from diffkit_timeseries.data import generate
from diffkit_timeseries.metrics import autocorrelation, autocorrelation_error
from diffkit_timeseries.space import MultivariateSeries


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions run fastest on one thread, and the CPU is shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@parametrize_checks("diffkit-timeseries")
def test_conformance(check):
    assert check(), "a check returns the list of contracts it verified"


def test_generating_process_is_seeded_and_has_the_stated_period():
    a, ka = generate(200, channels=2, length=64, periods=(8, 16), seed=3)
    b, kb = generate(200, channels=2, length=64, periods=(8, 16), seed=3)
    assert torch.equal(a, b) and torch.equal(ka, kb)
    spectrum = torch.fft.rfft(a - a.mean(-1, keepdim=True), dim=-1).abs().mean(1)  # n×(T/2+1)
    peak = spectrum[:, 1:].argmax(-1) + 1                                            # cycles per 64 steps
    assert torch.equal(peak, torch.where(ka == 0, 8, 4)), "the dominant frequency must be T / period"


def test_noise_is_ar1_with_the_stated_coefficient():
    x, _ = generate(400, channels=1, length=64, periods=(8,), rho=0.8, noise=0.2, trend=0.0, seed=1)
    clean, _ = generate(400, channels=1, length=64, periods=(8,), rho=0.8, noise=0.0, trend=0.0, seed=1)
    e = (x - clean).double()
    lag1 = float((e[..., 1:] * e[..., :-1]).mean() / (e * e).mean())
    assert abs(lag1 - 0.8) < 0.03
    assert abs(float(e.std()) - 0.2) < 0.01


def test_autocorrelation_error_is_zero_at_identity_and_sees_white_noise():
    x, _ = generate(256, seed=0)
    white = torch.randn(256, 3, 64, generator=torch.Generator().manual_seed(0)) * x.std()
    same = autocorrelation_error(EvalContext(generated=list(x), reference=list(x)))
    other = autocorrelation_error(EvalContext(generated=list(white), reference=list(x)))
    assert same["acf_error"] == 0.0 and same["xcorr_error"] == 0.0
    assert other["acf_error"] > 3 * other["acf_error_floor"]
    assert float(autocorrelation(white, 4).abs().max()) < 0.05


def test_space_errors_name_the_fix():
    space = MultivariateSeries(channels=3, length=64)
    with pytest.raises(SpaceError, match=r"expected 3 channel\(s\) × 64 steps, got shape \(64, 3\); put channels first"):
        space.validate(torch.zeros(64, 3))
    assert MultivariateSeries(channels=1, length=8).validate(torch.ones(8)).shape == (1, 8)


@pytest.mark.slow
def test_smoke_recipe_learns_the_autocorrelation(tmp_path):
    """seasonal-smoke (300 steps) must beat white noise of the data's variance by far on acf_error."""
    from diffkit.runs import sample_run
    from diffkit.training.trainer import train

    summary = train("seasonal-smoke", tmp_path / "run", progress=False)
    assert math.isfinite(summary["loss"])
    metrics = sample_run(tmp_path / "run", n=256, progress=False, steps=20)["metrics"]
    assert "errors" not in metrics, metrics
    assert metrics["acf_error"] < 0.1, metrics  # white noise scores about 0.35 (see the test above)
