"""Conformance checks for forward noise processes (docs/contracts.md, "Process family")."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from diffkit.processes.base import FieldProcess
from diffkit.processes.categorical import CategoricalProcess
from diffkit.processes.gaussian import GaussianProcess
from diffkit.spaces.base import FieldSpec
from diffkit.testing.errors import Checker, component_name, json_roundtrip

CONTINUOUS_FIELD = FieldSpec("x")
CATEGORICAL_FIELD = FieldSpec("c", kind="categorical", num_classes=4)


def build_process(factory, field: FieldSpec | None = None, options: dict | None = None, name: str | None = None):
    """Call a process factory the way recipes do: with a continuous field, else a categorical one
    (``frequencies`` filled in for processes that need the data's class frequencies)."""
    ck = Checker("process", name or component_name(factory))
    options = dict(options or {})
    if field is not None:
        with ck.step("factory", f"factory({field.name!r} field, **{options})"):
            return factory(field, **options)
    errors = []
    tries = [(CONTINUOUS_FIELD, options), (CATEGORICAL_FIELD, options), (CATEGORICAL_FIELD, {"frequencies": [0.4, 0.3, 0.2, 0.1], **options})]
    for f, opts in tries:
        try:
            return factory(f, **opts)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}")
    ck.fail("factory", f"the factory accepts neither a continuous nor a categorical FieldSpec ({errors[-1]}); keep the signature factory(field, **options)")


def check_process(process, field: FieldSpec | None = None, *, options: dict | None = None, name: str | None = None, n: int = 20000, seed: int = 0) -> list[str]:
    """Check a process (or a process factory, called with ``field``) against the Process contract.

    Rules enforced, all processes:

    - ``[attributes]``: the process is a :class:`diffkit.processes.FieldProcess` (a family); ``name`` a string;
      ``t_min < t_max``; ``config()`` is JSON; ``sample_t(n)`` gives n float times in ``[t_min, t_max]``.
    - ``[determinism]``: ``sample_t``, ``q_sample`` and ``prior`` repeat exactly under the same seed.
    - ``[prior]``: the prior equals ``q(x_T | x_0)`` at ``T = t_max`` in the limit: Gaussian moments
      (mean within 5 standard errors, standard deviation within 5 %) or categorical frequencies agree.

    Processes of any other family (a plugin's):

    - ``[family]``: ``diffuse`` returns ``x_t`` of ``x_0``'s shape, repeatably under a seed; ``prior`` and
      ``step`` (to a time ``s`` and to clean data, ``s = None``) return the field's shape; ``loss`` of the
      backbone output shape (``output_shape``) is a finite per-example vector.

    Gaussian processes:

    - ``[schedule]``: ``alpha``, ``sigma`` finite and positive, ``log_snr`` strictly decreasing and
      ``t_from_log_snr`` its inverse.
    - ``[marginal]``: ``q_sample`` has mean ``alpha_t x_0`` and standard deviation ``sigma_t``.
    - ``[posterior]``: ``posterior(x_t, x_0, t, s)`` is Bayes-consistent: averaged over ``x_t ~ q(x_t | x_0)``
      its mean is ``alpha_s x_0`` and (law of total variance) ``var(mean) + var = sigma_s^2``.
    - ``[mask]``: ``noise`` is zero at masked-out positions.

    Categorical processes:

    - ``[transition]``: ``transition_matrix`` rows are distributions and ``Qbar_t = Qbar_s Q_{t|s}``.
    - ``[marginal]``: ``marginal_probs(x_0, t)`` is row ``x_0`` of ``Qbar_t`` and ``q_sample`` draws from it.
    - ``[posterior]``: ``posterior_probs`` obeys Bayes' rule, checked by brute force with the transition matrices:
      ``q(x_s=j | x_t=i, x_0=k) = Qbar_s[k,j] Q_{t|s}[j,i] / Qbar_t[k,i]``; ``reverse_probs`` marginalises it
      over ``p(x_0 | x_t)``.
    - ``[step]``: ``step`` returns one-hot states of the input's shape (symmetric for symmetric fields).
    """
    if not isinstance(process, FieldProcess) and callable(process):
        process = build_process(process, field, options, name)
    ck = Checker("process", name or component_name(process))
    checked = []
    ck.require(isinstance(process, FieldProcess), "attributes",
               f"{type(process).__name__} is not a process family; subclass diffkit.processes.GaussianProcess, CategoricalProcess or FieldProcess")
    ck.require(isinstance(getattr(process, "name", None), str), "attributes", "the process has no string 'name'")
    t_min, t_max = float(process.t_min), float(process.t_max)
    ck.require(0.0 <= t_min < t_max, "attributes", f"need 0 <= t_min < t_max, got t_min={t_min}, t_max={t_max}")
    with ck.step("attributes", "JSON encoding of config()"):
        json_roundtrip(process.config())
    with ck.step("attributes", "sample_t(64, generator)"):
        t1 = process.sample_t(64, torch.Generator().manual_seed(seed))
        t2 = process.sample_t(64, torch.Generator().manual_seed(seed))
    ck.require(isinstance(t1, torch.Tensor) and t1.shape == (64,) and t1.is_floating_point(), "attributes", f"sample_t(64) returned {getattr(t1, 'shape', t1)!r}; return a float tensor of shape (64,)")
    ck.require(bool(((t1 >= t_min - 1e-9) & (t1 <= t_max + 1e-9)).all()), "attributes", f"sample_t drew times in [{float(t1.min()):.4g}, {float(t1.max()):.4g}], outside [t_min, t_max] = [{t_min}, {t_max}]")
    ck.require(torch.equal(t1, t2), "determinism", "sample_t differs under the same seed; draw only from the generator")
    checked.append("attributes")
    if isinstance(process, GaussianProcess):
        checked += _check_gaussian(ck, process, n, seed)
    elif isinstance(process, CategoricalProcess):
        checked += _check_categorical(ck, process, n, seed)
    else:
        checked += _check_family(ck, process, field, seed)
    return checked


