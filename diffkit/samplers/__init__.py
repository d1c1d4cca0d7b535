"""Samplers for the reverse process and the time-step schedules they walk."""
from __future__ import annotations

import torch

from diffkit.samplers.core import ancestral, ddim, deis, dpmpp_2m, dpmpp_3m, euler, heun, langevin, predictor_corrector, steps_for_nfe, unipc
from diffkit.samplers.schedules import SCHEDULES, karras, make_times, uniform_log_snr, uniform_t
from diffkit.state import State

SAMPLERS = {
    "ancestral": ancestral,
    "ddim": ddim,
    "euler": euler,
    "heun": heun,
    "dpmpp-2m": dpmpp_2m,
    "dpmpp-3m": dpmpp_3m,
    "deis": deis,
    "unipc": unipc,
    "langevin": langevin,
    "pc": predictor_corrector,
}

DEFAULT_SCHEDULE = {"dpmpp-2m": "logsnr", "dpmpp-3m": "logsnr", "deis": "logsnr", "unipc": "logsnr", "euler": "karras", "heun": "karras"}
"""The schedule each sampler uses unless told otherwise; the rest walk uniformly in ``t``."""


def sample(denoiser, template: State, *, sampler="dpmpp-2m", steps: int = 20, schedule: str | None = None, generator: torch.Generator | None = None, callback=None, **options) -> State:
    """Draw the prior shaped like ``template`` and run ``sampler`` over ``steps`` levels.

    ``denoiser(state, t) -> predictions`` with a ``.diffusion`` attribute (see :func:`diffkit.denoiser.guided`).
    ``sampler`` is a name from :data:`SAMPLERS` or the registry, or a sampler function.
    """
    if isinstance(sampler, str):
        from diffkit.registry import load

        name = sampler
        fn = load("samplers", sampler)
    else:
        fn, name = sampler, getattr(sampler, "__name__", "custom")
    schedule = schedule or DEFAULT_SCHEDULE.get(name, "uniform")
    if not denoiser.diffusion.gaussian_fields:
        schedule = "uniform"
    times = make_times(denoiser.diffusion, steps, schedule)
    x_T = denoiser.diffusion.prior(template, generator)
    return fn(denoiser, x_T, times, generator=generator, callback=callback, **options)


__all__ = [
    "DEFAULT_SCHEDULE", "SAMPLERS", "SCHEDULES", "ancestral", "ddim", "deis", "dpmpp_2m", "dpmpp_3m", "euler", "heun", "karras", "langevin",
    "make_times", "predictor_corrector", "sample", "steps_for_nfe", "uniform_log_snr", "uniform_t", "unipc",
]
