import itertools
import math

import pytest
import torch

from diffkit.processes import EDM, VE, CategoricalProcess, Diffusion, VPCosine, VPLinear, ZeroCoMGaussian
from diffkit.processes.gaussian import gaussian_posterior
from diffkit.state import State

GAUSSIAN = [VPLinear(), VPCosine(), VPCosine(log_snr_shift=3.2), VE(), EDM()]


@pytest.mark.parametrize("proc", GAUSSIAN, ids=lambda p: p.name)
def test_forward_marginal_matches_closed_form(proc, gen):
    """x_t = alpha x0 + sigma eps: the empirical mean and std of q(x_t | x_0) at fixed x_0."""
    x0 = torch.full((200_000, 1), 0.7, dtype=torch.float64)
    for t in (0.05, 0.5, 0.9):
        xt = proc.q_sample(x0, torch.tensor(t, dtype=torch.float64), torch.randn(x0.shape, generator=gen, dtype=torch.float64))
        a, s = float(proc.alpha(t)), float(proc.sigma(t))
        assert abs(float(xt.mean()) - 0.7 * a) < 4 * s / math.sqrt(2e5) + 1e-9
        assert abs(float(xt.std()) / s - 1) < 0.01


@pytest.mark.parametrize("proc", GAUSSIAN, ids=lambda p: p.name)
def test_log_snr_inverse_and_monotone(proc):
    t = torch.linspace(proc.t_min + 1e-4, proc.t_max, 50, dtype=torch.float64)
    lam = proc.log_snr(t)
    assert (lam[1:] < lam[:-1]).all(), "log-SNR must decrease in t"
    assert torch.allclose(proc.t_from_log_snr(lam), t, atol=1e-7)


@pytest.mark.parametrize("proc", GAUSSIAN, ids=lambda p: p.name)
def test_sde_coefficients_match_finite_differences(proc):
    """f = d log alpha/dt and g^2 = d sigma^2/dt - 2 f sigma^2, checked by central differences."""
    for t in (0.2, 0.6):
        f, g2 = proc.sde_coefficients(torch.tensor([t], dtype=torch.float64))
        h = 1e-5
        dla = (proc.log_alpha(torch.tensor(t + h, dtype=torch.float64)) - proc.log_alpha(torch.tensor(t - h, dtype=torch.float64))) / (2 * h)
        ds2 = (proc.sigma(t + h) ** 2 - proc.sigma(t - h) ** 2) / (2 * h)
        assert math.isclose(float(f), float(dla), rel_tol=1e-5, abs_tol=1e-8)
        assert math.isclose(float(g2), float(ds2 - 2 * dla * proc.sigma(t) ** 2), rel_tol=1e-5)


def test_shifted_cosine_is_the_cosine_schedule_moved_in_log_snr():
    plain, shifted = VPCosine(), VPCosine(log_snr_shift=3.2)
    t = torch.linspace(0.01, 0.99, 40, dtype=torch.float64)
    assert torch.allclose(shifted.log_snr(t), plain.log_snr(t) + 3.2, atol=1e-10)
    assert torch.allclose(shifted.alpha(t) ** 2 + shifted.sigma(t) ** 2, torch.ones_like(t), atol=1e-12)
    # data of scale d under the plain schedule has the SNR that data of scale 1 has under a shift of 2 log d
    d = math.exp(-1.6)
    assert torch.allclose(d**2 * shifted.alpha(t) ** 2 / shifted.sigma(t) ** 2, plain.alpha(t) ** 2 / plain.sigma(t) ** 2, rtol=1e-9)
    assert shifted.config()["log_snr_shift"] == 3.2