# --- any other family ------------------------------------------------------------------------------------
def _check_family(ck: Checker, proc, field: FieldSpec | None, seed: int) -> list[str]:
    """The contract's shapes and determinism, for a family the kit knows nothing else about (on ``B×4×3`` data, or
    one-hot ``B×4×K`` for a categorical field)."""
    B = 16
    g = torch.Generator().manual_seed(seed)
    if field is not None and field.kind == "categorical":
        x0 = F.one_hot(torch.randint(field.num_classes, (B, 4), generator=g), field.num_classes).float()
    else:
        x0 = torch.rand(B, 4, 3, generator=g) * 2 - 1
    t = proc.sample_t(B, torch.Generator().manual_seed(seed)).float()
    with ck.step("family", "diffuse(x0, t, generator)"):
        xt, noise = proc.diffuse(x0, t, torch.Generator().manual_seed(seed + 1))
        xt2, _ = proc.diffuse(x0, t, torch.Generator().manual_seed(seed + 1))
    ck.require(isinstance(xt, torch.Tensor) and xt.shape[0] == B, "family", f"diffuse returned {type(xt).__name__} {tuple(getattr(xt, 'shape', ()))}; return (x_t, noise or None) with x_t batch-first")
    ck.require(torch.equal(xt, xt2), "determinism", "diffuse differs under the same seed; draw only from the generator")
    with ck.step("family", "prior(like, generator)"):
        prior = proc.prior(x0, torch.Generator().manual_seed(seed + 2))
        prior2 = proc.prior(x0, torch.Generator().manual_seed(seed + 2))
    ck.require(prior.shape == xt.shape, "family", f"prior returned shape {tuple(prior.shape)}, not that of x_t {tuple(xt.shape)}")
    ck.require(torch.equal(prior, prior2), "determinism", "prior differs under the same seed; draw only from the generator")
    raw = torch.randn(proc.output_shape(xt.shape), generator=g)
    with ck.step("family", "read(raw, x_t, t) and prediction(...)"):
        pred = proc.prediction(proc.read(raw, xt, t.double()))
    t_, s_ = 0.6 * proc.t_max + 0.4 * proc.t_min, 0.3 * proc.t_max + 0.7 * proc.t_min
    with ck.step("family", "step(x_t, prediction, t, s) and step(..., s=None)"):
        out_s = proc.step(xt, pred, t_, s_, torch.Generator().manual_seed(0))
        out_0 = proc.step(xt, pred, t_, None, torch.Generator().manual_seed(0))
    ck.require(out_s.shape == xt.shape and out_0.shape[0] == B, "family", f"step returned shape {tuple(out_s.shape)}; return the field's shape {tuple(xt.shape)}")
    ck.require(bool(torch.isfinite(out_s.float()).all() and torch.isfinite(out_0.float()).all()), "family", "step returned NaN or infinite values")
    with ck.step("family", "loss(raw, x0, x_t, noise, t)"):
        loss = proc.loss(raw, x0, xt, noise, t.double())
    ck.require(isinstance(loss, torch.Tensor) and loss.shape == (B,) and bool(torch.isfinite(loss).all()), "family",
               f"loss returned {tuple(getattr(loss, 'shape', ()))}; return a finite per-example loss of shape ({B},)")
    return ["family", "determinism"]


