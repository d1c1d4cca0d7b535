"""Metrics for multivariate series: errors in the autocorrelation and cross-correlation structure.

Sliced Wasserstein (the core's ``sliced-wasserstein``) compares whole series as vectors; these two
look at the temporal and cross-channel dependence the generating process is made of.
"""
from __future__ import annotations

import torch


def _stack(items) -> torch.Tensor:
    x = torch.stack([torch.as_tensor(i).double() for i in items])
    return x[:, None] if x.dim() == 2 else x  # n×C×T


def autocorrelation(x: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Mean over series of the per-series sample autocorrelation at lags 1..max_lag, per channel (C×L)."""
    xc = x - x.mean(-1, keepdim=True)
    var = (xc * xc).mean(-1).clamp_min(1e-12)
    lags = [(xc[..., k:] * xc[..., :-k]).mean(-1) / var for k in range(1, max_lag + 1)]
    return torch.stack(lags, -1).mean(0)


def cross_correlation(x: torch.Tensor) -> torch.Tensor:
    """Mean over series of the lag-0 correlation matrix between channels (C×C)."""
    xc = x - x.mean(-1, keepdim=True)
    cov = xc @ xc.transpose(1, 2) / x.shape[-1]
    sd = torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2).clamp_min(1e-12))
    return (cov / (sd[:, :, None] * sd[:, None, :])).mean(0)


def autocorrelation_error(ctx, max_lag: int = 16) -> dict:
    """``acf_error``: mean |ACF_generated - ACF_reference| over channels and lags 1..max_lag;
    ``xcorr_error``: mean |difference| of the channel correlation matrices; ``acf_error_floor``: the
    ``acf_error`` between the two halves of the reference (the noise floor at this sample size)."""
    gen, ref = _stack(ctx.generated), _stack(ctx.reference)
    max_lag = min(int(max_lag), gen.shape[-1] - 1)
    half = len(ref) // 2
    out = {
        "acf_error": float((autocorrelation(gen, max_lag) - autocorrelation(ref, max_lag)).abs().mean()),
        "xcorr_error": float((cross_correlation(gen) - cross_correlation(ref)).abs().mean()),
    }
    if half >= 2:
        out["acf_error_floor"] = float((autocorrelation(ref[:half], max_lag) - autocorrelation(ref[half:], max_lag)).abs().mean())
    return out
