"""The exact-score oracle: Gaussian mixtures and a backbone that knows their score in closed form.

For ``x_0 ~ sum_k pi_k N(mu_k, s_k^2 I)`` and ``x_t = alpha x_0 + sigma eps`` the noisy marginal is
``p_t = sum_k pi_k N(alpha mu_k, v_k I)`` with ``v_k = alpha^2 s_k^2 + sigma^2``, so

    grad log p_t(x)  = sum_k r_k(x) (alpha mu_k - x) / v_k
    E[x_0 | x_t = x] = sum_k r_k(x) (mu_k + alpha s_k^2 / v_k (x - alpha mu_k))

with responsibilities ``r_k(x) ∝ pi_k N(x; alpha mu_k, v_k I)``. Samplers are tested against it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from diffkit.spaces.euclidean import EuclideanSpace
from diffkit.state import State


class GaussianMixture:
    """An isotropic Gaussian mixture in R^d."""

    def __init__(self, means, stds, weights=None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        K, self.dim = self.means.shape
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand(K).clone()
        w = torch.ones(K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k, None] * z).float()

    def _responsibilities(self, x, alpha, sigma):
        x = x.double()
        v = alpha**2 * self.stds**2 + sigma**2  # K (or B×K)
        a3 = alpha.reshape(-1, 1, 1) if alpha.dim() > 0 else alpha
        diff = x[:, None, :] - a3 * self.means[None]  # B×K×d
        logp = torch.log(self.weights) - 0.5 * (diff**2).sum(-1) / v - 0.5 * self.dim * torch.log(2 * math.pi * v)
        return logp.softmax(-1), diff, v

    def posterior_mean(self, x: torch.Tensor, alpha, sigma) -> torch.Tensor:
        alpha, sigma = _col(alpha, x), _col(sigma, x)
        r, diff, v = self._responsibilities(x, alpha, sigma)
        gain = (alpha * self.stds**2 / v)[..., None]
        return (r[..., None] * (self.means[None] + gain * diff)).sum(1).to(x.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r_unused, diff, v = self._responsibilities(x, torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
        logp = torch.log(self.weights) - 0.5 * (diff**2).sum(-1) / v - 0.5 * self.dim * torch.log(2 * math.pi * v)
        return torch.logsumexp(logp, -1)


def _col(value, x):
    value = torch.as_tensor(value, dtype=torch.float64)
    return value.reshape(-1, 1) if value.dim() > 0 else value


def ring(n_components: int = 8, radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """``n_components`` equal components spaced evenly on a circle in 2-D."""
    angles = torch.arange(n_components, dtype=torch.float64) * 2 * math.pi / n_components
    return GaussianMixture(torch.stack([radius * angles.cos(), radius * angles.sin()], -1), std)


def random_mixture(dim: int = 16, n_components: int = 8, spread: float = 1.5, std: float = 0.3, seed: int = 0) -> GaussianMixture:
    """A fixed random mixture in ``dim`` dimensions: means ~ N(0, spread^2/dim ... ) scaled so that
    the data has roughly unit variance, unequal weights, fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n_components, dim, generator=g, dtype=torch.float64) * spread / math.sqrt(dim) * 1.0
    weights = torch.rand(n_components, generator=g, dtype=torch.float64) + 0.5
    stds = std * (0.7 + 0.6 * torch.rand(n_components, generator=g, dtype=torch.float64))
    return GaussianMixture(means, stds, weights)


MIXTURES = {"ring8": lambda: ring(8), "ring8-tight": lambda: ring(8, 2.0, 0.1), "gmm16d": lambda: random_mixture(16), "gmm2d": lambda: random_mixture(2, 6, 2.0, 0.25, seed=1)}


def mixture(name: str) -> GaussianMixture:
    try:
        return MIXTURES[name]()
    except KeyError:
        raise ValueError(f"unknown mixture {name!r}; the built-in ones are {sorted(MIXTURES)}") from None


class AnalyticBackbone(nn.Module):
    """A backbone that returns the exact prediction of a :class:`GaussianMixture` for one field under
    a Gaussian ``process``, in the parameterisation ``parameterization`` (eps, x0, v or score)."""

    def __init__(self, mixture: GaussianMixture, process, parameterization: str = "eps", field: str = "x"):
        super().__init__()
        self.mixture, self.process, self.parameterization, self.field = mixture, process, parameterization, field
        self.dummy = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, state: State, t: torch.Tensor, cond=None) -> dict:
        x = state[self.field]
        a = self.process.alpha(t.double()).reshape(-1, 1)
        s = self.process.sigma(t.double()).reshape(-1, 1)
        x0 = self.mixture.posterior_mean(x, a, s).double()
        eps = (x.double() - a * x0) / s
        p = self.parameterization
        if p == "x0":
            out = x0
        elif p == "eps":
            out = eps
        elif p == "v":
            out = a * eps - s * x0
        elif p == "score":
            out = -eps / s
        else:
            raise ValueError(f"the analytic backbone gives eps, x0, v or score, not {p!r}")
        return {self.field: out.to(x.dtype)}


class MixtureDataset(torch.utils.data.Dataset):
    """``n`` draws of a named mixture, fixed by ``seed``; elements are vectors in R^d."""

    def __init__(self, name: str = "ring8", n: int = 20000, seed: int = 0):
        self.name = name
        self.mixture = mixture(name)
        self.space = EuclideanSpace(self.mixture.dim)
        self.data = self.mixture.sample(int(n), torch.Generator().manual_seed(int(seed)))

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i):
        return self.data[i]

    def reference(self, n: int, seed: int = 12345) -> torch.Tensor:
        """Fresh draws from the true distribution, for metrics."""
        return self.mixture.sample(int(n), torch.Generator().manual_seed(int(seed)))


def gmm_dataset(name: str = "ring8", n: int = 20000, seed: int = 0, split: str = "train") -> MixtureDataset:
    return MixtureDataset(name, n, seed if split == "train" else seed + 1)
