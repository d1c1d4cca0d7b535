"""Time-step schedules: ``steps`` decreasing times from ``t_max`` to ``t_min`` of a diffusion.

Samplers append the clean level (``alpha = 1, sigma = 0``) themselves, so ``steps`` levels cost
``steps`` network evaluations for a first-order sampler. The named grids ``uniform``, ``logsnr`` and
``karras`` end on ``t_min``; their ``-trailing`` variants (``uniform-trailing``, ...) leave ``t_min`` out and
step from the level before it straight to the clean level (:func:`trailing`), which is what few-step
sampling wants.

Besides the named schedules a user may pass an explicit grid (:class:`Schedule`): a list of times, or of
noise levels ``sigma/alpha`` (the variance-exploding sigma that Karras et al. and Align Your Steps
publish), or of log-SNR values; from Python (``sample(..., schedule=[0.9, 0.5, 0.1])`` or
``schedule=Schedule([14.6, 2.0, 0.03], unit="sigma")``) and from the command line
(``--schedule 0.9,0.5,0.1``, ``--schedule sigma:14.6,2.0,0.03`` or ``--schedule grid.json``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

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


def trailing(spacing):
    """The grid of ``spacing`` over ``steps + 1`` levels from ``t_max`` to ``t_min``, without its last level
    ``t_min``: the step from the last level kept lands on the clean level directly. A named grid ends on
    ``t_min``, where ``x0_hat`` is almost ``x_t`` and the evaluation there buys next to nothing; the trailing
    grid spends that evaluation on a level in the middle instead, which counts at few evaluations (at 5, four
    useful levels become five). Lin et al. (2024) call this spacing "trailing"; on a process with
    ``t_min = 0``, ``uniform-trailing`` is the grid diffusers' multistep schedulers walk by default."""

    def grid(diffusion, steps: int) -> torch.Tensor:
        return spacing(diffusion, _check(steps) + 1)[:-1]

    grid.__name__ = f"{spacing.__name__}_trailing"
    grid.__doc__ = f"{spacing.__name__} over ``steps + 1`` levels without the last one (``t_min``); see :func:`trailing`."
    return grid


SCHEDULES = {"uniform": uniform_t, "logsnr": uniform_log_snr, "karras": karras,
             "uniform-trailing": trailing(uniform_t), "logsnr-trailing": trailing(uniform_log_snr), "karras-trailing": trailing(karras)}

UNITS = {"t": "times t", "sigma": "noise levels sigma/alpha", "log-snr": "log-SNR values log(alpha^2/sigma^2)"}


