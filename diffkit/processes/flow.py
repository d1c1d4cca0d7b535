"""Continuous flow matching: probability paths ``x_t = a(t) x_0 + b(t) x_1`` with Gaussian noise ``x_1`` at ``t = 1``.

A path is a :class:`GaussianProcess` with ``alpha_t = a(t)``, ``sigma_t = b(t)``, so every sampler of the
continuous-time view (DDIM, Euler and Heun in VE coordinates, DPM-Solver++, DEIS, UniPC) runs on it
unchanged. What flow matching adds is the *velocity* parameterisation: the backbone regresses the
conditional velocity (Lipman et al. 2023; Liu et al. 2023; Albergo & Vanden-Eijnden 2023)

    u = a'(t) x_0 + b'(t) x_1,          loss  E || F(x_t, t) - u ||^2,

and reads back ``x0_hat = (b' x_t - b F) / (a b' - a' b)`` (eliminating ``x_1 = (x_t - a x_0)/b``), which is
the prediction every sampler consumes. Training times may be uniform, logit-normal (``t = sigmoid(m + s n)``,
Esser et al. 2024) and shifted (``t' = c t / (1 + (c - 1) t)``, which moves mass towards the noise for
high-dimensional data; ``c = 1`` leaves ``t`` unchanged).

The paths:
- ``flow-linear``: ``a = 1 - t``, ``b = t`` (conditional optimal transport / rectified flow); ``u = x_1 - x_0``.
- ``flow-cosine``: ``a = cos(pi t / 2)``, ``b = sin(pi t / 2)`` (variance preserving, ``a^2 + b^2 = 1``).
- ``flow-vp``: the VP linear-beta schedule (:class:`VPLinear`) read as a flow.
"""
from __future__ import annotations

import math

import torch

from diffkit.processes.base import masked_mean
from diffkit.processes.gaussian import PARAMETERIZATIONS, GaussianProcess, VPLinear, _t, broadcast_to

TIME_SAMPLING = ("uniform", "logit-normal")


class FlowPath(GaussianProcess):
    """A flow path: a Gaussian process with the velocity parameterisation (the default) and flow-matching
    training times. Subclasses give ``log_alpha``, ``log_sigma`` and ``t_from_log_snr`` as any Gaussian process;
    the rates ``a'(t)``, ``b'(t)`` come from automatic differentiation of the schedule unless a subclass gives them."""

    name = "flow"
    parameterizations = ("velocity",) + PARAMETERIZATIONS

    def _init_time_sampling(self, time_sampling: str, loc: float, scale: float, shift: float) -> None:
        if time_sampling not in TIME_SAMPLING:
            raise ValueError(f"unknown time_sampling {time_sampling!r}; use one of {TIME_SAMPLING}")
        if not scale > 0:
            raise ValueError(f"the logit-normal scale must be > 0, got {scale}")
        if not shift > 0:
            raise ValueError(f"the time shift must be > 0 (1 = no shift), got {shift}")
        self.time_sampling, self.loc, self.scale, self.shift = time_sampling, float(loc), float(scale), float(shift)

    # --- rates of the path ------------------------------------------------------------------
    def rates(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a'(t), b'(t))``: ``a' = a d log a / dt``, ``b' = b d log b / dt`` (float64, shaped like ``t``)."""
        t = _t(t).detach().double().requires_grad_(True)
        with torch.enable_grad():
            la, ls = self.log_alpha(t), self.log_sigma(t)
            dla = torch.autograd.grad(la.sum(), t, retain_graph=True)[0]
            dls = torch.autograd.grad(ls.sum(), t)[0]
        return (la.exp() * dla).detach(), (ls.exp() * dls).detach()

    def rate_coefficients(self, t: float) -> tuple[float, float]:
        """``(a'(t), b'(t))`` as floats for one time, remembered per ``t`` (samplers revisit the same times)."""
        cache = self.__dict__.setdefault("_rates", {})
        found = cache.get(t)
        if found is None:
            if len(cache) >= 4096:
                cache.clear()
            da, db = self.rates(torch.tensor(float(t), dtype=torch.float64))
            found = cache[t] = (float(da), float(db))
        return found

    # --- training times ------------------------------------------------------------------------
    def sample_t(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform on ``[t_min, t_max]``, or ``sigmoid(loc + scale n)`` with ``n ~ N(0, 1)``; then the shift
        ``t' = c t / (1 + (c - 1) t)``; clamped to ``[t_min, t_max]``."""
        if self.time_sampling == "uniform":
            u = torch.rand(n, generator=generator, dtype=torch.float64)
            t = self.t_min + (self.t_max - self.t_min) * u
        else:
            t = torch.sigmoid(self.loc + self.scale * torch.randn(n, generator=generator, dtype=torch.float64))
        if self.shift != 1.0:
            t = self.shift * t / (1.0 + (self.shift - 1.0) * t)
        return t.clamp(self.t_min, self.t_max)

    # --- the velocity parameterisation ---------------------------------------------------------------
    def _velocity_coefficients(self, t: torch.Tensor, like: torch.Tensor, t_one: float | None):
        if t_one is not None:
            (a, b), (da, db) = self.coefficients(t_one), self.rate_coefficients(t_one)
            return a, b, da, db
        a, b = self.alpha(t.double()), self.sigma(t.double())
        da, db = self.rates(t)
        return tuple(broadcast_to(v, like) for v in (a, b, da, db))

    def read(self, raw, x_t, t, *, parameterization=None, mask=None, t_one=None, sigma_data=0.5):
        """``x0_hat``; under ``velocity``, ``x0_hat = (b' x_t - b F)/(a b' - a' b)``."""
        p = parameterization or "velocity"
        if p != "velocity":
            return super().read(raw, x_t, t, parameterization=p, mask=mask, t_one=t_one, sigma_data=sigma_data)
        a, b, da, db = self._velocity_coefficients(t, x_t, t_one)
        det = a * db - da * b
        return self.project((db * x_t - b * raw.to(x_t.dtype)) / det, mask)

    def velocity(self, x_t: torch.Tensor, x0: torch.Tensor, t: float) -> torch.Tensor:
        """The velocity ``u = a' x0 + b' x1`` with ``x1 = (x_t - a x0)/b``: what a velocity backbone answers, from ``x0_hat``."""
        (a, b), (da, db) = self.coefficients(t), self.rate_coefficients(t)
        return (db / b) * x_t + (da - db * a / b) * x0

    def loss(self, raw, x0, x_t, noise, t, mask=None, *, parameterization="velocity", **options):
        """Flow matching: ``mean ||F - (a' x_0 + b' x_1)||^2`` over unmasked positions (the conditional velocity,
        weighting ``simple``); the other parameterisations use the Gaussian family's loss."""
        p = parameterization or "velocity"
        if p != "velocity":
            return super().loss(raw, x0, x_t, noise, t, mask, parameterization=p, **options)
        weighting = options.get("weighting", "simple")
        if weighting != "simple":
            raise ValueError(f"the velocity loss takes weighting='simple' (flow matching's plain regression), got {weighting!r}")
        da, db = self.rates(t)
        target = broadcast_to(da, x0) * x0 + broadcast_to(db, x0) * noise
        feature_dims = x0.dim() - (1 if mask is None else mask.dim())
        return masked_mean((raw.float() - target.float()).pow(2), mask, feature_dims)

    def _time_config(self) -> dict:
        return {"time_sampling": self.time_sampling, "loc": self.loc, "scale": self.scale, "shift": self.shift}


