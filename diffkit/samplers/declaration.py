"""A sampler is declared once, beside its function: :func:`sampler` attaches a :class:`SamplerSpec`.

``SAMPLERS``, ``DEFAULT_SCHEDULE``, :func:`steps_for_nfe`, the CLI's help and bench's sampler list are all
derived from the declarations of the samplers registered under the ``diffkit.samplers`` entry point, so a
plugin's sampler appears everywhere a built-in one does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from diffkit.processes.gaussian import GaussianProcess

SCHEDULE_NAMES = ("uniform", "logsnr", "karras", "uniform-trailing", "logsnr-trailing", "karras-trailing")


def first_order(steps: int, **_) -> int:
    """One network evaluation per level."""
    return int(steps)


@dataclass(frozen=True)
class SamplerSpec:
    """What the engine needs to know about a sampler.

    - ``name``: the name it is registered under;
    - ``nfe(steps, **options) -> int``: network evaluations per call over ``steps`` levels (benchmarks compare
      samplers at equal cost through it);
    - ``schedule``: the time-step schedule it walks unless told otherwise (one of ``SCHEDULE_NAMES``: ``uniform``,
      ``logsnr``, ``karras`` and their ``-trailing`` variants, chosen by measurement on the exact-score oracle);
    - ``updates``: the process families (FieldProcess subclasses) whose fields its update moves; every other
      field takes its own family's ``step`` at each level (the driver does it).
    """

    name: str
    nfe: Callable[..., int] = first_order
    schedule: str = "uniform"
    updates: tuple[type, ...] = (GaussianProcess,)

    def __post_init__(self):
        if self.schedule not in SCHEDULE_NAMES:
            raise ValueError(f"sampler {self.name!r} declares schedule {self.schedule!r}; use one of {SCHEDULE_NAMES}")
        if not isinstance(self.updates, tuple) or not all(isinstance(f, type) for f in self.updates):
            raise ValueError(f"sampler {self.name!r} declares updates={self.updates!r}; give a tuple of process families (FieldProcess subclasses)")


def sampler(name: str, *, nfe: Callable[..., int] = first_order, schedule: str = "uniform", updates: tuple[type, ...] = (GaussianProcess,)):
    """Declare a sampler function ``fn(denoiser, state, times, *, generator=None, callback=None, **options) -> State``::

        @sampler("euler", schedule="karras")
        def euler(denoiser, state, times, *, generator=None, callback=None): ...

    The function stays a plain function; the declaration is ``fn.spec`` and ``fn.nfe`` is ``fn.spec.nfe``.
    """
    spec = SamplerSpec(name, nfe, schedule, tuple(updates))

    def declare(fn: Callable) -> Callable:
        fn.spec = spec
        fn.nfe = spec.nfe
        return fn

    return declare


def spec_of(fn) -> SamplerSpec | None:
    """The declaration of sampler function ``fn``, or None if it has none."""
    spec = getattr(fn, "spec", None)
    return spec if isinstance(spec, SamplerSpec) else None


__all__ = ["SCHEDULE_NAMES", "SamplerSpec", "first_order", "sampler", "spec_of"]
