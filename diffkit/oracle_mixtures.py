"""Gaussian mixtures with per-dimension scales, their exact denoiser and velocity, and the coupled error.

For ``x_0 ~ sum_k pi_k N(mu_k, diag(s_k^2))`` and ``x_t = alpha x_0 + sigma eps`` the noisy marginal is
``p_t = sum_k pi_k N(alpha mu_k, diag(v_k))`` with ``v_k = alpha^2 s_k^2 + sigma^2`` (per dimension), so

    E[x_0 | x_t = x] = sum_k r_k(x) (mu_k + alpha s_k^2 / v_k (x - alpha mu_k))     (elementwise)
    grad log p_t(x)  = sum_k r_k(x) (alpha mu_k - x) / v_k

with ``r_k(x) ∝ pi_k N(x; alpha mu_k, diag(v_k))``. Under the linear (rectified-flow) path
``x_t = (1 - t) x_0 + t x_1`` with noise ``x_1 ~ N(0, I)``, i.e. ``alpha = 1 - t``, ``sigma = t``, the exact
velocity is ``u_t(x) = E[x_1 - x_0 | x_t = x] = (x - E[x_0 | x_t = x]) / t``.

The mixtures below are the hard cases for few-step samplers: narrow components (a stiff flow near
the data), anisotropic components in many dimensions (scales spread over two decades), and very
unequal weights (a rare component that a coarse step skips). :class:`diffkit.oracle.GaussianMixture`
is the isotropic special case; this module keeps the same interface (``dim``, ``sample``,
``posterior_mean``, ``score``, ``log_prob``) so benchmarks take either.
"""
from __future__ import annotations

import math

import torch


class DiagonalGaussianMixture:
    """A Gaussian mixture in R^d whose components have diagonal covariances ``diag(stds_k^2)``."""

    def __init__(self, means, stds, weights=None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.dim() != 2:
            raise ValueError(f"means must be K×d, got shape {tuple(self.means.shape)}")
        K, self.dim = self.means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.dim() < 2:  # one scale per component (or one for all): isotropic
            stds = stds.reshape(-1, 1)
        self.stds = stds.expand(K, self.dim).clone()
        if (self.stds <= 0).any():
            raise ValueError("every component scale must be > 0")
        w = torch.ones(K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.numel() != K or (w <= 0).any():
            raise ValueError(f"weights must be {K} positive numbers, got {w.tolist()}")
        self.weights = w / w.sum()

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k] * z).float()

    def _responsibilities(self, x, alpha, sigma):
        """``r`` (B×K), ``x - alpha mu_k`` (B×K×d) and ``v`` (K×d or B×K×d) for scalar or per-example (B×1) alpha, sigma."""
        x = x.double()
        a3 = alpha.reshape(-1, 1, 1) if alpha.dim() > 0 else alpha
        s3 = sigma.reshape(-1, 1, 1) if sigma.dim() > 0 else sigma
        v = a3**2 * self.stds[None] ** 2 + s3**2  # (1 or B)×K×d
        diff = x[:, None, :] - a3 * self.means[None]
        logp = torch.log(self.weights) - 0.5 * (diff**2 / v).sum(-1) - 0.5 * torch.log(2 * math.pi * v).sum(-1)
        return logp.softmax(-1), diff, v, a3

    def posterior_mean(self, x: torch.Tensor, alpha, sigma) -> torch.Tensor:
        """``E[x_0 | x_t = x]`` for ``x_t = alpha x_0 + sigma eps``."""
        r, diff, v, a3 = self._responsibilities(x, _as(alpha), _as(sigma))
        gain = a3 * self.stds[None] ** 2 / v
        return (r[..., None] * (self.means[None] + gain * diff)).sum(1).to(x.dtype)

    def score(self, x: torch.Tensor, alpha, sigma) -> torch.Tensor:
        """``grad_x log p_t(x)``."""
        r, diff, v, _ = self._responsibilities(x, _as(alpha), _as(sigma))
        return (r[..., None] * (-diff / v)).sum(1).to(x.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        one, zero = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
        _, diff, v, _ = self._responsibilities(x, one, zero)
        logp = torch.log(self.weights) - 0.5 * (diff**2 / v).sum(-1) - 0.5 * torch.log(2 * math.pi * v).sum(-1)
        return torch.logsumexp(logp, -1)


def _as(value) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float64)
    return value.reshape(-1) if value.dim() > 0 else value


