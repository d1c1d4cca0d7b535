"""Samplers against the exact-score oracle.

Stated criterion: sliced Wasserstein-2 between 4,000 samples and fresh target draws is within
FACTOR x the two-sample noise floor (SW2 between two independent target draws of the same size,
averaged over two pairs), at the number of network evaluations (NFE) each case states.
"""
import pytest
import torch

from diffkit.denoiser import Denoiser, guided
from diffkit.metrics import sliced_wasserstein
from diffkit.oracle import AnalyticBackbone, GaussianMixture, random_mixture, ring
from diffkit.processes import EDM, VE, CategoricalProcess, Diffusion, VPCosine, VPLinear
from diffkit.samplers import DEFAULT_SCHEDULE, SAMPLERS, make_times, sample, steps_for_nfe
from diffkit.state import State

FACTOR = 2.5
N = 4000

# (sampler, process, levels, options) -> NFE = SAMPLERS[sampler].nfe(levels, **options)
CASES = [
    ("ancestral", VPLinear(), 200, {}),
    ("ddim", VPLinear(), 50, {}),
    ("ddim", VPLinear(), 100, {"eta": 1.0}),
    ("euler", VPLinear(), 50, {}),
    ("heun", VPLinear(), 18, {}),
    ("heun", VE(), 18, {}),
    ("heun", EDM(), 18, {}),
    ("dpmpp-2m", VPLinear(), 10, {}),
    ("dpmpp-2m", VPCosine(), 10, {}),
    ("dpmpp-2m", VE(), 10, {}),
    ("dpmpp-2m", EDM(), 10, {}),
    ("dpmpp-3m", VPLinear(), 15, {}),
    ("deis", VPLinear(), 10, {}),
    ("deis", EDM(), 10, {}),
    ("unipc", VPLinear(), 10, {}),
    ("unipc", VE(), 10, {"order": 3}),
    ("langevin", VE(), 30, {"n_steps": 20, "step_size": 1e-4}),
    ("pc", VPLinear(), 50, {}),
    ("pc", VPLinear(), 100, {"predictor": "euler-maruyama", "n_corrector": 0}),
]
MIXTURES = {"ring8-2d": ring(8), "mixture-16d": random_mixture(16)}
_FLOOR = {}


def _floor(name):
    if name not in _FLOOR:
        mix = MIXTURES[name]
        refs = [mix.sample(N, torch.Generator().manual_seed(101 + i)) for i in range(3)]
        _FLOOR[name] = (sliced_wasserstein(refs[0], refs[1]) + sliced_wasserstein(refs[1], refs[2])) / 2
    return _FLOOR[name]


def _run(mix, proc, sampler, levels, opts, seed=7, param="eps"):
    diff = Diffusion({"x": proc})
    fn = guided(Denoiser(AnalyticBackbone(mix, proc, param), diff, param))
    g = torch.Generator().manual_seed(seed)
    x_T = diff.prior(State(x=torch.zeros(N, mix.dim)), g)
    times = make_times(diff, levels, DEFAULT_SCHEDULE.get(sampler, "uniform"))
    return SAMPLERS[sampler](fn, x_T, times, generator=g, **opts)["x"]


@pytest.mark.parametrize("mixture", list(MIXTURES))
@pytest.mark.parametrize("sampler,proc,levels,opts", CASES, ids=[f"{c[0]}-{c[1].name}-{c[0] and SAMPLERS[c[0]].nfe(c[2], **c[3])}nfe" for c in CASES])
def test_sampler_reaches_the_mixture(mixture, sampler, proc, levels, opts):
    mix = MIXTURES[mixture]
    x = _run(mix, proc, sampler, levels, opts)
    target = mix.sample(N, torch.Generator().manual_seed(100))
    ratio = sliced_wasserstein(x, target) / _floor(mixture)
    assert ratio < FACTOR, f"{sampler} on {proc.name}: SW2 is {ratio:.2f}x the noise floor at NFE {SAMPLERS[sampler].nfe(levels, **opts)}"


def test_the_criterion_can_fail():
    """Too few evaluations, or no denoising at all, must miss the criterion by far."""
    mix = MIXTURES["ring8-2d"]
    target = mix.sample(N, torch.Generator().manual_seed(100))
    crude = _run(mix, VPLinear(), "euler", 2, {})
    prior = VPLinear().prior(torch.zeros(N, 2), torch.Generator().manual_seed(0))
    assert sliced_wasserstein(crude, target) / _floor("ring8-2d") > FACTOR
    assert sliced_wasserstein(prior, target) / _floor("ring8-2d") > 3 * FACTOR


def test_higher_order_beats_euler_at_equal_nfe():
    mix = MIXTURES["ring8-2d"]
    target = mix.sample(N, torch.Generator().manual_seed(100))
    sw = {name: sliced_wasserstein(_run(mix, VPLinear(), name, 8, {}), target) for name in ("euler", "dpmpp-2m")}
    assert sw["dpmpp-2m"] < sw["euler"]


