"""Exact log-likelihood of a diffusion model through its probability-flow ODE (Song et al. 2021, §4.3).

For Gaussian fields with ``q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)`` the probability-flow ODE is

    dx/dt = h(x, t) = f(t) x - 1/2 g(t)^2 grad log p_t(x),   grad log p_t(x) ≈ (alpha_t x0_hat(x, t) - x) / sigma_t^2,

with ``f = d log alpha / dt`` and ``g^2 = -sigma^2 d lambda / dt``. It carries ``p_{t_min}`` onto
``p_{t_max}``, and the instantaneous change of variables gives

    log p_{t_min}(x) = log p_{t_max}(x_T) + integral_{t_min}^{t_max} div h(x_t, t) dt,

    div h = D (f + g^2 / (2 sigma^2)) - g^2 alpha / (2 sigma^2) div_x x0_hat(x, t),

where ``D`` is the number of dimensions and ``p_{t_max} = N(0, sigma_T^2 I)`` is the prior the samplers
draw from. ``div_x x0_hat`` is computed exactly (one vector-Jacobian product per dimension; for small
``D``) or by Hutchinson's estimator ``E_v[v^T (d x0_hat / dx) v]`` with a Rademacher probe ``v`` held
fixed along the path (one product per evaluation; unbiased for the integral). The joint system
``(x, log-density change)`` is integrated with Heun's method on a grid uniform in log-SNR.
"""
from __future__ import annotations

import math

import torch

from diffkit.processes.gaussian import probability_flow_drift
from diffkit.samplers.schedules import uniform_log_snr
from diffkit.state import State


class LikelihoodError(ValueError):
    """The model cannot give a likelihood this way. The message names the problem and the fix."""


def _check_fields(diffusion, state: State) -> list[str]:
    names = diffusion.gaussian_fields
    others = [k for k in diffusion.processes if k not in names]
    if others:
        raise LikelihoodError(f"the probability-flow likelihood needs Gaussian fields only; this diffusion also has fields {others} "
                              f"of other process families ({', '.join(sorted({diffusion.processes[k].name for k in others}))}): use the variational bound for those")
    for name in names:
        if diffusion.mask_for(state, name) is not None:
            raise LikelihoodError(f"field {name!r} carries a mask (variable-size data); the probability-flow likelihood here supports "
                                  f"fixed-size fields only")
    return names


def _flat(state: State, names) -> torch.Tensor:
    return torch.cat([state[n].reshape(state[n].shape[0], -1) for n in names], 1)


def _unflat(flat: torch.Tensor, like: State, names) -> State:
    out, start = State(like), 0
    for n in names:
        size = like[n][0].numel()
        out[n] = flat[:, start:start + size].reshape(like[n].shape)
        start += size
    return out


def _drift_and_divergence(denoiser, diffusion, names, like: State, x: torch.Tensor, t: float, divergence: str, probe: torch.Tensor | None):
    """``h(x, t)`` (B×D) and ``div h`` (B) at one time."""
    proc = diffusion.primary
    tt = torch.tensor(t, dtype=torch.float64)
    alpha, sigma = float(proc.alpha(tt)), float(proc.sigma(tt))
    f, g2 = (float(v) for v in proc.sde_coefficients(tt))
    B, D = x.shape
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        x0 = _flat(denoiser(_unflat(xg, like, names), torch.full((B,), t, dtype=torch.float64)), names)
        if divergence == "exact":
            div_x0 = torch.zeros(B, dtype=x.dtype)
            for i in range(D):
                grad = torch.autograd.grad(x0[:, i].sum(), xg, retain_graph=i < D - 1)[0]
                div_x0 = div_x0 + grad[:, i]
        else:
            grad = torch.autograd.grad((x0 * probe).sum(), xg)[0]
            div_x0 = (grad * probe).sum(1)
    x0 = x0.detach()
    drift = probability_flow_drift(x, x0, alpha, sigma, f, g2)
    div = D * (f + 0.5 * g2 / sigma**2) - 0.5 * g2 * alpha / sigma**2 * div_x0.detach()  # the divergence of that drift
    return drift, div


def log_likelihood(denoiser, state: State, *, steps: int = 64, divergence: str = "auto", generator: torch.Generator | None = None) -> torch.Tensor:
    """``log p_{t_min}(x)`` in nats per example (B) of the model's probability-flow ODE, for data ``state``
    encoded as the engine diffuses it (``space.collate``). ``denoiser(state, t) -> x0_hat`` is a
    :class:`diffkit.denoiser.Denoiser` or any callable carrying ``.diffusion`` that lets gradients flow
    to its input (so not :func:`diffkit.denoiser.guided`, which runs under ``no_grad``).

    ``divergence``: ``"exact"`` (D products per evaluation), ``"hutchinson"`` (one, with a Rademacher
    probe drawn from ``generator``), or ``"auto"`` (exact when ``D <= 32``).
    """
    diffusion = denoiser.diffusion
    state = State(state)
    names = _check_fields(diffusion, state)
    x = _flat(state, names).double()
    B, D = x.shape
    if divergence == "auto":
        divergence = "exact" if D <= 32 else "hutchinson"
    if divergence not in ("exact", "hutchinson"):
        raise LikelihoodError(f"unknown divergence estimator {divergence!r}; use 'exact', 'hutchinson' or 'auto'")
    probe = None
    if divergence == "hutchinson":
        probe = (torch.randint(0, 2, (B, D), generator=generator) * 2 - 1).double()
    like = State({k: v for k, v in state.items()})
    times = uniform_log_snr(diffusion, int(steps) + 1).flip(0).tolist()  # t_min -> t_max
    dtype = state[names[0]].dtype

    def field(x_, t_):
        drift, div = _drift_and_divergence(denoiser, diffusion, names, like, x_.to(dtype), t_, divergence,
                                           None if probe is None else probe.to(dtype))
        return drift.double(), div.double()

    delta = torch.zeros(B, dtype=torch.float64)
    d1, v1 = field(x, times[0])
    for t0, t1 in zip(times, times[1:]):
        h = t1 - t0
        x_euler = x + h * d1
        d2, v2 = field(x_euler, t1)
        x = x + 0.5 * h * (d1 + d2)
        delta = delta + 0.5 * h * (v1 + v2)
        d1, v1 = field(x, t1)  # the slope at the new point (Heun re-evaluates there)
    sigma_T = float(diffusion.primary.sigma(torch.tensor(times[-1], dtype=torch.float64)))
    log_prior = -0.5 * (x**2).sum(1) / sigma_T**2 - 0.5 * D * math.log(2 * math.pi * sigma_T**2)
    return log_prior + delta


def bits_per_dim(log_likelihood_nats: torch.Tensor, dims: int, bin_width: float) -> torch.Tensor:
    """Discrete data of ``dims`` dimensions dequantised uniformly in bins of ``bin_width`` (in the encoded
    coordinates): ``-log2 P(k) <= -log2 p(y) - dims log2(bin_width)``, so the bound in bits per dimension is
    ``(-log p(y) / dims - log(bin_width)) / ln 2``."""
    return (-log_likelihood_nats / dims - math.log(bin_width)) / math.log(2.0)


__all__ = ["LikelihoodError", "bits_per_dim", "log_likelihood"]
