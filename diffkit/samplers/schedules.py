"""Time-step schedules: ``steps`` decreasing times from ``t_max`` to ``t_min`` of a diffusion.

Samplers append the clean level (``alpha = 1, sigma = 0``) themselves, so ``steps`` levels cost
``steps`` network evaluations for a first-order sampler.
"""
from __future__ import annotations

import torch


def _gaussian_process(diffusion, schedule: str):
    from diffkit.processes.gaussian import GaussianProcess

    proc = getattr(diffusion, "primary", diffusion)
    if not isinstance(proc, GaussianProcess):
        raise ValueError(f"the {schedule!r} schedule needs a Gaussian field to define log-SNR; this diffusion has none, use schedule='uniform'")
    return proc


def _check(steps: int) -> int:
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return steps


def uniform_t(diffusion, steps: int) -> torch.Tensor:
    """Uniform in ``t``: ``t_i = t_max + i/(steps-1) (t_min - t_max)``."""
    steps = _check(steps)
    return torch.linspace(diffusion.t_max, diffusion.t_min, steps, dtype=torch.float64)


def uniform_log_snr(diffusion, steps: int) -> torch.Tensor:
    """Uniform in log-SNR ``lambda`` (the spacing DPM-Solver recommends), mapped back through ``t(lambda)``."""
    steps = _check(steps)
    proc = _gaussian_process(diffusion, "logsnr")
    lo, hi = proc.log_snr(diffusion.t_max), proc.log_snr(diffusion.t_min)
    lam = torch.linspace(float(lo), float(hi), steps, dtype=torch.float64)
    return proc.t_from_log_snr(lam).clamp(diffusion.t_min, diffusion.t_max)


def karras(diffusion, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5 in the variance-exploding noise level ``s = sigma/alpha = exp(-lambda/2)``:
    ``s_i = (s_max^(1/rho) + i/(steps-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``."""
    steps = _check(steps)
    proc = _gaussian_process(diffusion, "karras")
    s_max = float(torch.exp(-0.5 * proc.log_snr(diffusion.t_max)))
    s_min = float(torch.exp(-0.5 * proc.log_snr(diffusion.t_min)))
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    s = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return proc.t_from_log_snr(-2 * torch.log(s)).clamp(diffusion.t_min, diffusion.t_max)


SCHEDULES = {"uniform": uniform_t, "logsnr": uniform_log_snr, "karras": karras}


def make_times(diffusion, steps: int, schedule: str = "uniform") -> torch.Tensor:
    try:
        fn = SCHEDULES[schedule]
    except KeyError:
        raise ValueError(f"unknown time-step schedule {schedule!r}; use one of {sorted(SCHEDULES)}") from None
    return fn(diffusion, steps)