def test_vp_linear_matches_ddpm_discretisation():
    """beta(t) = 0.1 + 19.9 t is DDPM's 1000-step linear betas (1e-4 .. 0.02) in the continuous limit."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    proc = VPLinear()
    for i in (99, 499, 999):
        # log(1 - beta) = -beta - beta^2/2 - ...: the continuous limit drops the beta^2 terms (< 0.1 in log)
        assert abs(2 * float(proc.log_alpha(torch.tensor((i + 1) / 1000, dtype=torch.float64))) - float(abar[i].log())) < 0.1


def test_gaussian_posterior_is_bayes(gen):
    """q(x_s | x_t, x_0) by Gaussian conditioning of the joint (x_s, x_t) given x_0."""
    proc = VPCosine()
    t, s = 0.7, 0.4
    a_t, s_t, a_s, s_s = (float(v) for v in (proc.alpha(t), proc.sigma(t), proc.alpha(s), proc.sigma(s)))
    x0, xt = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.5, dtype=torch.float64)
    # joint of (x_s, x_t) | x0: x_s = a_s x0 + s_s e1, x_t = (a_t/a_s) x_s + sqrt(s_t^2 - (a_t/a_s)^2 s_s^2) e2
    cov_st = (a_t / a_s) * s_s**2
    mean = a_s * x0 + cov_st / s_t**2 * (xt - a_t * x0)
    var = s_s**2 - cov_st**2 / s_t**2
    m, v = gaussian_posterior(xt, x0, a_t, s_t, a_s, s_s)
    assert math.isclose(float(m), float(mean), rel_tol=1e-10) and math.isclose(v, var, rel_tol=1e-10)


def test_prior_is_the_limit_of_the_forward_marginal(gen):
    for proc in (VPLinear(), VPCosine()):
        assert float(proc.alpha(proc.t_max)) < 0.01  # q(x_T | x_0) ≈ N(0, sigma_T^2) whatever x_0
    ve = VE()
    assert float(ve.sigma(ve.t_max)) > 10 * 4  # sigma_T dwarfs unit-scale data
    like = torch.zeros(100_000, 2)
    for proc in GAUSSIAN:
        draw = proc.prior(like, gen)
        assert abs(float(draw.std()) / float(proc.sigma(proc.t_max)) - 1) < 0.02


def test_zero_com_projection_keeps_masked_mean_zero(gen):
    proc = ZeroCoMGaussian(VPCosine())
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0.0]])
    z = proc.noise(torch.zeros(2, 4, 3), gen, mask)
    assert torch.allclose((z * mask[..., None]).sum(1), torch.zeros(2, 3), atol=1e-6)
    assert (z[0, 3] == 0).all() and (z[1, 2:] == 0).all()
    xt = proc.q_sample(proc.project(torch.randn(2, 4, 3, generator=gen), mask), torch.tensor([0.3, 0.6]), z)
    assert torch.allclose((xt * mask[..., None]).sum(1), torch.zeros(2, 3), atol=1e-5)


# --- categorical ----------------------------------------------------------------------------------------
CATEGORICAL = [
    CategoricalProcess(4, "uniform"),
    CategoricalProcess(4, "absorbing"),
    CategoricalProcess(4, [0.5, 0.2, 0.2, 0.1]),
]


@pytest.mark.parametrize("proc", CATEGORICAL, ids=lambda p: p.limit_name)
def test_transition_matrices_are_stochastic_and_compose(proc):
    for t, s in ((0.3, 0.1), (0.9, 0.5)):
        qt, qs, qts = proc.transition_matrix(t), proc.transition_matrix(s), proc.transition_matrix(t, s)
        for q in (qt, qs, qts):
            assert (q >= 0).all() and torch.allclose(q.sum(1), torch.ones(q.shape[0]))
        assert torch.allclose(qs @ qts, qt, atol=1e-6)  # Qbar_s Q_{t|s} = Qbar_t


@pytest.mark.parametrize("proc", CATEGORICAL, ids=lambda p: p.limit_name)
def test_posterior_equals_bayes_rule_by_brute_force(proc):
    t, s = 0.6, 0.35
    qt, qs, qts = proc.transition_matrix(t), proc.transition_matrix(s), proc.transition_matrix(t, s)
    S, K = proc.num_states, proc.num_classes
    for x0, xt in itertools.product(range(K), range(S)):
        if qt[x0, xt] == 0:
            continue
        brute = torch.tensor([qts[j, xt] * qs[x0, j] / qt[x0, xt] for j in range(S)])
        got = proc.posterior_probs(torch.eye(S)[xt][None], torch.eye(K)[x0][None], t, s)[0]
        assert torch.allclose(got, brute, atol=1e-6), (x0, xt)


@pytest.mark.parametrize("proc", CATEGORICAL, ids=lambda p: p.limit_name)
def test_reverse_kernel_marginalises_the_posterior(proc, gen):
    t, s = 0.7, 0.4
    S, K = proc.num_states, proc.num_classes
    p0 = torch.rand(K, generator=gen)
    p0 = p0 / p0.sum()
    qt = proc.transition_matrix(t)
    for xt in range(S):
        expect = torch.zeros(S)
        for x0 in range(K):
            if qt[x0, xt] > 0:
                expect += p0[x0] * proc.posterior_probs(torch.eye(S)[xt][None], torch.eye(K)[x0][None], t, s)[0]
        expect = expect / expect.sum()
        got = proc.reverse_probs(torch.eye(S)[xt][None], p0[None], t, s)[0]
        assert torch.allclose(got, expect, atol=1e-6)


@pytest.mark.parametrize("proc", CATEGORICAL, ids=lambda p: p.limit_name)
def test_categorical_forward_frequencies_and_prior_limit(proc, gen):
    x0 = torch.nn.functional.one_hot(torch.full((40_000,), 1), proc.num_classes).float()
    xt = proc.q_sample(x0, 0.5, gen)
    expect = proc.marginal_probs(x0[:1], 0.5)[0]
    assert torch.allclose(xt.mean(0), expect, atol=0.01)
    # at t = 1 the forward marginal is the limit distribution, which is the prior
    assert torch.allclose(proc.marginal_probs(x0[:1], 1.0)[0], proc.m, atol=1e-4)
    assert torch.allclose(proc.prior(xt, gen).mean(0), proc.m, atol=0.01)


def test_symmetric_edge_noise(gen):
    proc = CategoricalProcess(4, "uniform", symmetric=True)
    x0 = torch.nn.functional.one_hot(torch.zeros(3, 5, 5, dtype=torch.long), 4).float()
    xt = proc.q_sample(x0, 0.8, gen).argmax(-1)
    assert torch.equal(xt, xt.transpose(1, 2))
    assert (xt.diagonal(dim1=1, dim2=2) == 0).all()
    assert (xt != 0).any()


def test_marginal_limit_must_be_a_distribution():
    with pytest.raises(ValueError, match="frequencies"):
        CategoricalProcess(3, [0.5, 0.5, 0.5])


def test_diffusion_composes_fields_over_one_time(gen):
    diff = Diffusion({"pos": ZeroCoMGaussian(VPCosine()), "atoms": CategoricalProcess(3, "uniform")}, {"pos": "node", "atoms": "node"})
    mask = torch.tensor([[1, 1, 0.0]])
    x0 = State(pos=torch.zeros(1, 3, 3), atoms=torch.eye(3)[None], mask=mask)
    noisy, eps = diff.noise(x0, torch.tensor([0.5], dtype=torch.float64), gen)
    assert set(noisy) == {"pos", "atoms", "mask"} and torch.equal(noisy["mask"], mask)
    assert (noisy["pos"][0, 2] == 0).all()
    prior = diff.prior(x0, gen)
    assert prior["atoms"].shape == (1, 3, 3) and torch.allclose(prior["atoms"].sum(-1), torch.ones(1, 3))
