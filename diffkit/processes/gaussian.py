"""Gaussian forward processes in one continuous-time view.

Every Gaussian process here is ``q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)`` for ``t`` in
``[t_min, t_max]`` (clean data near ``t = 0``). Samplers need only ``alpha_t``, ``sigma_t`` and the
log signal-to-noise ratio ``lambda_t = log(alpha_t^2 / sigma_t^2)`` with its inverse, so every
sampler works with every schedule. The matching SDE ``dx = f(t) x dt + g(t) dw`` has

    f(t)   = d log(alpha_t) / dt
    g(t)^2 = d sigma_t^2 / dt - 2 f(t) sigma_t^2 = -sigma_t^2 d lambda_t / dt.
"""
from __future__ import annotations

import math

import torch

from diffkit.processes.base import FieldProcess, expand_mask, masked_mean


def _t(t, like: torch.Tensor | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.tensor(float(t), dtype=torch.float64)
    return t


def _derivative(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if not y.requires_grad:
        return torch.zeros_like(t)
    grad = torch.autograd.grad(y.sum(), t, retain_graph=True, allow_unused=True)[0]
    return torch.zeros_like(t) if grad is None else grad


def broadcast_to(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-example coefficient ``B`` (or scalar) to broadcast against ``x`` (B×...)."""
    coef = torch.as_tensor(coef, device=x.device)
    if coef.dim() == 0:
        return coef.to(x.dtype)
    return coef.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


PARAMETERIZATIONS = ("eps", "x0", "v", "score", "edm")
"""How a backbone's output for a Gaussian field may be read (see :func:`x0_from_output`)."""


class GaussianProcess(FieldProcess):
    """The Gaussian family: ``q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)``. Subclasses give ``log_alpha(t)``,
    ``log_sigma(t)`` and ``t_from_log_snr``; samplers' continuous updates act on the family through
    ``alpha``/``sigma`` (:meth:`coefficients`) alone."""

    name = "gaussian"
    t_min: float = 1e-3
    t_max: float = 1.0
    parameterizations = PARAMETERIZATIONS

    # --- the schedule -------------------------------------------------------------------
    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def t_from_log_snr(self, log_snr: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha(self, t) -> torch.Tensor:
        return self.log_alpha(_t(t)).exp()

    def sigma(self, t) -> torch.Tensor:
        return self.log_sigma(_t(t)).exp()

    def log_snr(self, t) -> torch.Tensor:
        t = _t(t)
        return 2.0 * (self.log_alpha(t) - self.log_sigma(t))

    def coefficients(self, t: float) -> tuple[float, float]:
        """``(alpha_t, sigma_t)`` as Python floats for one time; remembered per ``t``, since a process
        does not change once built (samplers ask for the same few times at every step)."""
        cache = self.__dict__.setdefault("_coefficients", {})
        found = cache.get(t)
        if found is None:
            if len(cache) >= 4096:
                cache.clear()
            tt = torch.tensor(float(t), dtype=torch.float64)
            found = cache[t] = (float(self.alpha(tt)), float(self.sigma(tt)))
        return found

    # --- the SDE view -------------------------------------------------------------------
    def sde_coefficients(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f(t), g(t)^2)`` of ``dx = f x dt + g dw``, by automatic differentiation of the schedule."""
        t = _t(t).detach().double().requires_grad_(True)
        with torch.enable_grad():
            la, ls = self.log_alpha(t), self.log_sigma(t)
            dla, dls = (_derivative(y, t) for y in (la, ls))
        f = dla.detach()
        g2 = (2.0 * torch.exp(2.0 * ls) * (dls - dla)).detach()
        return f, g2

    # --- noise ---------------------------------------------------------------------------
    def noise(self, like: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Standard normal noise shaped like ``like``, zero where ``mask`` (B×n) is 0."""
        z = torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)
        return self.project(z, mask)

    def project(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Project onto the subspace the process lives in (here: zero at masked-out positions)."""
        if mask is None:
            return x
        return x * expand_mask(mask, x)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = alpha_t x_0 + sigma_t eps``."""
        t = _t(t)
        return broadcast_to(self.alpha(t), x0) * x0 + broadcast_to(self.sigma(t), x0) * noise

    def prior(self, like: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x_T ~ N(0, sigma_T^2 I)``: the limit of ``q(x_T | x_0)`` when ``alpha_T -> 0`` (VP) or ``sigma_T >> |x_0|`` (VE)."""
        return float(self.sigma(self.t_max)) * self.noise(like, generator, mask)

    def posterior(self, xt: torch.Tensor, x0: torch.Tensor, t, s) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of ``q(x_s | x_t, x_0)`` for ``s < t`` (the reverse-diffusion kernel).

        With ``alpha_{t|s} = alpha_t / alpha_s`` and ``sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2``:
        ``mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x_0``,
        ``var = sigma_{t|s}^2 sigma_s^2 / sigma_t^2``.
        """
        a_t, s_t, a_s, s_s = (float(v) for v in (self.alpha(t), self.sigma(t), self.alpha(s), self.sigma(s)))
        return gaussian_posterior(xt, x0, a_t, s_t, a_s, s_s)

    # --- the family contract (diffkit.processes.FieldProcess) ----------------------------------
    def diffuse(self, x0, t, generator=None, mask=None):
        """``x_t = alpha_t x_0 + sigma_t eps`` with ``eps`` standard normal (projected); returns ``(x_t, eps)``."""
        eps = self.noise(x0, generator, mask)
        return self.q_sample(x0, t, eps), eps

    def backbone_input(self, x_t, t, *, parameterization=None, sigma_data=0.5):
        """``x_t``, or under EDM preconditioning ``c_in x_t / alpha`` (Karras et al. 2022)."""
        if parameterization != "edm":
            return x_t
        a, s = coefficients_like(self, t, x_t)
        return edm_coefficients(s / a, sigma_data)[2] * x_t / a

    def read(self, raw, x_t, t, *, parameterization=None, mask=None, t_one=None, sigma_data=0.5):
        """``x0_hat`` from the backbone's output in ``parameterization`` (:func:`x0_from_output`), projected."""
        coef = None if t_one is None else self.coefficients(t_one)
        return self.project(x0_from_output(self, parameterization or "eps", raw, x_t, t, coef, sigma_data), mask)

    def loss(self, raw, x0, x_t, noise, t, mask=None, *, parameterization="eps", sigma_data=0.5, weighting="simple", gamma=5.0, **_):
        """``w(t) mean ||F - target||^2`` over unmasked positions, ``target`` per :func:`target_for` and ``w`` per
        :func:`loss_weight`; the score parameterisation regresses ``sigma F`` on ``-eps`` (NCSN's ``lambda = sigma^2``)."""
        p = parameterization or "eps"
        a, s = coefficients_like(self, t, x0)
        target = target_for(p, x0, noise, a, s, sigma_data)
        residual = raw.float() - target
        if p == "score":
            residual = residual * s
        feature_dims = x0.dim() - (1 if mask is None else mask.dim())
        per_example = masked_mean(residual.pow(2), mask, feature_dims)
        snr_t = torch.exp(self.log_snr(t)).to(per_example)
        sig = (self.sigma(t) / self.alpha(t)).to(per_example)
        return per_example * loss_weight(weighting, p, snr_t, sig, sigma_data, gamma)

    def step(self, x_t, prediction, t, s, generator=None, mask=None):
        """The reverse-diffusion kernel ``x_s ~ q(x_s | x_t, x_0 = x0_hat)`` (:meth:`posterior`); ``s = None``
        lands on ``x0_hat``."""
        if s is None:
            return prediction
        (a_t, s_t), (a_s, s_s) = self.coefficients(t), self.coefficients(s)
        mean, var = gaussian_posterior(x_t, prediction, a_t, s_t, a_s, s_s)
        return mean + math.sqrt(var) * self.noise(x_t, generator, mask)


def gaussian_posterior(xt, x0, a_t: float, s_t: float, a_s: float, s_s: float):
    a_ts = a_t / a_s
    var_ts = max(s_t**2 - a_ts**2 * s_s**2, 0.0)
    mean = (a_ts * s_s**2 / s_t**2) * xt + (a_s * var_ts / s_t**2) * x0
    return mean, var_ts * s_s**2 / s_t**2


# --- the score and the reverse-time equations (Song et al. 2021) -------------------------------------------
def score_from_x0(x: torch.Tensor, x0: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """Tweedie's formula read backwards: ``grad log p_t(x) = -(x - alpha_t x0_hat) / sigma_t^2``."""
    return -(x - alpha * x0) / sigma**2


def reverse_sde_drift(x: torch.Tensor, score: torch.Tensor, f: float, g2: float) -> torch.Tensor:
    """The drift of the reverse-time SDE ``dx = [f x - g^2 score] dt + g dw_bar`` (``dt < 0``)."""
    return f * x - g2 * score


def probability_flow_drift(x: torch.Tensor, x0: torch.Tensor, alpha: float, sigma: float, f: float, g2: float) -> torch.Tensor:
    """The probability-flow ODE ``dx/dt = f x - g^2/2 score``, with the score of :func:`score_from_x0` written out:
    ``(f + g^2 / (2 sigma^2)) x - g^2 alpha / (2 sigma^2) x0_hat``."""
    return (f + 0.5 * g2 / sigma**2) * x - 0.5 * g2 * alpha / sigma**2 * x0


# --- parameterisations: what a backbone's output means for a Gaussian field ----------------------------------
def coefficients_like(proc: GaussianProcess, t: torch.Tensor, like: torch.Tensor):
    """``(alpha_t, sigma_t)`` for times ``t`` (B) as ``like``'s dtype, shaped to broadcast against ``like``."""
    a = proc.alpha(t.double()).to(like.dtype)
    s = proc.sigma(t.double()).to(like.dtype)
    return broadcast_to(a, like), broadcast_to(s, like)


def edm_coefficients(sigma_ve, sigma_data: float):
    """``c_skip, c_out, c_in`` for a tensor of noise levels or a single float."""
    s2, sd2 = sigma_ve**2, sigma_data**2
    root = (s2 + sd2) ** 0.5
    c_skip = sd2 / (s2 + sd2)
    c_out = sigma_ve * sigma_data / root
    c_in = 1.0 / root
    return c_skip, c_out, c_in


def x0_from_output(proc: GaussianProcess, p: str, raw: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, coef: tuple[float, float] | None = None,
                   sigma_data: float = 0.5) -> torch.Tensor:
    """``x0`` from a backbone output ``F`` in parameterisation ``p`` for ``x_t = alpha x_0 + sigma eps``:
    eps ``(x_t - sigma F)/alpha``; x0 ``F``; v ``(alpha x_t - sigma F)/(alpha^2 + sigma^2)``; score
    ``(x_t + sigma^2 F)/alpha``; edm ``c_skip x_t/alpha + c_out F``. ``coef = (alpha, sigma)`` as floats when the
    batch shares one time."""
    a, s = coefficients_like(proc, t, xt) if coef is None else coef
    if p == "eps":
        if coef is not None:  # one fused pass: (x_t - s F) / a
            return torch.add(xt, raw, alpha=-s).mul_(1.0 / a)
        return (xt - s * raw) / a
    if p == "x0":
        return raw
    if p == "v":
        return (a * xt - s * raw) / (a * a + s * s)
    if p == "score":
        return (xt + s * s * raw) / a
    c_skip, c_out, _ = edm_coefficients(s / a, sigma_data)
    return c_skip * xt / a + c_out * raw


def parameterization_weight(p: str, snr_t: torch.Tensor, sigma_ve: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """The weight on ``||x0_hat - x0||^2`` implied by plain MSE in parameterisation ``p``."""
    if p in ("eps", "score"):  # score loss carries the customary sigma^2 (NCSN's lambda(sigma) = sigma^2)
        return snr_t
    if p == "x0":
        return torch.ones_like(snr_t)
    if p == "v":
        return snr_t + 1.0
    c_out = sigma_ve * sigma_data / torch.sqrt(sigma_ve**2 + sigma_data**2)
    return 1.0 / c_out**2


def loss_weight(weighting: str, p: str, snr_t: torch.Tensor, sigma_ve: torch.Tensor, sigma_data: float, gamma: float = 5.0) -> torch.Tensor:
    """Factor multiplying the plain MSE in parameterisation ``p`` so that the x0-space weight becomes

    ``simple``: the parameterisation's own (factor 1); ``snr``: ``SNR(t)`` (the eps loss);
    ``min-snr``: ``min(SNR(t), gamma)`` (Hang et al. 2023).
    """
    if weighting == "simple":
        return torch.ones_like(snr_t)
    own = parameterization_weight(p, snr_t, sigma_ve, sigma_data)
    if weighting == "snr":
        return snr_t / own
    if weighting in ("min-snr", "min-snr-gamma"):
        return torch.clamp(snr_t, max=gamma) / own
    raise ValueError(f"unknown loss weighting {weighting!r}; use 'simple', 'snr' or 'min-snr'")


def target_for(p: str, x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, s: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """The regression target of parameterisation ``p`` for ``x_t = a x0 + s eps``."""
    if p == "eps":
        return eps
    if p == "x0":
        return x0
    if p == "v":
        return a * eps - s * x0
    if p == "score":
        return -eps / s
    sig = s / a
    c_skip, c_out, _ = edm_coefficients(sig, sigma_data)
    xt_ve = x0 + sig * eps
    return (x0 - c_skip * xt_ve) / c_out


class VPLinear(GaussianProcess):
    """Variance preserving, linear beta (DDPM; Song et al. 2021): ``beta(t) = b_min + t (b_max - b_min)``,

    ``log alpha_t = -b_min t / 2 - (b_max - b_min) t^2 / 4``, ``sigma_t^2 = 1 - alpha_t^2``.
    ``b_min=0.1, b_max=20`` is the continuous limit of DDPM's 1000 steps from 1e-4 to 0.02.
    """

    name = "vp-linear"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3):
        self.beta_min, self.beta_max, self.t_min = float(beta_min), float(beta_max), float(t_min)

    def log_alpha(self, t):
        return -0.5 * self.beta_min * t - 0.25 * (self.beta_max - self.beta_min) * t**2

    def log_sigma(self, t):
        return 0.5 * torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def t_from_log_snr(self, log_snr):
        log_alpha = -0.5 * torch.nn.functional.softplus(-_t(log_snr))  # alpha^2 = sigmoid(lambda)
        a, b = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min
        return (-b + torch.sqrt(b * b - 4.0 * a * log_alpha)) / (2.0 * a)

    def config(self):
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "t_min": self.t_min}


class VPCosine(GaussianProcess):
    """Variance preserving, cosine schedule (Nichol & Dhariwal 2021):

    ``alpha_t^2 = cos^2(pi/2 (t+s)/(1+s)) / cos^2(pi/2 s/(1+s))``, ``sigma_t^2 = 1 - alpha_t^2``;
    ``t_max < 1`` keeps ``alpha_T`` above zero (the role of the paper's clip on beta).

    ``log_snr_shift`` (default 0) moves the whole schedule in log-SNR, ``lambda_t = lambda_cos(t) + shift``,
    with ``alpha_t^2 = sigmoid(lambda_t)`` (Hoogeboom et al. 2023 shift it down for large images). Data of
    scale ``d`` sees the SNR that data of scale 1 sees under a shift of ``2 log d``; so a positive shift of
    ``2 log(0.5 / d)`` gives quiet data (audio at d = 0.1, say) the training levels a scale of 0.5 would
    have under the plain schedule, instead of spending most of them where the signal is invisible.
    """

    name = "vp-cosine"

    def __init__(self, s: float = 0.008, t_min: float = 1e-3, t_max: float = 0.9946, log_snr_shift: float = 0.0):
        self.s, self.t_min, self.t_max, self.shift = float(s), float(t_min), float(t_max), float(log_snr_shift)
        self._log_c0 = math.log(math.cos(math.pi / 2 * self.s / (1 + self.s)))

    def _log_alpha_plain(self, t):
        return torch.log(torch.cos(math.pi / 2 * (t + self.s) / (1 + self.s)).clamp_min(1e-12)) - self._log_c0

    def _log_snr_plain(self, t):
        la = self._log_alpha_plain(t)
        return 2.0 * la - torch.log(-torch.expm1(2.0 * la))

    def log_alpha(self, t):
        if self.shift == 0.0:
            return self._log_alpha_plain(t)
        return -0.5 * torch.nn.functional.softplus(-(self._log_snr_plain(t) + self.shift))

    def log_sigma(self, t):
        if self.shift == 0.0:
            return 0.5 * torch.log(-torch.expm1(2.0 * self.log_alpha(t)))
        return -0.5 * torch.nn.functional.softplus(self._log_snr_plain(t) + self.shift)

    def t_from_log_snr(self, log_snr):
        log_alpha = -0.5 * torch.nn.functional.softplus(-(_t(log_snr) - self.shift))
        c = torch.exp(log_alpha + self._log_c0).clamp(-1.0, 1.0)
        return torch.arccos(c) * 2 / math.pi * (1 + self.s) - self.s

    def config(self):
        return {"s": self.s, "t_min": self.t_min, "t_max": self.t_max, "log_snr_shift": self.shift}


class VE(GaussianProcess):
    """Variance exploding (NCSN; Song & Ermon 2019): ``alpha_t = 1``,
    ``sigma_t = sigma_min (sigma_max / sigma_min)^t``, a geometric sequence of noise levels."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 0.0):
        self.sigma_min, self.sigma_max, self.t_min = float(sigma_min), float(sigma_max), float(t_min)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def log_alpha(self, t):
        return torch.zeros_like(_t(t))

    def log_sigma(self, t):
        return math.log(self.sigma_min) + t * self._log_ratio

    def t_from_log_snr(self, log_snr):
        return (-0.5 * _t(log_snr) - math.log(self.sigma_min)) / self._log_ratio

    def config(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "t_min": self.t_min}


class EDM(GaussianProcess):
    """The EDM process (Karras et al. 2022): ``alpha_t = 1`` and time warped so that uniform ``t`` is
    the rho-schedule, ``sigma_t = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho``.

    Training draws ``ln sigma ~ N(p_mean, p_std^2)`` (clamped to ``[sigma_min, sigma_max]``);
    ``sigma_data`` is the data scale used by EDM preconditioning.
    """

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5):
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self.p_mean, self.p_std, self.sigma_data = float(p_mean), float(p_std), float(sigma_data)
        self.t_min, self.t_max = 0.0, 1.0
        self._a, self._b = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)

    def log_alpha(self, t):
        return torch.zeros_like(_t(t))

    def log_sigma(self, t):
        return self.rho * torch.log(self._a + t * (self._b - self._a))

    def t_from_log_snr(self, log_snr):
        sigma = torch.exp(-0.5 * _t(log_snr))
        return (sigma ** (1 / self.rho) - self._a) / (self._b - self._a)

    def sample_t(self, n, generator=None):
        log_sigma = self.p_mean + self.p_std * torch.randn(n, generator=generator, dtype=torch.float64)
        sigma = log_sigma.exp().clamp(self.sigma_min, self.sigma_max)
        return self.t_from_log_snr(-2 * torch.log(sigma)).clamp(0.0, 1.0)

    def config(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "rho": self.rho, "p_mean": self.p_mean, "p_std": self.p_std, "sigma_data": self.sigma_data}


class ConstrainedGaussian(GaussianProcess):
    """A Gaussian process on a linear subspace: the schedule (``alpha_t``, ``sigma_t``, training times,
    ``sigma_data``) is ``base``'s; subclasses say what the subspace is by overriding :meth:`project`
    (and :meth:`noise` when a projection of white noise is not the right draw)."""

    def __init__(self, base: GaussianProcess | None = None):
        self.base = base if base is not None else VPCosine()
        self.t_min, self.t_max = self.base.t_min, self.base.t_max
        if hasattr(self.base, "sigma_data"):
            self.sigma_data = self.base.sigma_data

    def log_alpha(self, t):
        return self.base.log_alpha(t)

    def log_sigma(self, t):
        return self.base.log_sigma(t)

    def t_from_log_snr(self, log_snr):
        return self.base.t_from_log_snr(log_snr)

    def sample_t(self, n, generator=None):
        return self.base.sample_t(n, generator)

    def config(self):
        return {"base": self.base.name, **self.base.config()}


class ZeroCoMGaussian(ConstrainedGaussian):
    """A Gaussian process restricted to the zero-centre-of-mass subspace (for 3-D positions; Hoogeboom
    et al. 2022): noise and predictions are projected by ``x_i <- x_i - (1/n) sum_j x_j`` over the real
    nodes, so that ``q(x_t | x_0)`` and the prior are translation-invariant. Schedule from ``base``."""

    name = "zero-com-gaussian"

    def project(self, x, mask=None):
        if mask is None:
            return x - x.mean(dim=1, keepdim=True)
        m = expand_mask(mask, x)
        count = m.sum(dim=1, keepdim=True).clamp_min(1.0)
        centre = (x * m).sum(dim=1, keepdim=True) / count
        return (x - centre) * m


def _zero_com_from_config(base: str = "vp-cosine", **kwargs) -> ZeroCoMGaussian:
    return ZeroCoMGaussian(GAUSSIAN_PROCESSES[base](**kwargs))


GAUSSIAN_PROCESSES = {"vp-linear": VPLinear, "vp-cosine": VPCosine, "ve": VE, "edm": EDM}
