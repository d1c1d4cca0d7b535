"""Categorical forward processes (D3PM, Austin et al. 2021; DiGress, Vignac et al. 2023) in continuous time.

A one-hot ``x_0`` over ``K`` classes is corrupted towards a limit distribution ``m`` over the
process's ``S`` states (``S = K``, or ``K + 1`` for the absorbing "mask" state):

    q(x_t | x_0)   = Cat(alphabar_t x_0 + (1 - alphabar_t) m),     Qbar_t = alphabar_t I + (1 - alphabar_t) 1 m^T
    q(x_t | x_s)   = Cat(beta_ts x_s + (1 - beta_ts) m),           beta_ts = alphabar_t / alphabar_s
    q(x_s | x_t, x_0) ∝ q(x_t | x_s) q(x_s | x_0)                   (Bayes' rule)

with the noise schedule ``alphabar_t`` a parameter: ``"cosine"`` (the default),
``alphabar_t = cos^2(pi/2 (t+s)/(1+s)) / cos^2(pi/2 s/(1+s))``, or ``"linear"``, ``alphabar_t = 1 - t``
(linear in ``alphabar``, the mutual-information schedule of Austin et al. for absorbing limits). The limits:
``uniform`` (``m = 1/K``), ``absorbing`` (``m = e_mask``), ``marginal`` (``m`` = the data's class frequencies).
The reverse kernel marginalises the posterior over the model's ``p(x_0 | x_t)``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from diffkit.processes.base import FieldProcess, masked_mean

ALPHABAR_SCHEDULES = ("cosine", "linear")


class CategoricalProcess(FieldProcess):
    """The categorical family: one-hot fields corrupted towards a limit distribution (module docstring).
    The backbone's output is logits over the K data classes, read as ``log p(x_0 | x_t)``."""

    name = "categorical"
    t_min = 1e-3
    t_max = 1.0

    def __init__(self, num_classes: int, limit: str | Sequence[float] = "uniform", symmetric: bool = False, s: float = 0.008, schedule: str = "cosine"):
        self.num_classes = int(num_classes)
        if self.num_classes < 2:
            raise ValueError(f"CategoricalProcess: num_classes must be >= 2, got {num_classes}")
        if schedule not in ALPHABAR_SCHEDULES:
            raise ValueError(f"CategoricalProcess: unknown noise schedule {schedule!r}; use one of {ALPHABAR_SCHEDULES}")
        self.symmetric = bool(symmetric)
        self.s = float(s)
        self.schedule = schedule
        if isinstance(limit, str):
            if limit == "uniform":
                m = torch.full((self.num_classes,), 1.0 / self.num_classes)
            elif limit == "absorbing":
                m = torch.zeros(self.num_classes + 1)
                m[-1] = 1.0
            else:
                raise ValueError(f"CategoricalProcess: unknown limit {limit!r}; use 'uniform', 'absorbing', 'marginal' with frequencies, or a probability vector")
            self.limit_name = limit
        else:
            m = torch.as_tensor(list(limit), dtype=torch.float64).float()
            if m.numel() != self.num_classes or (m < 0).any() or not math.isclose(float(m.sum()), 1.0, rel_tol=1e-4):
                raise ValueError(f"CategoricalProcess: a marginal limit must be {self.num_classes} non-negative frequencies summing to 1, got {m.tolist()}")
            m = m / m.sum()
            self.limit_name = "marginal"
        self.m = m
        self.num_states = m.numel()

    # --- schedule -------------------------------------------------------------------------
    def alphabar(self, t) -> float:
        """The fraction of the data left at time ``t``: ``alphabar_t`` of the schedule (module docstring)."""
        t = float(t)
        if self.schedule == "linear":
            return min(max(1.0 - t, 0.0), 1.0)
        c = math.cos(math.pi / 2 * (t + self.s) / (1 + self.s)) / math.cos(math.pi / 2 * self.s / (1 + self.s))
        return min(max(c * c, 0.0), 1.0)

    # --- explicit matrices (for tests and small vocabularies) ------------------------------
    def pad(self, x0: torch.Tensor) -> torch.Tensor:
        """One-hot/probabilities over the K data classes, padded with zeros to the S states."""
        if x0.shape[-1] == self.num_states:
            return x0
        return F.pad(x0, (0, self.num_states - x0.shape[-1]))

    def transition_matrix(self, t, s=None) -> torch.Tensor:
        """``Qbar_t`` (from 0 to t) or, with ``s``, ``Q_{t|s}``; rows index the earlier state."""
        beta = self.alphabar(t) if s is None else self.alphabar(t) / max(self.alphabar(s), 1e-12)
        S = self.num_states
        return beta * torch.eye(S) + (1 - beta) * self.m[None, :].expand(S, S)

    # --- forward -----------------------------------------------------------------------------
    def marginal_probs(self, x0: torch.Tensor, t) -> torch.Tensor:
        """Probabilities of ``q(x_t | x_0)`` for one-hot (or soft) ``x0`` of shape ``...×K``; ``t`` scalar or B."""
        ab = _per_example(self.alphabar, t, x0)
        return ab * self.pad(x0) + (1 - ab) * self.m.to(x0)

    def q_sample(self, x0: torch.Tensor, t, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample_onehot(self.marginal_probs(x0, t), generator)

    def prior(self, like: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One-hot draws from the limit ``m`` over the S states, for a field shaped like ``like`` (``...×K`` or ``...×S``)."""
        if like.shape[-1] != self.num_states:
            like = like.new_zeros(*like.shape[:-1], self.num_states)
        probs = self.m.to(like.dtype).expand(*like.shape[:-1], self.num_states).to(like.device)
        return self.sample_onehot(probs, generator)

    def sample_onehot(self, probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one-hot samples from ``probs`` (``...×S``); symmetric fields copy the upper triangle."""
        flat = probs.reshape(-1, probs.shape[-1]).clamp_min(0)
        idx = torch.multinomial(flat.cpu().double() + 1e-30, 1, generator=generator).reshape(probs.shape[:-1]).to(probs.device)
        if self.symmetric:
            idx = symmetrise_indices(idx)
        return F.one_hot(idx, probs.shape[-1]).to(probs.dtype)

    # --- reverse --------------------------------------------------------------------------------
    def posterior_probs(self, xt: torch.Tensor, x0: torch.Tensor, t, s) -> torch.Tensor:
        """``q(x_s | x_t, x_0)`` for one-hot ``x_t`` (…×S) and one-hot ``x_0`` (…×K), by Bayes' rule."""
        ab_s = _per_example(self.alphabar, s, xt)
        beta = _per_example(self.alphabar, t, xt) / ab_s.clamp_min(1e-12)
        m = self.m.to(xt)
        left = beta * xt + (1 - beta) * (xt * m).sum(-1, keepdim=True)  # q(x_t | x_s = j) for every j
        right = ab_s * self.pad(x0) + (1 - ab_s) * m                      # q(x_s = j | x_0)
        unnorm = left * right
        return unnorm / unnorm.sum(-1, keepdim=True).clamp_min(1e-30)

    def reverse_probs(self, xt: torch.Tensor, x0_probs: torch.Tensor, t, s) -> torch.Tensor:
        """``p(x_s | x_t) = sum_{x_0} q(x_s | x_t, x_0) p(x_0 | x_t)``, in closed form:

        ``p(x_s = j | x_t) ∝ left_j [alphabar_s w_j + (1 - alphabar_s) m_j sum_k w_k]`` with
        ``w_k = p(x_0 = k | x_t) / q(x_t | x_0 = k)``.
        """
        ab_t, ab_s = _per_example(self.alphabar, t, xt), _per_example(self.alphabar, s, xt)
        beta = ab_t / ab_s.clamp_min(1e-12)
        m = self.m.to(xt)
        m_xt = (xt * m).sum(-1, keepdim=True)
        left = beta * xt + (1 - beta) * m_xt
        z = ab_t * xt + (1 - ab_t) * m_xt                                 # q(x_t | x_0 = k) for every k
        w = self.pad(x0_probs) / z.clamp_min(1e-30)
        unnorm = left * (ab_s * w + (1 - ab_s) * m * w.sum(-1, keepdim=True))
        return unnorm / unnorm.sum(-1, keepdim=True).clamp_min(1e-30)

    def step(self, xt: torch.Tensor, x0_probs: torch.Tensor, t, s, generator=None, mask=None) -> torch.Tensor:
        """One ancestral step ``x_s ~ p(x_s | x_t)``; ``s=None`` draws ``x_0 ~ p(x_0 | x_t)`` (the last step)."""
        if s is None:
            return self.sample_onehot(x0_probs, generator)
        return self.sample_onehot(self.reverse_probs(xt, x0_probs, t, s), generator)

    # --- the family contract (diffkit.processes.FieldProcess) ----------------------------------
    def diffuse(self, x0, t, generator=None, mask=None):
        """``x_t ~ Cat(alphabar_t x_0 + (1 - alphabar_t) m)``; the loss needs no noise."""
        return self.q_sample(x0, t, generator), None

    def output_shape(self, like):
        """Logits over the K data classes (the input is one-hot over the S states)."""
        return tuple(like[:-1]) + (self.num_classes,)

    def read(self, raw, x_t, t, *, parameterization=None, mask=None, t_one=None, sigma_data=0.5):
        """``log p(x_0 | x_t)`` from logits; guidance combines log-probabilities linearly."""
        return raw.float().log_softmax(-1)

    def prediction(self, read):
        """``p(x_0 | x_t)``, what :meth:`step` consumes."""
        return read.softmax(-1)

    def loss(self, raw, x0, x_t, noise, t, mask=None, *, vlb_weight=0.0, vlb_steps=1000, **_):
        """Cross-entropy of ``p(x_0 | x_t)`` against ``x_0`` (DiGress) plus, with ``vlb_weight > 0``,
        ``vlb_weight KL(q(x_s | x_t, x_0) || p(x_s | x_t))`` at ``s = t - 1/vlb_steps`` (D3PM's hybrid loss)."""
        logits = raw.float()
        labels = x0.argmax(-1)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none").reshape(labels.shape)
        per_example = masked_mean(ce, mask, 0)
        if vlb_weight > 0:
            per_example = per_example + vlb_weight * self.posterior_kl(x_t, x0, logits.softmax(-1), t, vlb_steps, mask)
        return per_example

    def posterior_kl(self, xt, x0, x0_probs, t, steps, mask=None):
        """Per-example ``KL(q(x_s | x_t, x_0) || p(x_s | x_t))`` at ``s = t - 1/steps``, over unmasked positions."""
        s = (t - 1.0 / steps).clamp_min(0.0)
        q = self.posterior_probs(xt, x0, t, s)
        p = self.reverse_probs(xt, x0_probs, t, s)
        kl = (q * (torch.log(q.clamp_min(1e-20)) - torch.log(p.clamp_min(1e-20)))).sum(-1)
        return masked_mean(kl, mask, 0)

    def config(self) -> dict:
        limit = self.limit_name if self.limit_name != "marginal" else self.m.tolist()
        return {"num_classes": self.num_classes, "limit": limit, "symmetric": self.symmetric, "s": self.s, "schedule": self.schedule}

    def __repr__(self) -> str:
        return f"CategoricalProcess(num_classes={self.num_classes}, limit={self.limit_name!r}, symmetric={self.symmetric}, schedule={self.schedule!r})"


def _per_example(fn, t, like: torch.Tensor) -> torch.Tensor:
    """``fn(t)`` as a tensor that broadcasts against ``like`` (B×…×S): scalar t, or one t per example."""
    if isinstance(t, torch.Tensor) and t.dim() > 0:
        vals = torch.tensor([fn(float(v)) for v in t.reshape(-1)], dtype=like.dtype, device=like.device)
        return vals.reshape(-1, *([1] * (like.dim() - 1)))
    return torch.tensor(fn(float(t)), dtype=like.dtype, device=like.device)


def symmetrise_indices(idx: torch.Tensor) -> torch.Tensor:
    """Copy the strict upper triangle of ``B×n×n`` indices to the lower one; the diagonal becomes 0."""
    n = idx.shape[-1]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=idx.device), diagonal=1)
    out = torch.where(upper, idx, torch.zeros_like(idx))
    return out + out.transpose(-1, -2)


def uniform(num_classes: int, symmetric: bool = False, **kw) -> CategoricalProcess:
    return CategoricalProcess(num_classes, "uniform", symmetric, **kw)


def absorbing(num_classes: int, symmetric: bool = False, **kw) -> CategoricalProcess:
    return CategoricalProcess(num_classes, "absorbing", symmetric, **kw)


def marginal(num_classes: int, frequencies: Sequence[float] | None = None, symmetric: bool = False, **kw) -> CategoricalProcess:
    if frequencies is None:
        raise ValueError("categorical-marginal needs the data's class frequencies; recipes fill them in from the training set")
    return CategoricalProcess(num_classes, list(frequencies), symmetric, **kw)
