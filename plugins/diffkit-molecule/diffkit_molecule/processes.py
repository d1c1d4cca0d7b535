"""``symmetric-gaussian``: a Gaussian process whose noise is symmetric on pair fields (bond features).

For a field declared ``symmetric`` with ``pair`` layout (B×n×n×K) the noise is drawn on the strict
upper triangle and mirrored, ``eps_ij = eps_ji`` with unit variance and ``eps_ii = 0``, so ``x_t`` of a
symmetric ``x_0`` stays symmetric; :meth:`project` (applied to the denoiser's ``x_0`` estimates)
averages ``(x + xᵀ)/2`` and zeroes masked pairs. The schedule comes from ``base`` (``vp-cosine``,
``vp-linear``, ``ve`` or ``edm`` with their options). On any other field it is the plain base process.
"""
from __future__ import annotations

import torch

from diffkit.processes.gaussian import GAUSSIAN_PROCESSES, ConstrainedGaussian, GaussianProcess


class SymmetricGaussian(ConstrainedGaussian):
    """``base``'s schedule on the subspace of symmetric pair fields (``x_ij = x_ji``, zero where masked)."""

    name = "symmetric-gaussian"

    def noise(self, like: torch.Tensor, generator=None, mask=None) -> torch.Tensor:
        z = torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)
        n = like.shape[1]
        upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=like.device), diagonal=1)
        upper = upper.reshape(1, n, n, *([1] * (like.dim() - 3)))
        z = torch.where(upper, z, torch.zeros_like(z))
        z = z + z.transpose(1, 2)
        return _masked(z, mask)

    def project(self, x: torch.Tensor, mask=None) -> torch.Tensor:
        return _masked(0.5 * (x + x.transpose(1, 2)), mask)


def _masked(x: torch.Tensor, mask):
    if mask is None:
        return x
    m = mask.to(x.dtype)
    while m.dim() < x.dim():
        m = m.unsqueeze(-1)
    return x * m


def symmetric_gaussian(field=None, base: str = "vp-cosine", **options):
    """Factory: ``base`` names the schedule; other options go to it. Symmetric noise on symmetric pair fields."""
    if base not in GAUSSIAN_PROCESSES:
        raise ValueError(f"symmetric-gaussian: unknown base {base!r}; use one of {sorted(GAUSSIAN_PROCESSES)}")
    proc = GAUSSIAN_PROCESSES[base](**options)
    if field is not None and getattr(field, "symmetric", False) and getattr(field, "layout", "") == "pair":
        return SymmetricGaussian(proc)
    return proc
