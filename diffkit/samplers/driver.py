"""The sampler driver: one loop over the noise levels that every sampler shares.

A sampler keeps only its *update*, ``update(level, name) -> x_s[name]``, the new value of one field whose
family the sampler declares it updates. The driver owns everything else, at each level ``i``:

1. ``before(level)`` (optional): moves made before the level's prediction (Langevin and corrector steps);
2. ``pred = denoiser(x, t_i)``, one network evaluation;
3. a fresh State ``out``; ``out[name] = update(level, name)`` for the fields the sampler updates, then
   ``out[name] = process.step(x[name], pred[name], t_i, t_{i+1})`` for every other field, each with its own
   family's reverse step (``t_{i+1} = None`` at the last level: the step to clean data);
4. ``after(level, out)`` (optional): a correction that needs the whole new state (Heun's second evaluation);
5. ``callback({"i": i, "state": out, "pred": pred})``.

Gaussian fields see ``alpha_i``, ``sigma_i`` through :class:`Levels`, which appends the clean level
``(alpha, sigma) = (1, 0)``, so every sampler ends on ``x = x0_hat`` for them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from diffkit.processes.gaussian import GaussianProcess
from diffkit.state import State


class Levels:
    """The decreasing times ``t_0 > ... > t_{K-1}`` and, per Gaussian field, ``alpha_i``, ``sigma_i`` over the
    K levels plus the clean level ``(1, 0)``."""

    def __init__(self, diffusion, times):
        self.times = [float(t) for t in torch.as_tensor(times, dtype=torch.float64)]
        if any(b >= a for a, b in zip(self.times, self.times[1:])):
            raise ValueError("times must decrease strictly (from t_max towards t_min)")
        self.alpha, self.sigma = {}, {}
        for name in diffusion.fields_of(GaussianProcess):
            coefs = [diffusion.processes[name].coefficients(t) for t in self.times]  # floats, remembered per time
            self.alpha[name] = [a for a, _ in coefs] + [1.0]
            self.sigma[name] = [s for _, s in coefs] + [0.0]

    def __len__(self) -> int:
        return len(self.times)

    def lam(self, name: str, i: int) -> float:
        """``lambda_i = log(alpha_i / sigma_i)`` (infinite at the clean level)."""
        s = self.sigma[name][i]
        return math.inf if s == 0 else math.log(self.alpha[name][i] / s)


@dataclass
class Level:
    """What a sampler's update sees at level ``i``: the state ``x`` at time ``t``, the prediction ``pred``
    (None inside ``before``), the next time ``s`` (None at the last level) and the fields it updates."""

    i: int
    t: float
    s: float | None
    levels: Levels
    x: State
    pred: State | None
    denoiser: Callable
    generator: torch.Generator | None
    fields: list[str]

    @property
    def diffusion(self):
        return self.denoiser.diffusion

    @property
    def last(self) -> bool:
        return self.s is None

    def coefficients(self, name: str) -> tuple[float, float, float, float]:
        """``(alpha_t, sigma_t, alpha_s, sigma_s)`` of Gaussian field ``name`` (``(1, 0)`` at the clean level)."""
        i, lv = self.i, self.levels
        return lv.alpha[name][i], lv.sigma[name][i], lv.alpha[name][i + 1], lv.sigma[name][i + 1]

    def noise(self, name: str, x: State | None = None) -> torch.Tensor:
        """Fresh noise for field ``name`` shaped like ``x[name]`` (default: this level's state), masked and projected."""
        x = self.x if x is None else x
        return self.diffusion.processes[name].noise(x[name], self.generator, self.diffusion.mask_for(x, name))


def drive(spec, denoiser, state: State, times, update: Callable[[Level, str], torch.Tensor], *, generator: torch.Generator | None = None,
          callback: Callable | None = None, before: Callable[[Level], State] | None = None,
          after: Callable[[Level, State], State] | None = None, constraint: Callable[[State, State, float], State] | None = None) -> State:
    """Run a sampler over ``times`` from ``state`` (a draw of the prior at ``times[0]``); see the module docstring.
    ``spec`` is the sampler's declaration (:class:`diffkit.samplers.declaration.SamplerSpec`): its ``updates``
    say which fields ``update`` moves. ``constraint(x_t, x_s, t) -> x_s'`` (a space's constraint made a level's by
    :func:`level_constraint`) is applied to every level's result, after ``after``: it undoes the proposed changes
    that break its rule."""
    diffusion = denoiser.diffusion
    levels = Levels(diffusion, times)
    updated = diffusion.fields_of(spec.updates)
    others = [name for name in diffusion.processes if name not in updated]
    x = State(state)
    K = len(levels)
    for i, t in enumerate(levels.times):
        s = levels.times[i + 1] if i + 1 < K else None
        if before is not None:
            x = before(Level(i, t, s, levels, x, None, denoiser, generator, updated))
        pred = denoiser(x, t)
        level = Level(i, t, s, levels, x, pred, denoiser, generator, updated)
        out = State(x)
        for name in updated:
            out[name] = update(level, name)
        for name in others:
            out[name] = diffusion.processes[name].step(x[name], pred[name], t, s, generator, diffusion.mask_for(x, name))
        if after is not None:
            out = after(level, out)
        if constraint is not None:
            out = constraint(x, out, t)
        if callback is not None:
            callback({"i": i, "state": out, "pred": pred})
        x = out
    return x


def level_constraint(keep: Callable[[State, State], State], below: float | None = None) -> Callable[[State, State, float], State]:
    """A space's constraint ``keep(x_t, x_s)`` (:meth:`diffkit.spaces.Space.constraint`) as the driver applies it:
    on every level, or with ``below`` only on the levels that start at ``t <= below`` (late, near the data at
    ``t = 0``; earlier levels move freely, as ``dfm-euler``'s ``guidance_below`` does for its guidance)."""
    below = None if below is None else float(below)
    if below is not None and not below >= 0.0:
        raise ValueError(f"constraint_below is a time of the process (data at 0, so >= 0), got {below}")

    def constraint(x_t: State, x_s: State, t: float) -> State:
        return keep(x_t, x_s) if below is None or t <= below else x_s

    return constraint


def lin(*terms) -> torch.Tensor:
    """``sum_i c_i v_i`` for float coefficients ``c_i`` and tensors ``v_i``, one pass per term into one new
    tensor: every deterministic update is such a combination of ``x_t`` and denoiser outputs."""
    (c, v), *rest = terms
    out = v * c
    for c, v in rest:
        out.add_(v, alpha=c)
    return out


__all__ = ["Level", "Levels", "drive", "level_constraint", "lin"]
