"""Samplers for the reverse process and the time-step schedules they walk.

Every sampler is declared once (:func:`sampler`: name, evaluations per call, default schedule, the process
families it updates) and registered under the ``diffkit.samplers`` entry point. ``SAMPLERS`` (name ->
function) and ``DEFAULT_SCHEDULE`` (name -> schedule) are read from the installed declarations each time
they are asked for, so plugin samplers appear in them, in the CLI and in ``diffkit bench``.
"""
from __future__ import annotations

from typing import Callable

import torch

from diffkit.samplers.core import ancestral, ddim, deis, dpmpp_2m, dpmpp_3m, euler, heun, langevin, predictor_corrector, unipc
from diffkit.samplers.declaration import SamplerSpec, first_order, sampler, spec_of
from diffkit.samplers.driver import Level, Levels, drive, level_constraint, lin
from diffkit.samplers.schedules import SCHEDULES, Schedule, as_schedule, karras, make_times, uniform_log_snr, uniform_t
from diffkit.state import State


def registered() -> dict[str, Callable]:
    """``{name: sampler function}`` for every installed sampler (entry points, and ``registry.register`` in this
    process); one that fails to import is left out (``diffkit plugins`` reports it)."""
    from diffkit.registry import RegistryError, load, names

    out = {}
    for name in names("samplers"):
        try:
            out[name] = load("samplers", name)
        except RegistryError:
            continue
    return out


def __getattr__(attr: str):
    if attr == "SAMPLERS":
        return registered()
    if attr == "DEFAULT_SCHEDULE":
        return {name: spec.schedule for name, fn in registered().items() if (spec := spec_of(fn)) is not None}
    raise AttributeError(f"module 'diffkit.samplers' has no attribute {attr!r}")


def resolve(sampler: str | Callable) -> tuple[Callable, SamplerSpec | None]:
    """The function and declaration of a sampler given by registered name or as a function."""
    if isinstance(sampler, str):
        from diffkit.registry import load

        fn = load("samplers", sampler)
    else:
        fn = sampler
    return fn, spec_of(fn)


def steps_for_nfe(sampler: str | Callable | SamplerSpec, nfe: int, **options) -> int:
    """The largest number of levels whose cost (the declared ``nfe``) does not exceed ``nfe`` evaluations (at least 1)."""
    cost = sampler.nfe if isinstance(sampler, SamplerSpec) else getattr(resolve(sampler)[0], "nfe", first_order)
    steps = 1
    while cost(steps + 1, **options) <= nfe:
        steps += 1
    return steps


def sampler_grid(diffusion, sampler: str | Callable, steps: int, schedule: "str | Schedule | list[float] | None" = None) -> tuple[Callable, torch.Tensor]:
    """The sampler function and its decreasing times: ``schedule`` when given (an explicit grid sets its own levels),
    else the sampler's declared schedule (``uniform`` for an undeclared function, and whenever the diffusion has no
    Gaussian field), over ``steps`` levels."""
    fn, spec = resolve(sampler)
    schedule = as_schedule(schedule) or (spec.schedule if spec is not None else "uniform")
    if not diffusion.gaussian_fields and isinstance(schedule, str):
        schedule = "uniform"
    return fn, make_times(diffusion, steps, schedule)


def sample(denoiser, template: State, *, sampler="dpmpp-2m", steps: int = 20, schedule: "str | Schedule | list[float] | None" = None, generator: torch.Generator | None = None, callback=None, **options) -> State:
    """Draw the prior shaped like ``template`` and run ``sampler`` over ``steps`` levels.

    ``denoiser(state, t) -> predictions`` with a ``.diffusion`` attribute (see :func:`diffkit.denoiser.guided`).
    ``sampler`` is a registered name or a sampler function; either way its declared schedule is the default
    (``uniform`` for an undeclared function, and whenever the diffusion has no Gaussian field).
    """
    fn, times = sampler_grid(denoiser.diffusion, sampler, steps, schedule)
    x_T = denoiser.diffusion.prior(template, generator)
    return fn(denoiser, x_T, times, generator=generator, callback=callback, **options)


__all__ = [
    "DEFAULT_SCHEDULE", "Level", "Levels", "SAMPLERS", "SCHEDULES", "SamplerSpec", "Schedule", "ancestral", "ddim", "deis", "dpmpp_2m", "dpmpp_3m", "drive",
    "euler", "first_order", "heun", "karras", "langevin", "level_constraint", "lin", "make_times", "predictor_corrector", "registered", "resolve", "sample", "sampler", "sampler_grid",
    "spec_of", "steps_for_nfe", "uniform_log_snr", "uniform_t", "unipc",
]