def linear_path_velocity(mixture, x: torch.Tensor, t) -> torch.Tensor:
    """The exact velocity of the linear path ``x_t = (1 - t) x_0 + t x_1`` (noise at ``t = 1``):
    ``u_t(x) = (x - E[x_0 | x_t = x]) / t`` with ``E[x_0 | x_t]`` at ``alpha = 1 - t``, ``sigma = t``.
    ``t`` is a float in (0, 1] or a per-example tensor; works for any mixture with ``posterior_mean``."""
    t = torch.as_tensor(t, dtype=torch.float64)
    if (t <= 0).any() or (t > 1).any():
        raise ValueError("the linear-path velocity needs t in (0, 1]; at t = 0 the data is reached and the velocity is not defined by x alone")
    tt = t.reshape(-1, 1) if t.dim() > 0 else t
    x0 = mixture.posterior_mean(x, 1.0 - t, t).double()
    return ((x.double() - x0) / tt).to(x.dtype)


def coupled_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Root-mean-square distance per coordinate between each sample and the sample the converged flow
    gives from the same prior draw: ``sqrt(mean_i ||x_i - x_ref_i||^2 / d)``. Where sliced Wasserstein
    against fresh draws sits at its two-sample floor, this still separates samplers: it measures the
    discretisation error of the map from noise to data, not the sampling noise of the draws."""
    if x.shape != reference.shape:
        raise ValueError(f"coupled_error needs samples and reference of one shape (the same prior draws), got {tuple(x.shape)} and {tuple(reference.shape)}")
    diff = (x.double() - reference.double()).reshape(x.shape[0], -1)
    return float(diff.pow(2).mean().sqrt())


# --- the hard cases ----------------------------------------------------------------------------
def narrow_ring(n_components: int = 8, radius: float = 2.0, std: float = 0.02) -> DiagonalGaussianMixture:
    """Narrow components: ``n_components`` equal components of scale ``std`` (0.01 of the spread) on a circle in 2-D."""
    angles = torch.arange(n_components, dtype=torch.float64) * 2 * math.pi / n_components
    return DiagonalGaussianMixture(torch.stack([radius * angles.cos(), radius * angles.sin()], -1), std)


def anisotropic(dim: int = 32, n_components: int = 4, smallest: float = 0.01, largest: float = 1.0, seed: int = 0) -> DiagonalGaussianMixture:
    """Anisotropic components in ``dim`` dimensions: each component's per-dimension scales are spread
    log-uniformly over ``[smallest, largest]`` (shuffled per component), means ~ N(0, I/2)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n_components, dim, generator=g, dtype=torch.float64) / math.sqrt(2.0)
    ladder = torch.logspace(math.log10(smallest), math.log10(largest), dim, dtype=torch.float64)
    stds = torch.stack([ladder[torch.randperm(dim, generator=g)] for _ in range(n_components)])
    return DiagonalGaussianMixture(means, stds)


def unequal_weights(weights=(0.80, 0.12, 0.05, 0.02, 0.008, 0.002), radius: float = 2.0, std: float = 0.15) -> DiagonalGaussianMixture:
    """Very unequal weights (by default 80 % down to 0.2 %, a 400:1 ratio) on components spaced on a circle in 2-D."""
    k = len(weights)
    angles = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return DiagonalGaussianMixture(torch.stack([radius * angles.cos(), radius * angles.sin()], -1), std, weights)


HARD_MIXTURES = {"narrow-ring-2d": narrow_ring, "anisotropic-32d": anisotropic, "unequal-2d": unequal_weights}
"""The benchmark's hard cases by name (constructors with their default sizes)."""


class AnalyticVelocityBackbone(torch.nn.Module):
    """A backbone answering the exact velocity of a mixture under a Gaussian path (``alpha = a``, ``sigma = b``):
    ``u = a' x0 + b' (x - a x0)/b`` with ``x0 = E[x_0 | x_t = x]`` and the rates of ``path.rates``; for the
    linear path this is :func:`linear_path_velocity`. Read it with the ``velocity`` parameterisation."""

    def __init__(self, mixture, path, field: str = "x"):
        super().__init__()
        self.mixture, self.path, self.field = mixture, path, field
        self.dummy = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, state, t: torch.Tensor, cond=None) -> dict:
        x = state[self.field]
        t = t.double()
        a, b = self.path.alpha(t).reshape(-1, 1), self.path.sigma(t).reshape(-1, 1)
        da, db = (r.reshape(-1, 1) for r in self.path.rates(t))
        x0 = self.mixture.posterior_mean(x, a, b).double()
        return {self.field: (da * x0 + db * (x.double() - a * x0) / b).to(x.dtype)}