class _UnitIntervalPath(FlowPath):
    """A path defined on ``0 < t < 1`` whose ends are excluded (``alpha`` or ``sigma`` vanishes there): the
    time bounds and the training-time options, checked and recorded once for every such path."""

    label = "the path"

    def __init__(self, t_min: float = 1e-3, t_max: float = 0.999, time_sampling: str = "uniform", loc: float = 0.0, scale: float = 1.0, shift: float = 1.0):
        self.t_min, self.t_max = float(t_min), float(t_max)
        if not 0 < self.t_min < self.t_max < 1:
            raise ValueError(f"{self.label} needs 0 < t_min < t_max < 1, got t_min={t_min}, t_max={t_max}")
        self._init_time_sampling(time_sampling, loc, scale, shift)

    def config(self):
        return {"t_min": self.t_min, "t_max": self.t_max, **self._time_config()}


class LinearFlow(_UnitIntervalPath):
    """The linear path ``x_t = (1 - t) x_0 + t x_1`` (conditional OT / rectified flow): ``u = x_1 - x_0``;
    ``lambda = 2 log((1 - t)/t)``, so ``t = sigmoid(-lambda/2)``. ``t_max < 1`` keeps ``alpha`` above zero."""

    name = "flow-linear"
    label = "the linear path"

    def log_alpha(self, t):
        return torch.log1p(-_t(t))

    def log_sigma(self, t):
        return torch.log(_t(t))

    def t_from_log_snr(self, log_snr):
        return torch.sigmoid(-0.5 * _t(log_snr))

    def rates(self, t):
        t = _t(t).double()
        return -torch.ones_like(t), torch.ones_like(t)


class CosineFlow(_UnitIntervalPath):
    """The cosine path ``a = cos(pi t/2)``, ``b = sin(pi t/2)``: ``lambda = -2 log tan(pi t/2)``, ``t = (2/pi) atan(e^(-lambda/2))``."""

    name = "flow-cosine"
    label = "the cosine path"

    def log_alpha(self, t):
        return torch.log(torch.cos(0.5 * math.pi * _t(t)))

    def log_sigma(self, t):
        return torch.log(torch.sin(0.5 * math.pi * _t(t)))

    def t_from_log_snr(self, log_snr):
        return (2.0 / math.pi) * torch.atan(torch.exp(-0.5 * _t(log_snr)))

    def rates(self, t):
        t = _t(t).double()
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t), 0.5 * math.pi * torch.cos(0.5 * math.pi * t)


class VPFlow(FlowPath, VPLinear):
    """The variance-preserving linear-beta path of :class:`VPLinear` read as a flow (velocity parameterisation)."""

    name = "flow-vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3, time_sampling: str = "uniform", loc: float = 0.0,
                 scale: float = 1.0, shift: float = 1.0):
        VPLinear.__init__(self, beta_min, beta_max, t_min)
        self._init_time_sampling(time_sampling, loc, scale, shift)

    def config(self):
        return {**VPLinear.config(self), **self._time_config()}


__all__ = ["CosineFlow", "FlowPath", "LinearFlow", "TIME_SAMPLING", "VPFlow"]
