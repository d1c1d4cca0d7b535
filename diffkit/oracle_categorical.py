"""The categorical oracle: a mixture of products of categorical distributions whose ``p(x_0 | x_t)`` is exact.

Data are ``L`` positions with ``K`` classes each, drawn from

    p(x) = sum_c w_c prod_i pi_{c,i}(x_i),

a mixture of ``C`` product distributions: the positions are dependent through the component ``c``,
which is what a sampler that updates positions independently per step must reproduce. Under a
categorical process ``q(x_t,i = j | x_0,i = k) = abar_t [j = k] + (1 - abar_t) m_j`` (uniform, absorbing
or marginal limit ``m``; :class:`diffkit.processes.CategoricalProcess`), write
``l_i(k) = q(x_t,i | x_0,i = k)`` for the observed ``x_t``. Then, exactly,

    r_c(x_t)                 ∝ w_c prod_i sum_k pi_{c,i}(k) l_i(k)                 (the component's posterior)
    p(x_0,i = k | x_t)       = sum_c r_c(x_t) pi_{c,i}(k) l_i(k) / sum_k' pi_{c,i}(k') l_i(k').

:class:`AnalyticCategoricalBackbone` returns ``log p(x_0 | x_t)`` as logits, so a
:class:`diffkit.denoiser.Denoiser` built on it is the exact denoiser a categorical sampler needs. With
``cond = c`` it answers for component ``c`` alone (``cond = -1``, the null label, for the mixture), so
classifier-free guidance has an exact conditional and unconditional model too.
Samples are scored by total variation against the exact probability table (:func:`total_variation`),
beside the floor that ``n`` exact draws reach (:func:`total_variation_floor`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffkit.state import State


class CategoricalMixture:
    """``p(x) = sum_c w_c prod_i Cat(x_i; probs[c, i])`` over ``L`` positions of ``K`` classes; ``probs`` is C×L×K."""

    def __init__(self, probs, weights=None):
        probs = torch.as_tensor(probs, dtype=torch.float64)
        if probs.dim() == 2:
            probs = probs[None]
        if probs.dim() != 3 or probs.shape[-1] < 2:
            raise ValueError(f"probs must be C×L×K with K >= 2 classes, got shape {tuple(probs.shape)}")
        if (probs < 0).any() or not torch.allclose(probs.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-6):
            raise ValueError("every probs[c, i] must be a probability vector (non-negative, summing to 1)")
        self.probs = probs / probs.sum(-1, keepdim=True)
        self.num_components, self.length, self.num_classes = probs.shape
        w = torch.ones(self.num_components, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.numel() != self.num_components or (w <= 0).any():
            raise ValueError(f"weights must be {self.num_components} positive numbers, got {w.tolist()}")
        self.weights = w / w.sum()

    # --- data ----------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, component: int | None = None) -> torch.Tensor:
        """``n`` draws as class indices (n×L); ``component`` draws from one component only."""
        if component is None:
            c = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        else:
            c = torch.full((n,), int(component), dtype=torch.long)
        p = self.probs[c].reshape(n * self.length, self.num_classes)
        return torch.multinomial(p, 1, generator=generator).reshape(n, self.length)

    def one_hot(self, idx: torch.Tensor) -> torch.Tensor:
        return F.one_hot(idx, self.num_classes).float()

    def pmf(self, component: int | None = None) -> torch.Tensor:
        """The exact probability of every one of the ``K^L`` sequences (index order of :func:`sequence_index`)."""
        L, K = self.length, self.num_classes
        if K**L > 1_000_000:
            raise ValueError(f"the full table has K^L = {K**L} entries; use a smaller oracle (K^L <= 1e6)")
        states = all_sequences(L, K)  # K^L × L
        per_pos = self.probs[:, torch.arange(L)[None, :], states]  # C × K^L × L
        joint = per_pos.prod(-1)  # C × K^L
        if component is not None:
            return joint[int(component)]
        return (self.weights[:, None] * joint).sum(0)

    # --- the exact denoiser -----------------------------------------------------------------------
    def posterior(self, xt: torch.Tensor, process, t, component: torch.Tensor | int | None = None) -> torch.Tensor:
        """``p(x_0,i = k | x_t)`` (B×L×K, float64) for one-hot ``x_t`` (B×L×S) under ``process`` at ``t``
        (a float or one per example); ``component`` (int or B LongTensor, -1 = the mixture) conditions on one component."""
        xt = xt.double()
        B = xt.shape[0]
        K = self.num_classes
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        levels, where = torch.unique(t, return_inverse=True)  # samplers pass one time for the whole batch
        abar = torch.tensor([process.alphabar(float(v)) for v in levels], dtype=torch.float64)[where].reshape(-1, 1, 1)
        m = process.m.to(torch.float64)
        m_obs = (xt * m).sum(-1, keepdim=True)  # m_j at the observed state j = x_t,i
        lik = abar * xt[..., :K] + (1 - abar) * m_obs  # l_i(k) = q(x_t,i | x_0,i = k), B×L×K
        joint = self.probs[None] * lik[:, None]  # B×C×L×K: pi_{c,i}(k) l_i(k)
        marg = joint.sum(-1)  # B×C×L
        log_r = torch.log(self.weights)[None] + torch.log(marg.clamp_min(1e-300)).sum(-1)  # B×C
        if component is not None:
            comp = torch.as_tensor(component, dtype=torch.long).expand(B)
            chosen = comp >= 0
            if (comp >= self.num_components).any():
                raise ValueError(f"component labels must be -1 (the mixture) or in [0, {self.num_components}), got {comp.unique().tolist()}")
            onehot = F.one_hot(comp.clamp_min(0), self.num_components).bool()
            log_r = torch.where(chosen[:, None] & ~onehot, torch.full_like(log_r, -torch.inf), log_r)
        r = log_r.softmax(-1)  # B×C
        return (r[..., None, None] * joint / marg[..., None].clamp_min(1e-300)).sum(1)


class AnalyticCategoricalBackbone(nn.Module):
    """A backbone returning the exact ``log p(x_0 | x_t)`` of a :class:`CategoricalMixture` for one field under
    a categorical ``process``; ``cond`` (B labels, -1 = null) selects a component, as class labels would."""

    def __init__(self, mixture: CategoricalMixture, process, field: str = "x"):
        super().__init__()
        self.mixture, self.process, self.field = mixture, process, field
        self.dummy = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, state: State, t: torch.Tensor, cond=None) -> dict:
        xt = state[self.field]
        p = self.mixture.posterior(xt, self.process, t, cond)
        return {self.field: torch.log(p.clamp_min(1e-30)).to(xt.dtype)}


# --- scoring -----------------------------------------------------------------------------------
def all_sequences(length: int, num_classes: int) -> torch.Tensor:
    """Every sequence of ``length`` classes, K^L × L, in the order :func:`sequence_index` numbers them."""
    idx = torch.arange(num_classes**length)
    digits = [(idx // num_classes**(length - 1 - i)) % num_classes for i in range(length)]
    return torch.stack(digits, -1)


def sequence_index(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class-index sequences (n×L) or one-hot ones (n×L×K) to their row in :func:`all_sequences`."""
    if x.dim() == 3:
        x = x.argmax(-1)
    L = x.shape[-1]
    base = num_classes ** torch.arange(L - 1, -1, -1)
    return (x.long() * base).sum(-1)


