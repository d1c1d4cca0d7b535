"""Parameterisations: what a backbone's output means, and the denoiser every sampler calls.

For a Gaussian field with ``x_t = alpha x_0 + sigma eps`` the backbone output ``F`` is read as

    eps    : x0 = (x_t - sigma F) / alpha
    x0     : x0 = F
    v      : v = alpha eps - sigma x0,  x0 = (alpha x_t - sigma F) / (alpha^2 + sigma^2)
    score  : F ≈ grad log p_t(x_t) = -eps / sigma,  x0 = (x_t + sigma^2 F) / alpha
    edm    : EDM preconditioning (Karras et al. 2022) in the variance-exploding coordinates
             x~ = x_t / alpha, s = sigma / alpha:  x0 = c_skip x~ + c_out F(c_in x~, c_noise) with
             c_skip = sd^2/(s^2+sd^2), c_out = s sd / sqrt(s^2+sd^2), c_in = 1/sqrt(s^2+sd^2), c_noise = ln(s)/4.

A categorical field's output is logits over its K data classes, read as ``p(x_0 | x_t)``.

Classifier-free guidance (Ho & Salimans 2022) with scale ``w``: ``x0 = x0_u + w (x0_c - x0_u)``
(the same line as in eps, since x0 is affine in eps at fixed x_t) and, for categorical fields,
``log p = log p_u + w (log p_c - log p_u)``. Class label ``-1`` is the null (unconditional) label.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from diffkit.processes.composite import Diffusion
from diffkit.processes.gaussian import broadcast_to
from diffkit.state import State

PARAMETERIZATIONS = ("eps", "x0", "v", "score", "edm")
NULL_LABEL = -1


def _coef(proc, t: torch.Tensor, like: torch.Tensor):
    a = proc.alpha(t.double()).to(like.dtype)
    s = proc.sigma(t.double()).to(like.dtype)
    return broadcast_to(a, like), broadcast_to(s, like)


def _one_time(t) -> float | None:
    """``t`` as a Python float when it is one time for the whole batch (a number or a 0-d tensor), else None."""
    if isinstance(t, (int, float)) or (isinstance(t, torch.Tensor) and t.dim() == 0):
        return float(t)
    return None


def edm_coefficients(sigma_ve, sigma_data: float):
    """``c_skip, c_out, c_in`` for a tensor of noise levels or a single float."""
    s2, sd2 = sigma_ve**2, sigma_data**2
    root = (s2 + sd2) ** 0.5
    c_skip = sd2 / (s2 + sd2)
    c_out = sigma_ve * sigma_data / root
    c_in = 1.0 / root
    return c_skip, c_out, c_in


class Denoiser(nn.Module):
    """Wraps a backbone ``backbone(state, t, cond=None) -> {field: output}`` and a :class:`Diffusion`.

    ``denoiser(state_t, t, cond=None, guidance=None)`` returns a State holding, per diffused field,
    the estimate of ``x_0`` (Gaussian fields) or ``p(x_0 | x_t)`` (categorical fields). Samplers need
    nothing else.
    """

    def __init__(self, backbone: nn.Module, diffusion: Diffusion, parameterization: str | Mapping[str, str] = "eps", sigma_data: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.diffusion = diffusion
        if isinstance(parameterization, str):
            parameterization = {k: parameterization for k in diffusion.gaussian_fields}
        for name, p in parameterization.items():
            if p not in PARAMETERIZATIONS:
                raise ValueError(f"unknown parameterisation {p!r} for field {name!r}; use one of {PARAMETERIZATIONS}")
        self.parameterization = {k: parameterization.get(k, "eps") for k in diffusion.gaussian_fields}
        edm_procs = [diffusion.processes[k] for k, p in self.parameterization.items() if p == "edm"]
        self.sigma_data = float(getattr(edm_procs[0], "sigma_data", sigma_data)) if edm_procs else float(sigma_data)
        self.uses_edm = bool(edm_procs)

    # --- the backbone's view ---------------------------------------------------------------
    def _times_for(self, t_one: float, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``t_one`` for every example (float64, B) and the backbone's time input for it, remembered for the
        last few times: a sampler asks for each of its levels once per step, and building the tensors costs
        more than the step's arithmetic."""
        key = (t_one, batch, str(device))
        memo = self.__dict__.setdefault("_time_memo", {})
        found = memo.get(key)
        if found is None:
            if len(memo) >= 64:
                memo.clear()
            t = torch.full((batch,), t_one, dtype=torch.float64, device=device)
            found = memo[key] = (t, self.time_input(t))
        return found

    def time_input(self, t: torch.Tensor) -> torch.Tensor:
        """The scalar the backbone embeds: ``t`` itself, or ``ln(sigma/alpha)/4`` under EDM preconditioning."""
        if not self.uses_edm:
            return t.float()
        proc = self.diffusion.primary
        return (0.25 * (proc.log_sigma(t.double()) - proc.log_alpha(t.double()))).float()

    def backbone_inputs(self, state_t: State, t: torch.Tensor) -> State:
        inputs = State(state_t)
        for name, p in self.parameterization.items():
            if p == "edm":
                a, s = _coef(self.diffusion.processes[name], t, state_t[name])
                inputs[name] = edm_coefficients(s / a, self.sigma_data)[2] * state_t[name] / a
        return inputs

    def raw(self, state_t: State, t: torch.Tensor, cond: torch.Tensor | None = None, t_in: torch.Tensor | None = None) -> dict:
        """The backbone's outputs for ``x_t`` at times ``t`` (B); ``t_in``: ``time_input(t)`` when the caller has it."""
        out = self.backbone(self.backbone_inputs(state_t, t), self.time_input(t) if t_in is None else t_in, cond)
        missing = [k for k in self.diffusion.processes if k not in out]
        if missing:
            raise KeyError(f"backbone {type(self.backbone).__name__} returned no prediction for field(s) {missing}; it must return one per diffused field")
        return out

    # --- conversions ------------------------------------------------------------------------
    def x0_from_raw(self, name: str, raw: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, coef: tuple[float, float] | None = None) -> torch.Tensor:
        """``x0`` from the backbone's output; ``coef = (alpha, sigma)`` as floats when the batch shares one time."""
        proc = self.diffusion.processes[name]
        a, s = _coef(proc, t, xt) if coef is None else coef
        p = self.parameterization[name]
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
        c_skip, c_out, _ = edm_coefficients(s / a, self.sigma_data)
        return c_skip * xt / a + c_out * raw

    def predict_raw_outputs(self, state_t: State, t: torch.Tensor, raw: Mapping[str, torch.Tensor], t_one: float | None = None) -> State:
        """Predictions from the backbone's outputs; ``t_one``: the batch's single time, if it has one."""
        out = State()
        for name, proc in self.diffusion.processes.items():
            mask = self.diffusion.mask_for(state_t, name)
            if proc.kind == "gaussian":
                coef = None if t_one is None else proc.coefficients(t_one)
                out[name] = proc.project(self.x0_from_raw(name, raw[name], state_t[name], t, coef), mask)
            else:
                out[name] = raw[name].float().log_softmax(-1)
        return out

    def forward(self, state_t: State, t, cond: torch.Tensor | None = None, guidance: float | None = None) -> State:
        B = state_t.batch_size
        t_one = _one_time(t)  # samplers call with one time per batch: coefficients are then plain floats
        if t_one is not None:
            t, t_in = self._times_for(t_one, B, state_t.device)
        else:
            t, t_in = torch.as_tensor(t, dtype=torch.float64, device=state_t.device), None
        if cond is not None and guidance is not None and guidance != 1.0:
            both = State.cat([state_t, state_t])
            labels = torch.cat([cond, torch.full_like(cond, NULL_LABEL)])
            tt = torch.cat([t, t])
            pred = self.predict_raw_outputs(both, tt, self.raw(both, tt, labels, None if t_in is None else torch.cat([t_in, t_in])), t_one)
            c, u = pred.index(slice(0, B)), pred.index(slice(B, None))
            pred = State({k: u[k] + guidance * (c[k] - u[k]) for k in pred})
        else:
            pred = self.predict_raw_outputs(state_t, t, self.raw(state_t, t, cond, t_in), t_one)
        for name in self.diffusion.categorical_fields:
            pred[name] = pred[name].softmax(-1)
        return pred


def guided(denoiser: Denoiser, cond: torch.Tensor | None = None, guidance: float | None = None):
    """The two-argument callable samplers expect: ``fn(state_t, t) -> predictions``."""

    def fn(state_t: State, t) -> State:
        if torch.is_grad_enabled():  # no graph: samplers never differentiate through the model
            with torch.no_grad():
                return denoiser(state_t, t, cond=cond, guidance=guidance)
        return denoiser(state_t, t, cond=cond, guidance=guidance)

    fn.diffusion = denoiser.diffusion
    return fn


def snr(proc, t: torch.Tensor) -> torch.Tensor:
    return torch.exp(proc.log_snr(t.double()))


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

