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

import math
from typing import Mapping

import torch
from torch import nn

from diffkit.processes.composite import Diffusion
from diffkit.processes.gaussian import PARAMETERIZATIONS, edm_coefficients, loss_weight, parameterization_weight, target_for, x0_from_output
from diffkit.state import State

NULL_LABEL = -1


def _one_time(t) -> float | None:
    """``t`` as a Python float when it is one time for the whole batch (a number or a 0-d tensor), else None."""
    if isinstance(t, (int, float)) or (isinstance(t, torch.Tensor) and t.dim() == 0):
        return float(t)
    return None


class Denoiser(nn.Module):
    """Wraps a backbone ``backbone(state, t, cond=None) -> {field: output}`` and a :class:`Diffusion`.

    ``denoiser(state_t, t, cond=None, guidance=None)`` returns a State holding, per diffused field, the
    prediction its family's step consumes: the estimate of ``x_0`` (Gaussian fields) or ``p(x_0 | x_t)``
    (categorical fields). Every field is read, guided and finished by its own process (the family contract,
    :class:`diffkit.processes.FieldProcess`); samplers need nothing else.

    ``parameterization``: one name for every field whose family offers a choice (``proc.parameterizations``;
    the Gaussian family's are eps, x0, v, score, edm), or ``{field: name}``; a field not named gets its family's first.
    """

    def __init__(self, backbone: nn.Module, diffusion: Diffusion, parameterization: str | Mapping[str, str] = "eps", sigma_data: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.diffusion = diffusion
        choices = {k: tuple(proc.parameterizations) for k, proc in diffusion.processes.items() if proc.parameterizations}
        if isinstance(parameterization, str):
            parameterization = {k: parameterization for k in choices}
        for name, p in parameterization.items():
            allowed = choices.get(name, PARAMETERIZATIONS)
            if p not in allowed:
                raise ValueError(f"unknown parameterisation {p!r} for field {name!r}; use one of {allowed}")
        self.parameterization = {k: parameterization.get(k, allowed[0]) for k, allowed in choices.items()}
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
        """What the backbone reads: each field's ``backbone_input`` (``x_t``, or its EDM scaling)."""
        inputs = State(state_t)
        for name, proc in self.diffusion.processes.items():
            inputs[name] = proc.backbone_input(state_t[name], t, parameterization=self.parameterization.get(name), sigma_data=self.sigma_data)
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
        """``x0`` from the backbone's output for Gaussian field ``name`` (:func:`diffkit.processes.gaussian.x0_from_output`)."""
        return x0_from_output(self.diffusion.processes[name], self.parameterization[name], raw, xt, t, coef, self.sigma_data)

    def read_outputs(self, state_t: State, t: torch.Tensor, raw: Mapping[str, torch.Tensor], t_one: float | None = None) -> State:
        """Each field's ``read`` of the backbone's outputs; ``t_one``: the batch's single time, if it has one."""
        out = State()
        for name, proc in self.diffusion.processes.items():
            out[name] = proc.read(raw[name], state_t[name], t, parameterization=self.parameterization.get(name),
                                  mask=self.diffusion.mask_for(state_t, name), t_one=t_one, sigma_data=self.sigma_data)
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
            pred = self.read_outputs(both, tt, self.raw(both, tt, labels, None if t_in is None else torch.cat([t_in, t_in])), t_one)
            c, u = pred.index(slice(0, B)), pred.index(slice(B, None))
            pred = State({k: self.diffusion.processes[k].guide(c[k], u[k], guidance) for k in pred})
        else:
            pred = self.read_outputs(state_t, t, self.raw(state_t, t, cond, t_in), t_one)
        for name, proc in self.diffusion.processes.items():
            pred[name] = proc.prediction(pred[name])
        return pred


def check_guidance_interval(interval) -> tuple[float, float] | None:
    """``interval`` as ``(t_lo, t_hi)`` finite floats with ``0 <= t_lo < t_hi``, or None for guidance at every level
    (given None or an empty sequence); a one-line error otherwise."""
    if interval is None or (isinstance(interval, (list, tuple)) and len(interval) == 0):
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_interval must be two times [t_lo, t_hi], got {interval!r}; e.g. guidance_interval = [0.1, 0.7]") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi):
        raise ValueError(f"guidance_interval [{lo:g}, {hi:g}] must satisfy 0 <= t_lo < t_hi (times of the diffusion, data at 0); e.g. [0.1, 0.7]")
    return lo, hi


def guided(denoiser: Denoiser, cond: torch.Tensor | None = None, guidance: float | None = None, interval=None):
    """The two-argument callable samplers expect: ``fn(state_t, t) -> predictions``.

    ``interval = (t_lo, t_hi)``: guidance acts only at times ``t_lo < t <= t_hi`` of the diffusion; elsewhere the
    prediction is the plainly conditional one (``w = 1``, one network evaluation instead of two). Guidance at the
    noisiest levels narrows the variety of what is drawn and near the data it adds little (Kynkäänniemi et al. 2024,
    "Applying guidance in a limited interval"). A batch of per-item times outside and inside the interval takes,
    item by item, the prediction its own time calls for."""
    bounds = check_guidance_interval(interval)

    def predict(state_t: State, t, w) -> State:
        if torch.is_grad_enabled():  # no graph: samplers never differentiate through the model
            with torch.no_grad():
                return denoiser(state_t, t, cond=cond, guidance=w)
        return denoiser(state_t, t, cond=cond, guidance=w)

    def fn(state_t: State, t) -> State:
        if bounds is None or cond is None or guidance is None or guidance == 1.0:
            return predict(state_t, t, guidance)
        lo, hi = bounds
        t_one = _one_time(t)
        if t_one is not None:
            return predict(state_t, t, guidance if lo < t_one <= hi else None)
        times = torch.as_tensor(t).reshape(-1)
        inside = (times > lo) & (times <= hi)
        if bool(inside.all()):
            return predict(state_t, t, guidance)
        if not bool(inside.any()):
            return predict(state_t, t, None)
        with_w, plain = predict(state_t, t, guidance), predict(state_t, t, None)
        return State({k: torch.where(inside.to(v.device).view(-1, *[1] * (v.dim() - 1)), v, plain[k]) for k, v in with_w.items()})

    fn.diffusion = denoiser.diffusion
    return fn


__all__ = ["Denoiser", "NULL_LABEL", "PARAMETERIZATIONS", "check_guidance_interval", "edm_coefficients", "guided", "loss_weight", "parameterization_weight", "target_for"]