def _flow_error(mix, sampler, steps, opts, reference):
    proc = VPLinear()
    diff = Diffusion({"x": proc})
    fn = guided(Denoiser(AnalyticBackbone(mix, proc, "eps"), diff, "eps"))
    x_T = diff.prior(State(x=torch.zeros(1000, mix.dim, dtype=torch.float64)), torch.Generator().manual_seed(0))
    x = SAMPLERS[sampler](fn, x_T, make_times(diff, steps, "logsnr"), **opts)["x"]
    if reference is None:
        return x
    return float((x - reference).norm(dim=1).mean())


@pytest.mark.parametrize("sampler,opts,min_ratio", [
    ("ddim", {}, None), ("deis", {}, 3.0), ("unipc", {}, 3.0), ("unipc", {"order": 3}, 6.0),
])
def test_multistep_solvers_converge_at_their_order(sampler, opts, min_ratio):
    """The deterministic samplers solve the probability-flow ODE: halving the log-SNR step shrinks the
    error against a converged solution of the same draws by about 2^order (DDIM: 2, so it fails a
    second-order bound, which shows the bound can fail)."""
    mix = random_mixture(16)
    reference = _flow_error(mix, "dpmpp-3m", 400, {}, None)
    ratio = _flow_error(mix, sampler, 20, opts, reference) / _flow_error(mix, sampler, 40, opts, reference)
    if min_ratio is None:
        assert 1.6 < ratio < 2.5
    else:
        assert ratio > min_ratio


def test_first_order_deis_and_unipc_are_ddim():
    mix = ring(8)
    ddim_x = _flow_error(mix, "ddim", 12, {}, None)
    assert torch.allclose(_flow_error(mix, "deis", 12, {"order": 1}, None), ddim_x, atol=1e-10)
    assert torch.allclose(_flow_error(mix, "unipc", 12, {"order": 1, "corrector": False}, None), ddim_x, atol=1e-10)


def test_unipc_corrector_raises_the_accuracy_at_no_extra_cost():
    mix = random_mixture(16)
    reference = _flow_error(mix, "dpmpp-3m", 400, {}, None)
    with_c = _flow_error(mix, "unipc", 30, {}, reference)
    without = _flow_error(mix, "unipc", 30, {"corrector": False}, reference)
    assert with_c < 0.5 * without
    assert SAMPLERS["unipc"].nfe(30) == 30


@pytest.mark.parametrize("param", ["eps", "x0", "v", "score"])
def test_every_parameterisation_gives_the_same_denoiser(param, gen):
    mix = ring(8)
    proc = VPCosine()
    diff = Diffusion({"x": proc})
    reference = Denoiser(AnalyticBackbone(mix, proc, "x0"), diff, "x0")
    other = Denoiser(AnalyticBackbone(mix, proc, param), diff, param)
    x = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    for t in (0.05, 0.5, 0.95):
        a = reference(State(x=x), t)["x"]
        b = other(State(x=x), t)["x"]
        assert torch.allclose(a, b, atol=1e-8)


@pytest.mark.parametrize("param", ["eps", "x0", "v", "score", "edm"])
def test_one_time_for_the_batch_gives_the_per_example_prediction(param, gen):
    """Samplers pass one time for the whole batch, and the Denoiser then uses plain-float coefficients;
    the prediction must equal the one computed with a per-example time tensor."""
    mix, proc = ring(8), (EDM() if param == "edm" else VPLinear())
    diff = Diffusion({"x": proc})

    class Raw(torch.nn.Module):  # any fixed function of (x, t): the conversion is what is tested
        def forward(self, state, t, cond=None):
            return {"x": torch.sin(3 * state["x"]) + t.reshape(-1, 1)}

    den = Denoiser(Raw(), diff, param)
    x = torch.randn(32, 2, generator=gen, dtype=torch.float64)
    for t in (0.02, 0.5, 0.97):
        one = den(State(x=x), t)["x"]
        each = den(State(x=x), torch.full((32,), t, dtype=torch.float64))["x"]
        assert torch.allclose(one, each, rtol=1e-10, atol=1e-10)


def test_edm_preconditioning_round_trips_the_exact_denoiser(gen):
    """A backbone that outputs F = (x0 - c_skip x~)/c_out, given c_in x~ and c_noise, recovers x0 exactly."""
    from diffkit.denoiser import edm_coefficients

    mix, proc = ring(8), EDM()
    diff = Diffusion({"x": proc})

    class EdmOracle(torch.nn.Module):
        def forward(self, state, c_noise, cond=None):
            sigma = torch.exp(4 * c_noise.double()).reshape(-1, 1)
            c_skip, c_out, c_in = edm_coefficients(sigma, 0.5)
            x = state["x"] / c_in  # undo the input scaling
            x0 = mix.posterior_mean(x, torch.ones_like(sigma), sigma)
            return {"x": (x0 - c_skip * x) / c_out}

    den = Denoiser(EdmOracle(), diff, "edm")
    exact = Denoiser(AnalyticBackbone(mix, proc, "x0"), diff, "x0")
    x = 3 * torch.randn(32, 2, generator=gen, dtype=torch.float64)
    for t in (0.1, 0.5, 0.9):
        assert torch.allclose(den(State(x=x), t)["x"], exact(State(x=x), t)["x"], atol=1e-6)