# --- Gaussian -------------------------------------------------------------------------------------------
def _check_gaussian(ck: Checker, proc, n: int, seed: int) -> list[str]:
    t_min, t_max = float(proc.t_min), float(proc.t_max)
    grid = torch.linspace(max(t_min, 1e-4) + 1e-3 * (t_max - t_min), t_max, 64, dtype=torch.float64)
    with ck.step("schedule", "alpha/sigma/log_snr on a grid of times"):
        alpha, sigma, lam = proc.alpha(grid), proc.sigma(grid), proc.log_snr(grid)
    ck.require(bool(torch.isfinite(alpha).all() and torch.isfinite(sigma).all() and (alpha > 0).all() and (sigma > 0).all()), "schedule", "alpha_t or sigma_t is not finite and positive on (t_min, t_max]")
    ck.require(bool((lam[1:] < lam[:-1]).all()), "schedule", "log_snr(t) does not decrease strictly in t; noise must grow with t")
    with ck.step("schedule", "t_from_log_snr(log_snr(t))"):
        back = proc.t_from_log_snr(lam)
    err = float((back.double() - grid).abs().max())
    ck.require(err < 1e-4 * max(1.0, t_max), "schedule", f"t_from_log_snr(log_snr(t)) is off by {err:.3g}; it must invert log_snr")

    g = torch.Generator().manual_seed(seed)
    shape = (n, 4, 3)  # a node axis, so that zero-mean processes project as they do on positions
    x0 = proc.project(torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1)
    t = 0.5 * (t_min + t_max)
    with ck.step("marginal", "q_sample(x0, t, noise(x0))"):
        eps = proc.noise(x0, g)
        xt = proc.q_sample(x0, torch.tensor(t, dtype=torch.float64), eps)
    a, s = float(proc.alpha(t)), float(proc.sigma(t))
    gap = float((xt - (a * x0 + s * eps)).abs().max())
    ck.require(gap < 1e-5 * (1 + a + s), "marginal", f"q_sample(x0, t, eps) differs from alpha_t x0 + sigma_t eps by {gap:.3g} at t={t:.3g}")
    reference = proc.project(torch.randn(shape, generator=torch.Generator().manual_seed(seed + 9), dtype=torch.float64))
    ck.require(abs(float(eps.mean())) < 5 / math.sqrt(eps.numel()), "marginal", f"noise() has mean {float(eps.mean()):.3g}; draw standard normal noise")
    ratio = float(eps.std()) / float(reference.std())
    ck.require(abs(ratio - 1) < 0.03, "marginal", f"noise() has standard deviation {ratio:.3f} times that of a (projected) standard normal; draw standard normal noise")

    # prior = q(x_T | x_0) in the limit
    with ck.step("prior", "prior(like, generator)"):
        prior = proc.prior(x0, torch.Generator().manual_seed(seed + 1))
        prior2 = proc.prior(x0, torch.Generator().manual_seed(seed + 1))
    ck.require(prior.shape == x0.shape, "prior", f"prior returned shape {tuple(prior.shape)} for like of shape {tuple(x0.shape)}")
    ck.require(torch.equal(prior, prior2), "determinism", "prior differs under the same seed; draw only from the generator")
    T = torch.tensor(t_max, dtype=torch.float64)
    xT = proc.q_sample(x0, T, proc.noise(x0, torch.Generator().manual_seed(seed + 2)))
    sd_q = float(xT.std())
    mean_gap = abs(float(prior.double().mean()) - float(xT.mean()))
    ck.require(mean_gap < 5 * sd_q / math.sqrt(xT.numel()) + 1e-3 * sd_q, "prior", f"prior mean differs from that of q(x_T | x_0) by {mean_gap:.3g} (sd {sd_q:.3g}); sample the limit of q at t_max")
    sd_ratio = float(prior.double().std()) / sd_q
    ck.require(abs(sd_ratio - 1) < 0.05, "prior", f"prior standard deviation is {sd_ratio:.3f} times that of q(x_T | x_0) at t_max={t_max:g}; scale the prior by sigma_T (or raise t_max until alpha_T x_0 is negligible)")
    ck.require(torch.equal(proc.q_sample(x0[:8], T, eps[:8]), proc.q_sample(x0[:8], T, eps[:8])), "determinism", "q_sample is not a function of (x0, t, noise)")

    # posterior: Bayes consistency by the law of total expectation and variance
    checked = ["schedule", "marginal", "prior"]
    if hasattr(proc, "posterior"):
        s_, t_ = t_min + 0.3 * (t_max - t_min), t_min + 0.6 * (t_max - t_min)
        x0_scalar = torch.full((n,), 0.7, dtype=torch.float64)
        xt_ = float(proc.alpha(t_)) * x0_scalar + float(proc.sigma(t_)) * torch.randn(n, generator=g, dtype=torch.float64)
        with ck.step("posterior", "posterior(x_t, x_0, t, s)"):
            mean, var = proc.posterior(xt_, x0_scalar, t_, s_)
        var = float(torch.as_tensor(var).double().mean())
        a_s, s_s = float(proc.alpha(s_)), float(proc.sigma(s_))
        se = math.sqrt(max(float(mean.var()), 1e-12) / n)
        ck.require(abs(float(mean.mean()) - a_s * 0.7) < 5 * se + 1e-6, "posterior", f"E[posterior mean] = {float(mean.mean()):.4g}, not alpha_s x0 = {a_s * 0.7:.4g}; q(x_s | x_t, x_0) must follow from Bayes' rule")
        total = float(mean.var()) + var
        ck.require(abs(total / s_s**2 - 1) < 0.05, "posterior", f"var(posterior mean) + posterior variance = {total:.4g}, not sigma_s^2 = {s_s**2:.4g}; q(x_s | x_t, x_0) must follow from Bayes' rule")
        checked.append("posterior")

    mask = torch.ones(2, 4)
    mask[:, -1] = 0
    with ck.step("mask", "noise(like, generator, mask)"):
        z = proc.noise(torch.zeros(2, 4, 3), torch.Generator().manual_seed(0), mask)
    ck.require(bool((z[:, -1] == 0).all()), "mask", "noise is not zero at masked-out (padding) positions; multiply by the mask")
    checked += ["mask", "determinism"]
    return checked


