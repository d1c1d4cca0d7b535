"""Flow solvers: the plain Euler and midpoint methods on ``dx/dt = u_t(x)`` in the path's own time.

For a Gaussian path ``x_t = a(t) x_0 + b(t) x_1`` the velocity the denoiser implies is
``u_hat = a'(t) x0_hat + b'(t) x1_hat`` with ``x1_hat = (x_t - a x0_hat)/b``. These are the solvers flow-matching
users know (torchcfm, flow_matching, diffusers' flow-matching Euler); they run on every Gaussian process
(for a diffusion they integrate its probability-flow ODE in ``t``), and the last step, to the clean level,
lands on ``x0_hat`` as every sampler here does. On the linear path Euler in ``t`` is DDIM exactly.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from diffkit.processes.discrete_flow import DiscreteFlow
from diffkit.processes.gaussian import GaussianProcess
from diffkit.samplers.declaration import sampler
from diffkit.samplers.driver import Level, drive, lin
from diffkit.state import State


def path_rates(proc: GaussianProcess, t: float) -> tuple[float, float]:
    """``(a'(t), b'(t))`` of a Gaussian process: its own ``rate_coefficients`` (flow paths), else from the SDE
    view: ``a' = a f`` and ``b' = b (f + g^2 / (2 b^2))`` with ``f = d log a/dt``, ``g^2 = 2 b^2 d(log b - log a)/dt``."""
    own = getattr(proc, "rate_coefficients", None)
    if own is not None:
        return own(t)
    cache = proc.__dict__.setdefault("_path_rates", {})
    found = cache.get(t)
    if found is None:
        a, b = proc.coefficients(t)
        f, g2 = proc.sde_coefficients(torch.tensor(float(t), dtype=torch.float64))
        f, g2 = float(f), float(g2)
        found = cache[t] = (a * f, b * (f + 0.5 * g2 / (b * b)))
    return found


def _velocity_terms(proc: GaussianProcess, t: float, x: torch.Tensor, x0: torch.Tensor) -> tuple[float, float]:
    """Coefficients ``(c_x, c_0)`` with ``u_hat = c_x x_t + c_0 x0_hat``."""
    a, b = proc.coefficients(t)
    da, db = path_rates(proc, t)
    return db / b, da - db * a / b


def _euler_update(lv: Level, name: str) -> torch.Tensor:
    if lv.last:
        return lv.pred[name]
    proc = lv.diffusion.processes[name]
    cx, c0 = _velocity_terms(proc, lv.t, lv.x[name], lv.pred[name])
    h = lv.s - lv.t
    return lin((1.0 + h * cx, lv.x[name]), (h * c0, lv.pred[name]))


@sampler("flow-euler")
def flow_euler(denoiser, state, times, *, generator=None, callback: Callable | None = None, constraint: Callable | None = None):
    """Euler in ``t``: ``x_s = x_t + (s - t) u_hat(x_t, t)``, ``u_hat = a' x0_hat + b' (x_t - a x0_hat)/b``."""
    return drive(flow_euler.spec, denoiser, state, times, _euler_update, generator=generator, callback=callback, constraint=constraint)


def _midpoint(lv: Level, out: State) -> State:
    """Redo the step from the velocity at the midpoint ``m = (t + s)/2``: ``x_s = x_t + (s - t) u_hat(x_m, m)`` with
    ``x_m = x_t + (m - t) u_hat(x_t, t)``; other families' fields stay at their values at ``t`` for that evaluation."""
    if lv.last or not lv.fields:
        return out
    m = 0.5 * (lv.t + lv.s)
    x_mid = State(lv.x)
    for name in lv.fields:  # the half step, from the update's full Euler step: x_m = (x_t + x_euler)/2
        x_mid[name] = lin((0.5, lv.x[name]), (0.5, out[name]))
    pred = lv.denoiser(x_mid, m)
    out = State(out)
    h = lv.s - lv.t
    for name in lv.fields:
        cx, c0 = _velocity_terms(lv.diffusion.processes[name], m, x_mid[name], pred[name])
        out[name] = lin((1.0, lv.x[name]), (h * cx, x_mid[name]), (h * c0, pred[name]))
    return out


