"""The contract every process family keeps: :class:`FieldProcess`.

A *family* is a kind of forward process on one field (Gaussian, categorical, or one a plugin adds).
It says, with its own methods, everything the engine needs to train and sample it:

- the forward process: ``t_min``, ``t_max``, ``sample_t`` (training times), ``diffuse`` (draw ``x_t ~ q(x_t | x_0)``),
  ``prior`` (draw ``x_T``);
- how a backbone sees and answers: ``backbone_input`` (what the backbone reads for ``x_t``), ``output_shape``,
  ``read`` (the backbone's raw output as a prediction, in the coordinates where classifier-free guidance is
  linear), ``guide`` (that combination), ``prediction`` (what the reverse step consumes);
- training: ``loss`` (per-example loss of one field);
- sampling: ``step`` (the family's own reverse step ``x_s ~ p(x_s | x_t)``), used for every field whose family
  a sampler's update does not handle (a sampler declares the families it updates);
- ``name`` and ``config()`` (``factory(field, **config())`` rebuilds the process).

The :class:`diffkit.denoiser.Denoiser`, :func:`diffkit.losses.diffusion_loss` and the sampler driver call
only these methods, so a plugin adds a family by subclassing :class:`FieldProcess` and registering a factory
under the ``diffkit.processes`` entry point; no string names a family anywhere.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class FieldProcess(ABC):
    """Base class of every process family (docs/contracts.md, "Process family")."""

    name: str = "process"
    t_min: float = 1e-3
    t_max: float = 1.0
    parameterizations: tuple[str, ...] = ()
    """The ways a backbone's output may be read (the first is the default); empty when there is one way."""

    # --- the forward process ---------------------------------------------------------------
    def sample_t(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training times (float64, n): uniform on ``[t_min, t_max]`` unless a family says otherwise."""
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return self.t_min + (self.t_max - self.t_min) * u

    @abstractmethod
    def diffuse(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x_t, noise)``: a draw of ``x_t ~ q(x_t | x_0)`` at times ``t`` (B) and the noise the loss needs
        (``None`` when the family's loss needs none)."""

    @abstractmethod
    def prior(self, like: torch.Tensor, generator: torch.Generator | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """A draw of ``x_T`` for a field shaped like ``like`` (the space's template)."""

    # --- the backbone's view -----------------------------------------------------------------
    def backbone_input(self, x_t: torch.Tensor, t: torch.Tensor, *, parameterization: str | None = None, sigma_data: float = 0.5) -> torch.Tensor:
        """What the backbone reads for ``x_t`` (default: ``x_t`` itself)."""
        return x_t

    def output_shape(self, like: torch.Size) -> tuple[int, ...]:
        """The shape of the backbone's output for a field shaped ``like`` (default: the same)."""
        return tuple(like)

    @abstractmethod
    def read(self, raw: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, *, parameterization: str | None = None,
             mask: torch.Tensor | None = None, t_one: float | None = None, sigma_data: float = 0.5) -> torch.Tensor:
        """The backbone's raw output as a prediction, in the coordinates :meth:`guide` combines linearly.
        ``t`` holds one time per example (float64, B); ``t_one`` is their common value when they share one."""

    def guide(self, conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
        """Classifier-free guidance (Ho & Salimans 2022): ``u + w (c - u)`` in the coordinates of :meth:`read`."""
        return unconditional + scale * (conditional - unconditional)

    def prediction(self, read: torch.Tensor) -> torch.Tensor:
        """What :meth:`step` and the samplers consume, from (guided) :meth:`read` output (default: unchanged)."""
        return read

    # --- training ------------------------------------------------------------------------------
    @abstractmethod
    def loss(self, raw: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor | None, t: torch.Tensor,
             mask: torch.Tensor | None = None, **options) -> torch.Tensor:
        """The per-example (B) training loss of one field for the backbone's ``raw`` output. ``options`` are
        the trainer's (``parameterization``, ``sigma_data``, ``weighting``, ``gamma``, ``vlb_weight``,
        ``vlb_steps``); a family reads those it knows and ignores the rest."""

    # --- sampling ---------------------------------------------------------------------------------
    @abstractmethod
    def step(self, x_t: torch.Tensor, prediction: torch.Tensor, t: float, s: float | None, generator: torch.Generator | None = None,
             mask: torch.Tensor | None = None) -> torch.Tensor:
        """The family's own reverse step from time ``t`` to ``s < t``; ``s = None`` is the last step, to clean data."""

    def config(self) -> dict:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None, feature_dims: int) -> torch.Tensor:
    """Per-example mean of ``values`` (B×...) over unmasked positions; ``mask`` covers all but the last ``feature_dims`` axes."""
    if mask is None:
        return values.reshape(values.shape[0], -1).mean(1)
    m = mask.to(values.dtype)
    for _ in range(feature_dims):
        m = m.unsqueeze(-1)
    m = m.expand_as(values)
    return (values * m).reshape(values.shape[0], -1).sum(1) / m.reshape(m.shape[0], -1).sum(1).clamp_min(1.0)


def expand_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mask`` (B×n or B×n×n) as ``x``'s dtype with trailing unit axes, to broadcast against ``x``."""
    m = mask.to(x.dtype)
    while m.dim() < x.dim():
        m = m.unsqueeze(-1)
    return m


__all__ = ["FieldProcess", "expand_mask", "masked_mean"]
