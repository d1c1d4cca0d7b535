"""The State: a small mapping of named, batch-first tensors that the engine diffuses.

An image batch is ``State(x=B×C×H×W)``; audio is ``State(wave=B×C×T)``; a molecule batch is
``State(atoms=B×n×A one-hot, bonds=B×n×n×4 one-hot, mask=B×n)`` (plus ``pos=B×n×3``).
Fields named in :data:`MASK_FIELDS` travel with the state and are never noised.
"""
from __future__ import annotations

from typing import Callable

import torch

MASK_FIELDS = ("mask",)
"""Field names that carry masks: copied through noise and sampling untouched."""


class State(dict):
    """A ``dict`` of ``name -> tensor`` whose tensors share the leading batch dimension."""

    @property
    def batch_size(self) -> int:
        for value in self.values():
            return int(value.shape[0])
        raise ValueError("an empty State has no batch size; give it at least one field")

    @property
    def device(self) -> torch.device:
        for value in self.values():
            return value.device
        return torch.device("cpu")

    def replace(self, **fields: torch.Tensor) -> "State":
        """A new State with ``fields`` replaced (or added); the original is untouched."""
        new = State(self)
        new.update(fields)
        return new

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "State":
        return State({k: fn(v) for k, v in self.items()})

    def to(self, *args, **kwargs) -> "State":
        return self.map(lambda v: v.to(*args, **kwargs))

    def index(self, idx) -> "State":
        """Select examples along the batch dimension."""
        return self.map(lambda v: v[idx])

    @staticmethod
    def cat(states: list["State"]) -> "State":
        if not states:
            raise ValueError("State.cat needs at least one State")
        keys = list(states[0].keys())
        for s in states[1:]:
            if list(s.keys()) != keys:
                raise ValueError(f"cannot concatenate States with fields {keys} and {list(s.keys())}")
        return State({k: torch.cat([s[k] for s in states]) for k in keys})

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        inner = ", ".join(f"{k}={tuple(v.shape)}:{str(v.dtype).replace('torch.', '')}" for k, v in self.items())
        return f"State({inner})"


def node_mask(state: State) -> torch.Tensor | None:
    """The ``B×n`` node mask of a variable-size state, or None."""
    return state.get("mask")


def pair_mask(mask: torch.Tensor) -> torch.Tensor:
    """``B×n×n`` mask of ordered pairs (i, j) of real nodes with i != j."""
    m = mask.bool()
    pm = m[:, :, None] & m[:, None, :]
    eye = torch.eye(m.shape[1], dtype=torch.bool, device=m.device)
    return pm & ~eye


def field_mask(state: State, layout: str) -> torch.Tensor | None:
    """Mask over a field's element positions (without its trailing feature axis).

    ``layout`` is ``"dense"`` (no mask), ``"node"`` (B×n) or ``"pair"`` (B×n×n).
    """
    if layout == "dense":
        return None
    mask = node_mask(state)
    if mask is None:
        return None
    if layout == "node":
        return mask.bool()
    if layout == "pair":
        return pair_mask(mask)
    raise ValueError(f"unknown field layout {layout!r}; use 'dense', 'node' or 'pair'")