# --- categorical -----------------------------------------------------------------------------------------
def _check_categorical(ck: Checker, proc, n: int, seed: int) -> list[str]:
    for attr in ("num_states", "num_classes", "q_sample", "prior", "posterior_probs", "reverse_probs", "step"):
        ck.require(hasattr(proc, attr), "attributes", f"a categorical process needs {attr!r}; subclass diffkit.processes.CategoricalProcess")
    K, S = int(proc.num_classes), int(proc.num_states)
    ck.require(S >= K >= 2, "attributes", f"need num_states >= num_classes >= 2, got {S} and {K}")
    t_min, t_max = float(proc.t_min), float(proc.t_max)
    s_, t_ = t_min + 0.3 * (t_max - t_min), t_min + 0.6 * (t_max - t_min)
    checked = []
    has_matrix = hasattr(proc, "transition_matrix")
    if has_matrix:
        with ck.step("transition", "transition_matrix(t) and transition_matrix(t, s)"):
            Qs, Qt, Qts = proc.transition_matrix(s_).double(), proc.transition_matrix(t_).double(), proc.transition_matrix(t_, s_).double()
        for label, Q in (("Qbar_s", Qs), ("Qbar_t", Qt), ("Q_{t|s}", Qts)):
            ck.require(Q.shape == (S, S), "transition", f"{label} has shape {tuple(Q.shape)}, not {S}×{S}")
            ck.require(bool((Q >= -1e-9).all()) and bool(((Q.sum(-1) - 1).abs() < 1e-5).all()), "transition", f"the rows of {label} are not probability distributions")
        gap = float((Qs @ Qts - Qt).abs().max())
        ck.require(gap < 1e-5, "transition", f"Qbar_s Q_(t|s) differs from Qbar_t by {gap:.3g}; the transitions must compose (Chapman-Kolmogorov)")
        checked.append("transition")

    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(K)
    if has_matrix and hasattr(proc, "marginal_probs"):
        with ck.step("marginal", "marginal_probs(one-hot x0, t)"):
            probs = proc.marginal_probs(eye, t_).double()
        gap = float((probs - Qt[:K]).abs().max())
        ck.require(gap < 1e-5, "marginal", f"marginal_probs(x0, t) differs from row x0 of transition_matrix(t) by {gap:.3g}")
    else:
        probs = None
    x0_idx = torch.randint(K, (n,), generator=g)
    x0 = F.one_hot(x0_idx, K).float()
    with ck.step("marginal", "q_sample(x0, t, generator)"):
        xt = proc.q_sample(x0, t_, g)
        again = proc.q_sample(x0, t_, torch.Generator().manual_seed(seed + 5))
        again2 = proc.q_sample(x0, t_, torch.Generator().manual_seed(seed + 5))
    ck.require(tuple(xt.shape) == (n, S) and _is_one_hot(xt), "marginal", f"q_sample returned shape {tuple(xt.shape)} (one-hot: {_is_one_hot(xt)}); return one-hot over the {S} states")
    ck.require(torch.equal(again, again2), "determinism", "q_sample differs under the same seed; draw only from the generator")
    if probs is not None:
        expected = probs[x0_idx].mean(0)
        _compare_frequencies(ck, "marginal", xt.double().mean(0), expected, n, "q_sample frequencies")
    checked.append("marginal")

    # prior = q(x_T | x_0) in the limit
    with ck.step("prior", "prior(like, generator)"):
        like = torch.zeros(n, S)
        prior = proc.prior(like, torch.Generator().manual_seed(seed + 1))
        prior2 = proc.prior(like, torch.Generator().manual_seed(seed + 1))
    ck.require(tuple(prior.shape) == (n, S) and _is_one_hot(prior), "prior", f"prior returned shape {tuple(prior.shape)}; return one-hot over the {S} states")
    ck.require(torch.equal(prior, prior2), "determinism", "prior differs under the same seed; draw only from the generator")
    with ck.step("prior", "q_sample(x0, t_max)"):
        if has_matrix and hasattr(proc, "marginal_probs"):
            limit = proc.marginal_probs(x0, t_max).double().mean(0)
        else:
            limit = proc.q_sample(x0, t_max, torch.Generator().manual_seed(seed + 3)).double().mean(0)
    _compare_frequencies(ck, "prior", prior.double().mean(0), limit, n, "prior frequencies (vs q(x_T | x_0) at t_max)")
    checked.append("prior")

    # posterior: Bayes' rule by brute force
    if has_matrix:
        xt_all = torch.eye(S).repeat_interleave(K, 0)          # (S*K)×S: every x_t ...
        x0_all = torch.eye(K).repeat(S, 1)                      # ... with every x_0
        with ck.step("posterior", "posterior_probs(x_t, x_0, t, s)"):
            post = proc.posterior_probs(xt_all, x0_all, t_, s_).double()
        ck.require(tuple(post.shape) == (S * K, S), "posterior", f"posterior_probs returned shape {tuple(post.shape)}, not (batch, {S})")
        worst = 0.0
        for r in range(S * K):
            i, k = r // K, r % K
            evidence = float(Qt[k, i])
            if evidence < 1e-9:
                continue  # x_t = i cannot follow x_0 = k
            bayes = Qs[k, :] * Qts[:, i] / evidence
            worst = max(worst, float((post[r] - bayes).abs().max()))
        ck.require(worst < 1e-4, "posterior", f"posterior_probs differs from Bayes' rule Qbar_s[x0, j] Q_(t|s)[j, x_t] / Qbar_t[x0, x_t] by {worst:.3g}")
        # reverse = posterior marginalised over p(x_0 | x_t), restricted to x_0 that can reach x_t
        p0 = torch.rand(S, K, generator=g, dtype=torch.float64) * (Qt[:K].T > 1e-9)
        p0 = p0 / p0.sum(-1, keepdim=True).clamp_min(1e-30)
        with ck.step("posterior", "reverse_probs(x_t, p(x_0 | x_t), t, s)"):
            rev = proc.reverse_probs(torch.eye(S), p0.float(), t_, s_).double()
        post_by = post.reshape(S, K, S)
        expected = (p0[:, :, None] * post_by).sum(1)
        gap = float((rev - expected).abs().max())
        ck.require(gap < 1e-4, "posterior", f"reverse_probs differs by {gap:.3g} from sum_x0 q(x_s | x_t, x_0) p(x_0 | x_t); it must marginalise the posterior")
        checked.append("posterior")

    # step
    n_nodes = 5
    xt_pairs = F.one_hot(torch.randint(S, (2, n_nodes, n_nodes), generator=g), S).float()
    p_pairs = torch.rand(2, n_nodes, n_nodes, K, generator=g)
    p_pairs = p_pairs / p_pairs.sum(-1, keepdim=True)
    with ck.step("step", "step(x_t, p(x_0 | x_t), t, s) and step(..., s=None)"):
        out_s = proc.step(xt_pairs, p_pairs, t_, s_, torch.Generator().manual_seed(0))
        out_0 = proc.step(xt_pairs, p_pairs, t_, None, torch.Generator().manual_seed(0))
    ck.require(tuple(out_s.shape) == tuple(xt_pairs.shape) and _is_one_hot(out_s), "step", f"step returned shape {tuple(out_s.shape)}; return one-hot over the {S} states")
    ck.require(tuple(out_0.shape[:-1]) == tuple(xt_pairs.shape[:-1]) and _is_one_hot(out_0), "step", "step(..., s=None) must return one-hot x_0 of the input's shape")
    if getattr(proc, "symmetric", False):
        ck.require(torch.equal(out_s, out_s.transpose(1, 2)), "step", "a symmetric process returned an asymmetric pair field; copy the upper triangle")
    checked += ["step", "determinism"]
    return checked


def _is_one_hot(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all() and (x.sum(-1) == 1).all())


def _compare_frequencies(ck: Checker, contract: str, observed: torch.Tensor, expected: torch.Tensor, n: int, what: str) -> None:
    if observed.shape != expected.shape:
        ck.fail(contract, f"{what}: {observed.numel()} states observed, {expected.numel()} expected")
    tol = 5 * torch.sqrt(expected * (1 - expected) / n) + 2e-3
    worst = int(((observed - expected).abs() - tol).argmax())
    if (observed - expected).abs()[worst] > tol[worst]:
        ck.fail(contract, f"{what} differ at state {worst}: {float(observed[worst]):.4f} observed, {float(expected[worst]):.4f} expected")


__all__ = ["build_process", "check_process"]