def total_variation(samples: torch.Tensor, pmf: torch.Tensor, num_classes: int) -> float:
    """``TV = 1/2 sum_x |p_hat(x) - p(x)|`` between the samples' empirical distribution and the exact table."""
    counts = torch.bincount(sequence_index(samples, num_classes), minlength=pmf.numel()).double()
    return 0.5 * float((counts / counts.sum() - pmf).abs().sum())


def total_variation_floor(pmf: torch.Tensor, n: int, draws: int = 8, seed: int = 0) -> float:
    """The total variation that ``n`` exact draws reach on average (what a perfect sampler scores), over ``draws`` repeats."""
    g = torch.Generator().manual_seed(seed)
    tvs = []
    for _ in range(draws):
        idx = torch.multinomial(pmf, n, replacement=True, generator=g)
        counts = torch.bincount(idx, minlength=pmf.numel()).double()
        tvs.append(0.5 * float((counts / n - pmf).abs().sum()))
    return sum(tvs) / len(tvs)


def two_modes(length: int = 4, num_classes: int = 3, sharpness: float = 0.9) -> CategoricalMixture:
    """Two equally weighted components, one favouring class 0 at every position and the other class
    ``K - 1`` (each with probability ``sharpness``): strongly dependent positions, whose product of
    marginals is far from the joint."""
    K = num_classes
    a = torch.full((length, K), (1 - sharpness) / (K - 1), dtype=torch.float64)
    b = a.clone()
    a[:, 0] = sharpness
    b[:, -1] = sharpness
    return CategoricalMixture(torch.stack([a, b]))


def random_categorical_mixture(length: int = 3, num_classes: int = 3, num_components: int = 3, concentration: float = 0.5, seed: int = 0) -> CategoricalMixture:
    """A fixed random mixture: component tables ~ Dirichlet(concentration), unequal weights, fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    gamma = torch._standard_gamma(torch.full((num_components, length, num_classes), float(concentration), dtype=torch.float64), generator=g)
    probs = gamma / gamma.sum(-1, keepdim=True)
    weights = torch.rand(num_components, generator=g, dtype=torch.float64) + 0.5
    return CategoricalMixture(probs.clamp_min(1e-6) / probs.clamp_min(1e-6).sum(-1, keepdim=True), weights)
