"""Constraints a sampler can keep on molecular graphs (the core's ``Space.constraint`` contract).

``valence``: no atom's bond-order sum may pass its largest neutral valence (RDKit's valence list: C 4, N 3, O 2,
F 1, S 6, P 5, ...). A sampler proposes a new graph at every level; the constraint undoes each proposed change
that would *create or worsen* a violation and keeps everything else as proposed:

- an atom ``i`` is acceptable in the proposal when ``v_i <= cap(a_i)``, or when its type is unchanged and
  ``v_i <= v_i^before`` (a violation the state already had may persist or shrink, never grow), where
  ``v_i = sum_j order(b_ij)`` over real atoms ``j != i``;
- the proposed bond-order *increases* on an unacceptable atom's pairs are reverted to their previous orders; an
  atom left unacceptable without any increase is one whose type changed to a smaller valence, and its type change
  is reverted.

Reverting only lowers bond-order sums, so no acceptable atom becomes unacceptable; two rounds settle every case
(:meth:`ValenceConstraint.__call__`). Changes that keep every valence (and all decreases) pass untouched, so a State that keeps
the rule is returned unchanged. Over a whole run the number of atoms above their valence never grows; at the
last level (the draw of the data) the rule is kept wherever the level before kept it. This is a constraint on the
sampler's moves, not a repair of finished molecules: nothing is changed after sampling, and the samples are
scored by the same strict validity as any other (a sample can still fail it, e.g. through an atom that was above
its valence from the source draw on and never lost a bond).
"""
from __future__ import annotations

from typing import Sequence

import torch

from diffkit.spaces.base import SpaceError
from diffkit.state import State

BOND_ORDERS = {"none": 0, "single": 1, "double": 2, "triple": 3}
NO_LIMIT = 1 << 20
"""The cap of a class the space does not name (an absorbing process's mask class): no valence limit."""


def largest_valence(symbol: str) -> int:
    """The largest neutral valence RDKit allows ``symbol`` (C 4, N 3, O 2, F 1, S 6, P 5)."""
    from rdkit import Chem

    try:
        valences = [int(v) for v in Chem.GetPeriodicTable().GetValenceList(symbol) if int(v) >= 0]
    except RuntimeError:
        raise SpaceError(f"valence constraint: {symbol!r} is not an element RDKit knows; fix the space's atom_types") from None
    if not valences:
        raise SpaceError(f"valence constraint: RDKit gives {symbol!r} no fixed valence, so it cannot be kept; drop [sample] constraint for this space")
    return max(valences)


class ValenceConstraint:
    """``keep(before, after) -> after'``: the proposal ``after`` with the changes that would push an atom past its
    valence undone (module docstring). Works on the one-hot ``atoms`` (B×n×A) and ``bonds`` (B×n×n×K) fields of a
    :class:`~diffkit_molecule.space.MoleculeSpace` State, with its ``mask``; extra classes beyond the space's (an
    absorbing process's mask class) count as "unknown": bond order 0, no valence limit."""

    name = "valence"

    def __init__(self, atom_types: Sequence[str], bond_types: Sequence[str]):
        unknown = [b for b in bond_types if b not in BOND_ORDERS]
        if unknown:
            raise SpaceError(f"valence constraint: bond types {unknown} have no integer order; it knows {list(BOND_ORDERS)}")
        self.atom_types = tuple(atom_types)
        self.caps = torch.tensor([largest_valence(a) for a in self.atom_types], dtype=torch.long)
        self.orders = torch.tensor([BOND_ORDERS[b] for b in bond_types], dtype=torch.long)

    @staticmethod
    def _padded(table: torch.Tensor, onehot: torch.Tensor, fill: int) -> torch.Tensor:
        """``table`` extended with ``fill`` to the field's number of classes, on its device."""
        extra = torch.full((max(onehot.shape[-1] - len(table), 0),), fill, dtype=torch.long)
        return torch.cat([table, extra]).to(onehot.device)

    def _orders_and_caps(self, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(bond orders B×n×n, atom types B×n, valence caps B×n)`` of a one-hot State."""
        types = state["atoms"].argmax(-1)
        orders = self._padded(self.orders, state["bonds"], 0)[state["bonds"].argmax(-1)]
        return orders, types, self._padded(self.caps, state["atoms"], NO_LIMIT)[types]

    def violations(self, state: State) -> torch.Tensor:
        """Atoms above their valence in ``state`` (B×n bool, padding False)."""
        real, pairs = self._masks(state)
        orders, _, caps = self._orders_and_caps(state)
        return real & ((orders * pairs).sum(-1) > caps)

    def _masks(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        atoms = state["atoms"]
        B, n = atoms.shape[:2]
        mask = state.get("mask")
        real = torch.ones(B, n, dtype=torch.bool, device=atoms.device) if mask is None else mask > 0.5
        eye = torch.eye(n, dtype=torch.bool, device=atoms.device)
        return real, (real[:, :, None] & real[:, None, :] & ~eye).long()

    def __call__(self, before: State, after: State) -> State:
        """Two rounds of the module's rule, without a data-dependent branch (so no host sync on a GPU): a round
        reverts every bond-order increase at an unacceptable atom, and the type change of an unacceptable atom that
        has no increase left. Reverting lowers sums only and a type revert touches one atom's cap, so acceptable
        atoms stay so. After round 1 no unacceptable atom has an increase left, so its sum is at most the previous
        one; if it is still unacceptable its type changed, and round 2 reverts that, which makes it acceptable."""
        real, pairs = self._masks(after)
        order_before, type_before, cap_before = self._orders_and_caps(before)
        order, type_after, cap = self._orders_and_caps(after)
        val_before = (order_before * pairs).sum(-1)
        reverted_pairs = torch.zeros_like(order, dtype=torch.bool)
        reverted_atoms = torch.zeros_like(type_after, dtype=torch.bool)
        changed_type = type_after != type_before
        for _ in range(2):
            val = (order * pairs).sum(-1)
            increased = (order > order_before) & (pairs > 0)
            same_type = ~changed_type | reverted_atoms
            bad = real & (val > cap) & ~(same_type & (val <= val_before))
            undo = increased & (bad[:, :, None] | bad[:, None, :])
            revert = bad & ~increased.any(-1) & ~same_type
            reverted_pairs |= undo
            reverted_atoms |= revert
            order = torch.where(undo, order_before, order)
            cap = torch.where(revert, cap_before, cap)
        out = State(after)
        out["bonds"] = torch.where(reverted_pairs[..., None], before["bonds"], after["bonds"])
        out["atoms"] = torch.where(reverted_atoms[..., None], before["atoms"], after["atoms"])
        return out

    def __repr__(self) -> str:
        return f"ValenceConstraint(atom_types={list(self.atom_types)}, caps={self.caps.tolist()})"


__all__ = ["BOND_ORDERS", "ValenceConstraint", "largest_valence"]
