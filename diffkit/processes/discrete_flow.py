"""Discrete flow matching (Campbell et al. 2024; Gat et al. 2024; DeFoG, Qin et al. 2025) as a process family.

The probability path mixes the data with a source distribution ``m`` (uniform, masked, or the data
marginal): ``p_t(x | x_0) = kappa_t [x = x_0] + (1 - kappa_t) m_x`` with ``kappa_t = alphabar_t`` of the
categorical schedule (``linear`` by default: ``kappa_t = 1 - t``; data at ``t = 0``, source at ``t = 1``). That is
the categorical forward process, so training is unchanged (cross-entropy on ``p(x_0 | x_t)``, the denoiser the
categorical diffusion already trains); what differs is sampling, by a continuous-time Markov chain whose
rates come from the denoiser. Measured in ``kappa`` (it grows from 0 to 1 as ``t`` falls), for ``j != x_t``:

    R(x_t -> j)  = p(x_0 = j | x_t) / (1 - kappa_t)                                   (the flow's own rate)
                 + eta [kappa_t p(x_0 = j | x_t) + (1 - kappa_t) m_j]                  (stochasticity, detailed balance)
                 + omega p(x_0 = j | x_t) / (Z_j (1 - kappa_t) m_{x_t})                (DeFoG's target guidance)

where ``Z_j`` counts the states ``p_t(. | x_0 = j)`` reaches (``|supp m|``, plus one if ``m_j = 0``) and the guidance
term is zero where ``m_{x_t} = 0``. The first term is the expectation over ``x_0 ~ p(x_0 | x_t)`` of the conditional
rate ``[j = x_0] kappa'/(1 - kappa)``; the second keeps every ``p_t(. | x_0)`` invariant (``p_i R(i -> j) = p_j R(j -> i)``
with ``R(i -> j) = eta p_t(j | x_0)``), so ``eta`` adds jumps without moving the path. An Euler step from ``t`` to ``s``
jumps to ``j`` with probability ``(kappa_s - kappa_t) R(x_t -> j)`` (scaled down where the total would pass 1); the
last step draws ``x_0 ~ p(x_0 | x_t)``. With ``eta = omega = 0`` one step maps ``p_t(. | x_0)`` to ``p_s(. | x_0)``
exactly. Classifier-free guidance combines conditional and unconditional ``log p(x_0 | x_t)`` linearly (the
family's ``guide``), so the rates follow the guided ``p(x_0 | x_t)``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from diffkit.processes.categorical import CategoricalProcess


class DiscreteFlow(CategoricalProcess):
    """A categorical field sampled by discrete flow matching; ``eta`` and ``target_guidance`` are the defaults of
    :meth:`step` (the ``dfm-euler`` sampler may override them per call)."""

    name = "discrete-flow"

    def __init__(self, num_classes: int, limit: str | Sequence[float] = "uniform", symmetric: bool = False, schedule: str = "linear",
                 eta: float = 0.0, target_guidance: float = 0.0, s: float = 0.008):
        super().__init__(num_classes, limit, symmetric, s, schedule)
        if eta < 0 or target_guidance < 0:
            raise ValueError(f"discrete flow: eta and target_guidance must be >= 0, got eta={eta}, target_guidance={target_guidance}")
        self.eta, self.target_guidance = float(eta), float(target_guidance)

    def jump_probs(self, xt: torch.Tensor, x0_probs: torch.Tensor, t: float, s: float, eta: float | None = None,
                   target_guidance: float | None = None) -> torch.Tensor:
        """``P(x_s = j | x_t)`` (…×S) of one Euler step of the chain from ``t`` to ``s < t`` (module docstring)."""
        eta = self.eta if eta is None else float(eta)
        omega = self.target_guidance if target_guidance is None else float(target_guidance)
        k_t, k_s = self.alphabar(t), self.alphabar(s)
        dk = max(k_s - k_t, 0.0)
        p1 = self.pad(x0_probs).to(xt.dtype)
        m = self.m.to(xt)
        rest = max(1.0 - k_t, 1e-12)
        rate = p1 / rest
        if eta > 0:
            rate = rate + eta * (k_t * p1 + (1.0 - k_t) * m)
        if omega > 0:
            support = float((m > 0).sum())
            z = support + (m == 0).to(xt.dtype)  # states p_t(. | x_0 = j) reaches
            m_xt = (xt * m).sum(-1, keepdim=True)
            guide = torch.where(m_xt > 0, p1 / (z * rest * m_xt.clamp_min(1e-30)), torch.zeros_like(p1))
            rate = rate + omega * guide
        jump = dk * rate * (1.0 - xt)  # off the current state only
        total = jump.sum(-1, keepdim=True)
        jump = jump / total.clamp_min(1.0)  # an Euler step cannot leave with probability above 1
        return jump + xt * (1.0 - jump.sum(-1, keepdim=True))

    def step(self, xt, x0_probs, t, s, generator=None, mask=None, *, eta: float | None = None, target_guidance: float | None = None):
        """One Euler step of the chain, ``x_s ~ jump_probs``; ``s = None`` draws ``x_0 ~ p(x_0 | x_t)``."""
        if s is None:
            return self.sample_onehot(x0_probs, generator)  # over the data classes, as the categorical family's last step
        return self.sample_onehot(self.jump_probs(xt, x0_probs, t, s, eta, target_guidance), generator)

    def config(self) -> dict:
        return {**super().config(), "eta": self.eta, "target_guidance": self.target_guidance}

    def __repr__(self) -> str:
        return f"DiscreteFlow(num_classes={self.num_classes}, limit={self.limit_name!r}, schedule={self.schedule!r}, eta={self.eta}, target_guidance={self.target_guidance})"


def discrete_flow_uniform(num_classes: int, symmetric: bool = False, **kw) -> DiscreteFlow:
    return DiscreteFlow(num_classes, "uniform", symmetric, **kw)


def discrete_flow_masked(num_classes: int, symmetric: bool = False, **kw) -> DiscreteFlow:
    return DiscreteFlow(num_classes, "absorbing", symmetric, **kw)


def discrete_flow_marginal(num_classes: int, frequencies: Sequence[float] | None = None, symmetric: bool = False, **kw) -> DiscreteFlow:
    if frequencies is None:
        raise ValueError("discrete-flow-marginal needs the data's class frequencies; recipes fill them in from the training set (frequencies = \"data\")")
    return DiscreteFlow(num_classes, list(frequencies), symmetric, **kw)


__all__ = ["DiscreteFlow", "discrete_flow_marginal", "discrete_flow_masked", "discrete_flow_uniform"]
