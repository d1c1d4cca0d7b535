import pytest
import torch

from diffkit.denoiser import Denoiser, loss_weight, target_for
from diffkit.processes.gaussian import coefficients_like as _coef
from diffkit.losses import diffusion_loss
from diffkit.processes import CategoricalProcess, Diffusion, VPCosine, ZeroCoMGaussian
from diffkit.state import State


@pytest.mark.parametrize("param", ["eps", "x0", "v", "score", "edm"])
def test_the_regression_target_decodes_to_the_true_x0(param, gen):
    """Feeding the exact target of a parameterisation through its read-out recovers x0."""
    proc = VPCosine()
    diff = Diffusion({"x": proc})
    den = Denoiser(torch.nn.Identity(), diff, param)
    x0 = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    t = torch.rand(16, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    xt = proc.q_sample(x0, t, eps)
    a, s = _coef(proc, t, xt)
    raw = target_for(param, x0, eps, a, s, den.sigma_data)
    assert torch.allclose(den.x0_from_raw("x", raw, xt, t), x0, atol=1e-9)


def test_weightings_in_x0_space():
    snr = torch.tensor([0.1, 1.0, 10.0, 100.0], dtype=torch.float64)
    sig = 1 / snr.sqrt()
    one = torch.ones_like(snr)
    assert torch.allclose(loss_weight("simple", "eps", snr, sig, 0.5), one)
    assert torch.allclose(loss_weight("snr", "eps", snr, sig, 0.5), one)  # the eps loss is SNR-weighted x0 loss
    assert torch.allclose(loss_weight("snr", "x0", snr, sig, 0.5), snr)
    assert torch.allclose(loss_weight("min-snr", "x0", snr, sig, 0.5, gamma=5.0), snr.clamp(max=5.0))
    assert torch.allclose(loss_weight("min-snr", "eps", snr, sig, 0.5, gamma=5.0), snr.clamp(max=5.0) / snr)
    assert torch.allclose(loss_weight("min-snr", "v", snr, sig, 0.5, gamma=5.0), snr.clamp(max=5.0) / (snr + 1))
    with pytest.raises(ValueError, match="weighting"):
        loss_weight("huber", "eps", snr, sig, 0.5)


class _EchoX0(torch.nn.Module):
    """Predicts x0 = the clean data it was handed at construction (a perfect x0 model for one batch)."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, state, t, cond=None):
        return {k: v for k, v in self.x0.items() if k != "mask"}


def test_masked_positions_contribute_nothing(gen):
    proc = ZeroCoMGaussian(VPCosine())
    diff = Diffusion({"pos": proc}, {"pos": "node"})
    mask = torch.tensor([[1, 1, 0.0], [1, 1, 1.0]])
    x0 = State(pos=proc.project(torch.randn(2, 3, 3, generator=gen), mask), mask=mask)
    model = _EchoX0(State(pos=x0["pos"].clone()))
    den = Denoiser(model, diff, "x0")
    loss, _ = diffusion_loss(den, x0, torch.Generator().manual_seed(1))
    assert float(loss) < 1e-12
    model.x0["pos"][0, 2] = 1e6  # garbage at the padded node
    loss, _ = diffusion_loss(den, x0, torch.Generator().manual_seed(1))
    assert float(loss) < 1e-12


def test_categorical_cross_entropy_and_bound_vanish_for_a_perfect_model():
    proc = CategoricalProcess(4, "absorbing")
    diff = Diffusion({"c": proc})
    x0 = State(c=torch.nn.functional.one_hot(torch.tensor([[0, 3, 1, 2]]), 4).float().expand(8, 4, 4).clone())
    den = Denoiser(_EchoX0(State(c=x0["c"] * 50.0)), diff)
    loss, _ = diffusion_loss(den, x0, torch.Generator().manual_seed(0), vlb_weight=1.0)
    assert abs(float(loss)) < 1e-6
    bad = Denoiser(_EchoX0(State(c=x0["c"].flip(-1) * 50.0)), diff)
    loss_bad, _ = diffusion_loss(bad, x0, torch.Generator().manual_seed(0), vlb_weight=1.0)
    assert float(loss_bad) > 10


def test_shards_see_the_noise_of_the_whole_batch(gen):
    """Two halves evaluated separately give the same per-example losses as the whole batch."""
    proc = VPCosine()
    diff = Diffusion({"x": proc})
    lin = torch.nn.Linear(2, 2)
    den = Denoiser(type("B", (torch.nn.Module,), {"forward": lambda self, s, t, c=None: {"x": lin(s["x"])}})(), diff)
    x0 = State(x=torch.randn(8, 2, generator=gen))
    whole, _ = diffusion_loss(den, x0, torch.Generator().manual_seed(5))
    a, _ = diffusion_loss(den, x0, torch.Generator().manual_seed(5), shard=slice(0, 4))
    b, _ = diffusion_loss(den, x0, torch.Generator().manual_seed(5), shard=slice(4, 8))
    assert torch.allclose(whole, (a + b) / 2, atol=1e-6)