class Schedule:
    """An explicit grid of levels, from the noisiest to the cleanest, in one of three units:

    - ``"t"``: the diffusion's times, in ``[t_min, t_max]``, strictly decreasing;
    - ``"sigma"``: noise levels ``s = sigma_t/alpha_t`` (variance-exploding units), strictly decreasing,
      mapped to times through ``t = t(lambda)`` with ``lambda = -2 log s``;
    - ``"log-snr"``: ``lambda = log(alpha_t^2/sigma_t^2)``, strictly increasing.

    A final clean level (``t = 0``, ``sigma = 0`` or ``log-snr = inf``) may be written and is dropped:
    samplers append it themselves, so a grid of ``K`` levels costs ``K`` evaluations for a first-order
    sampler. The grid sets its own number of levels: the ``steps`` passed beside it is not used.
    ``sigma`` and ``log-snr`` need a Gaussian field to define the log-SNR.
    """

    def __init__(self, values: Sequence[float], unit: str = "t"):
        if unit not in UNITS:
            raise ValueError(f"unknown schedule unit {unit!r}; use one of {sorted(UNITS)}")
        try:
            vals = [float(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
        except (TypeError, ValueError):
            raise ValueError(f"a schedule is a list of numbers ({UNITS[unit]}), got {values!r}") from None
        clean = {"t": 0.0, "sigma": 0.0, "log-snr": math.inf}[unit]
        if len(vals) > 1 and vals[-1] == clean:
            vals = vals[:-1]  # the clean level: samplers append it
        if not vals:
            raise ValueError(f"a schedule needs at least one level besides the clean one, got {values!r}")
        if any(math.isnan(v) or math.isinf(v) for v in vals):
            raise ValueError(f"schedule values must be finite numbers, got {vals}")
        increasing = unit == "log-snr"
        if any((b <= a) if increasing else (b >= a) for a, b in zip(vals, vals[1:])):
            order = "increase" if increasing else "decrease"
            raise ValueError(f"schedule {UNITS[unit]} must {order} strictly, from the noisiest level to the cleanest; got {vals}")
        if unit == "sigma" and vals[-1] <= 0:
            raise ValueError(f"noise levels sigma must be > 0 (a final 0, the clean level, may be written and is dropped); got {vals}")
        self.values, self.unit = tuple(vals), unit

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Schedule({list(self.values)}, unit={self.unit!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Schedule) and (self.values, self.unit) == (other.values, other.unit)

    def to_json(self) -> dict:
        return {self.unit.replace("-", "_"): list(self.values)}

    @classmethod
    def from_json(cls, data) -> "Schedule":
        """A list of times, or an object with one key, ``t``, ``sigma`` or ``log_snr``, holding the list."""
        if isinstance(data, dict):
            keys = [k for k in data if k in ("t", "sigma", "log_snr", "log-snr")]
            if len(data) != 1 or not keys:
                raise ValueError(f"a schedule file holds a list of times or an object with one key, 't', 'sigma' or 'log_snr'; got keys {sorted(data)}")
            return cls(data[keys[0]], keys[0].replace("_", "-"))
        if isinstance(data, list):
            return cls(data, "t")
        raise ValueError(f"a schedule file holds a list of times or an object like {{\"sigma\": [...]}}, got {type(data).__name__}")

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        """From the command line: ``0.9,0.5,0.1`` (times), ``sigma:14.6,2.0,0.03``, ``log-snr:-8,0,6`` or a ``.json`` file."""
        text = text.strip()
        if text.endswith(".json"):
            path = Path(text)
            if not path.is_file():
                raise ValueError(f"schedule file {text!r} does not exist; give a JSON file, a named schedule ({', '.join(sorted(SCHEDULES))}) or a comma-separated list")
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"schedule file {text!r} is not valid JSON ({exc.msg} at line {exc.lineno}); write a list of times or {{\"sigma\": [...]}}") from None
            return cls.from_json(data)
        unit, _, body = text.rpartition(":")
        unit = unit or "t"
        if unit not in UNITS:
            raise ValueError(f"unknown schedule unit {unit!r} in {text!r}; write t:..., sigma:... or log-snr:... (or no prefix for times)")
        try:
            vals = [float(v) for v in body.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"cannot read schedule {text!r}: use {', '.join(sorted(SCHEDULES))}, a comma-separated list of numbers (e.g. 0.9,0.5,0.1 or sigma:14.6,2,0.03) or a .json file") from None
        return cls(vals, unit)

    def times(self, diffusion) -> torch.Tensor:
        """The grid as decreasing times of ``diffusion`` (float64); a level outside its range is an error."""
        t_min, t_max = float(diffusion.t_min), float(diffusion.t_max)
        if self.unit == "t":
            t = torch.tensor(self.values, dtype=torch.float64)
            tol = 1e-9 * max(1.0, abs(t_max))
            if float(t[0]) > t_max + tol or float(t[-1]) < t_min - tol:
                raise ValueError(f"schedule times must lie in [t_min, t_max] = [{t_min:g}, {t_max:g}], got {list(self.values)}")
            return t.clamp(t_min, t_max)
        proc = _gaussian_process(diffusion, f"{self.unit} grid")
        lam = torch.tensor(self.values, dtype=torch.float64)
        if self.unit == "sigma":
            lam = -2.0 * torch.log(lam)
        lo, hi = float(proc.log_snr(t_max)), float(proc.log_snr(t_min))
        tol = 1e-6 * max(1.0, abs(lo), abs(hi))
        if float(lam[0]) < lo - tol or float(lam[-1]) > hi + tol:
            if self.unit == "sigma":
                s_max, s_min = math.exp(-0.5 * lo), math.exp(-0.5 * hi)
                raise ValueError(f"schedule noise levels must lie in this diffusion's range [{s_min:.4g}, {s_max:.4g}] (sigma/alpha at t_min and t_max), got {list(self.values)}")
            raise ValueError(f"schedule log-SNR values must lie in this diffusion's range [{lo:.4g}, {hi:.4g}], got {list(self.values)}")
        t = proc.t_from_log_snr(lam.clamp(lo, hi)).clamp(t_min, t_max)
        if any(float(b) >= float(a) for a, b in zip(t, t[1:])):
            raise ValueError(f"schedule {list(self.values)} maps to times that do not decrease strictly ({t.tolist()}); space its levels further apart")
        return t


def as_schedule(schedule) -> "str | Schedule":
    """A named schedule stays a name; a :class:`Schedule` stays itself; a sequence of numbers becomes a time grid."""
    if schedule is None or isinstance(schedule, (str, Schedule)):
        return schedule
    if isinstance(schedule, (list, tuple, torch.Tensor)):
        return Schedule(schedule, "t")
    raise ValueError(f"a schedule is a name ({', '.join(sorted(SCHEDULES))}), a list of times or a Schedule, got {type(schedule).__name__}")


def make_times(diffusion, steps: int, schedule: "str | Schedule | Sequence[float]" = "uniform") -> torch.Tensor:
    """Decreasing times for a sampler: a named schedule over ``steps`` levels, or an explicit grid
    (:class:`Schedule` or a list of times), whose own length sets the number of levels."""
    schedule = as_schedule(schedule)
    if isinstance(schedule, Schedule):
        return schedule.times(diffusion)
    try:
        fn = SCHEDULES[schedule]
    except KeyError:
        raise ValueError(f"unknown time-step schedule {schedule!r}; use one of {sorted(SCHEDULES)}, a list of times or a Schedule") from None
    return fn(diffusion, steps)