class _CategoricalOracle(torch.nn.Module):
    """Exact p(x0 | x_t) for independent categorical data with class probabilities ``pi``:
    p(x0 = k | x_t) ∝ pi_k q(x_t | x0 = k); plus the exact Gaussian mixture for field ``x``."""

    def __init__(self, proc, pi, mix, gproc):
        super().__init__()
        self.proc, self.pi, self.mix, self.gproc = proc, pi, mix, gproc

    def forward(self, state, t, cond=None):
        xt = state["c"]
        logits = []
        for k in range(len(self.pi)):
            x0 = torch.nn.functional.one_hot(torch.tensor(k), len(self.pi)).float().expand(*xt.shape[:-1], len(self.pi))
            lik = (self.proc.marginal_probs(x0, t) * xt).sum(-1)
            logits.append(torch.log(self.pi[k] * lik + 1e-30))
        gauss = AnalyticBackbone(self.mix, self.gproc, "eps")(state, t)
        return {"c": torch.stack(logits, -1), "x": gauss["x"]}


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "heun", "dpmpp-2m"])
@pytest.mark.parametrize("limit", ["uniform", "absorbing", "marginal"])
def test_mixed_state_categorical_fields_step_beside_any_sampler(sampler, limit):
    pi = torch.tensor([0.6, 0.3, 0.1])
    limit_arg = [0.2, 0.3, 0.5] if limit == "marginal" else limit
    cproc, gproc, mix = CategoricalProcess(3, limit_arg), VPLinear(), ring(8)
    diff = Diffusion({"x": gproc, "c": cproc})
    den = Denoiser(_CategoricalOracle(cproc, pi, mix, gproc), diff, "eps")
    g = torch.Generator().manual_seed(3)
    out = sample(guided(den), State(x=torch.zeros(N, 2), c=torch.zeros(N, 3)), sampler=sampler, steps=20, generator=g)
    freq = out["c"][..., :3].mean(0)
    assert torch.allclose(out["c"].sum(-1), torch.ones(N))
    assert torch.allclose(freq, pi, atol=0.03), freq
    target = mix.sample(N, torch.Generator().manual_seed(100))
    assert sliced_wasserstein(out["x"], target) / _floor("ring8-2d") < FACTOR


def test_classifier_free_guidance_selects_the_class():
    """Conditional oracle: class c is component c of a 2-component mixture; the null label gives the mixture.
    Scale 1 samples the class; scale 0 the unconditional mixture; scale 3 sharpens towards the class mean."""
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    full = GaussianMixture(means, 0.5)
    parts = [GaussianMixture(means[i:i + 1], 0.5) for i in range(2)]
    proc = VPLinear()

    class Conditional(torch.nn.Module):
        def forward(self, state, t, cond=None):
            outs = []
            for i in range(state["x"].shape[0]):
                c = -1 if cond is None else int(cond[i])
                mix = full if c < 0 else parts[c]
                outs.append(AnalyticBackbone(mix, proc, "eps")(State(x=state["x"][i:i + 1]), t[i:i + 1])["x"])
            return {"x": torch.cat(outs)}

    den = Denoiser(Conditional(), Diffusion({"x": proc}), "eps")
    n = 300
    labels = torch.ones(n, dtype=torch.long)
    tpl = State(x=torch.zeros(n, 2))
    on = sample(guided(den, labels, 1.0), tpl, steps=15, generator=torch.Generator().manual_seed(0))["x"]
    off = sample(guided(den, labels, 0.0), tpl, steps=15, generator=torch.Generator().manual_seed(0))["x"]
    strong = sample(guided(den, labels, 3.0), tpl, steps=15, generator=torch.Generator().manual_seed(0))["x"]
    assert (on[:, 0] > 0).float().mean() > 0.97
    assert 0.35 < (off[:, 0] > 0).float().mean() < 0.65
    assert (strong[:, 0] > 0).float().mean() > 0.97 and strong[:, 0].std() < on[:, 0].std()


def test_steps_for_nfe_matches_the_cost_model():
    assert steps_for_nfe(SAMPLERS["heun"], 19) == 10
    assert steps_for_nfe(SAMPLERS["dpmpp-2m"], 10) == 10
    assert steps_for_nfe(SAMPLERS["pc"], 20, n_corrector=1) == 10
    assert SAMPLERS["langevin"].nfe(10, n_steps=5) == 51


def test_schedules_are_decreasing_and_span_the_process():
    diff = Diffusion({"x": VPLinear()})
    for name in ("uniform", "logsnr", "karras"):
        t = make_times(diff, 12, name)
        assert t.shape == (12,) and (t[1:] < t[:-1]).all()
        assert abs(float(t[0]) - diff.t_max) < 1e-6 and abs(float(t[-1]) - diff.t_min) < 1e-6
    with pytest.raises(ValueError, match="schedule"):
        make_times(diff, 5, "cubic")