@sampler("flow-midpoint", nfe=lambda steps, **_: 2 * steps - 1)
def flow_midpoint(denoiser, state, times, *, generator=None, callback: Callable | None = None, constraint: Callable | None = None):
    """The explicit midpoint method in ``t`` (second order): ``x_m = x_t + (m - t) u_hat(x_t, t)``,
    ``x_s = x_t + (s - t) u_hat(x_m, m)``, ``m = (t + s)/2``; two evaluations per step, one for the last (to ``x0_hat``)."""
    return drive(flow_midpoint.spec, denoiser, state, times, _euler_update, generator=generator, callback=callback, after=_midpoint, constraint=constraint)


DISTORTIONS = ("identity", "polydec", "polyinc", "cos")


def distort(times, diffusion, kind: str = "identity") -> torch.Tensor:
    """Time distortion of a grid (DeFoG): with ``u = (t - t_min)/(t_max - t_min)`` in [0, 1] (0 = data),
    ``polydec`` ``u^2`` (levels crowd towards the data), ``polyinc`` ``1 - (1 - u)^2`` (towards the source),
    ``cos`` ``(1 - cos(pi u))/2`` (towards both ends); ``identity`` leaves the grid. Monotone, so the grid still decreases."""
    times = torch.as_tensor(times, dtype=torch.float64)
    if kind == "identity":
        return times
    lo, hi = float(diffusion.t_min), float(diffusion.t_max)
    u = ((times - lo) / (hi - lo)).clamp(0, 1)
    if kind == "polydec":
        u = u**2
    elif kind == "polyinc":
        u = 1 - (1 - u) ** 2
    elif kind == "cos":
        u = 0.5 * (1 - torch.cos(torch.pi * u))
    else:
        raise ValueError(f"unknown time distortion {kind!r}; use one of {DISTORTIONS}")
    return lo + (hi - lo) * u


@sampler("dfm-euler", updates=(DiscreteFlow, GaussianProcess))
def dfm_euler(denoiser, state, times, *, eta: float | None = None, target_guidance: float | Mapping[str, float] | None = None, distortion: str = "identity",
              guidance_below: float | None = None, generator=None, callback: Callable | None = None, constraint: Callable | None = None):
    """Discrete flow matching's Euler sampler: every :class:`DiscreteFlow` field takes one Euler step of its
    continuous-time Markov chain (``DiscreteFlow.jump_probs``; ``eta``: stochasticity, ``target_guidance``: DeFoG's
    omega, both defaulting to the process's own), and every Gaussian field one Euler step of its flow in ``t``
    (as ``flow-euler``), all on one grid, optionally distorted (:func:`distort`). Other families take their own step.
    ``target_guidance`` may name fields, ``{"bonds": 0.5}``: those fields take their omega, the others none.
    ``guidance_below``: the target guidance acts only on steps that start at ``t <= guidance_below`` (late, near the
    data at ``t = 0``, where the last bonds are decided); earlier steps take ``omega = 0``. ``None`` guides every step."""
    times = distort(times, denoiser.diffusion, distortion)
    if isinstance(target_guidance, Mapping):
        flows = sorted(name for name, proc in denoiser.diffusion.processes.items() if isinstance(proc, DiscreteFlow))
        unknown = sorted(set(target_guidance) - set(flows))
        if unknown:
            raise ValueError(f"dfm-euler: target_guidance names {unknown}, which are not discrete-flow fields; name some of {flows}")
    if guidance_below is not None and not 0.0 <= float(guidance_below) <= 1.0:
        raise ValueError(f"dfm-euler: guidance_below is a time in [0, 1] (data at 0), got {guidance_below}")

    def update(lv: Level, name: str) -> torch.Tensor:
        proc = lv.diffusion.processes[name]
        if isinstance(proc, DiscreteFlow):
            omega = target_guidance.get(name, 0.0) if isinstance(target_guidance, Mapping) else target_guidance
            if guidance_below is not None and float(lv.t) > float(guidance_below):
                omega = 0.0
            return proc.step(lv.x[name], lv.pred[name], lv.t, lv.s, lv.generator, lv.diffusion.mask_for(lv.x, name), eta=eta, target_guidance=omega)
        return _euler_update(lv, name)

    return drive(dfm_euler.spec, denoiser, state, times, update, generator=generator, callback=callback, constraint=constraint)


__all__ = ["DISTORTIONS", "dfm_euler", "distort", "flow_euler", "flow_midpoint", "path_rates"]
