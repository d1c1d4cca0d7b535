"""The valence constraint (diffkit_molecule.constraints): samplers keep it, data pass through it unchanged."""
import pytest
import torch
import torch.nn.functional as F

from diffkit.denoiser import Denoiser
from diffkit.processes import Diffusion, DiscreteFlow
from diffkit.samplers import SAMPLERS, level_constraint, make_times
from diffkit.spaces import SpaceError
from diffkit.state import State
from diffkit.testing.spaces import check_space
from diffkit_molecule.constraints import ValenceConstraint, largest_valence
from diffkit_molecule.space import MoleculeSpace, OneHotMoleculeSpace

SPACE = MoleculeSpace()
KEEP = SPACE.constraint("valence")


def _graph(atoms: str, bonds: dict) -> State:
    """One graph: atom symbols, bonds {(i, j): order}."""
    n = len(atoms)
    order = torch.zeros(n, n, dtype=torch.long)
    for (i, j), o in bonds.items():
        order[i, j] = order[j, i] = o
    return State(atoms=F.one_hot(torch.tensor([SPACE.atom_types.index(a) for a in atoms]), 4).float()[None],
                 bonds=F.one_hot(order, 4).float()[None], mask=torch.ones(1, n))


def _orders(state: State) -> torch.Tensor:
    return state["bonds"][0].argmax(-1)


def test_valences_come_from_rdkit():
    assert [largest_valence(a) for a in "CNOF"] == [4, 3, 2, 1]
    assert KEEP.caps.tolist() == [4, 3, 2, 1]
    with pytest.raises(SpaceError, match="not an element"):
        largest_valence("Xx")


def test_a_fifth_bond_on_carbon_is_undone_and_the_rest_of_the_move_kept():
    before = _graph("CCCCCO", {(0, 1): 1, (0, 2): 1, (0, 3): 1, (0, 4): 1})
    after = _graph("CCCCCO", {(0, 1): 1, (0, 2): 1, (0, 3): 1, (0, 4): 1, (0, 5): 1, (1, 2): 1, (3, 4): 2})
    out = _orders(KEEP(before, after))
    assert out[0, 5] == 0 and out[5, 0] == 0  # the fifth bond of atom 0: undone on both sides
    assert out[1, 2] == 1 and out[3, 4] == 2  # moves that keep every valence: kept
    assert not KEEP.violations(KEEP(before, after)).any()


def test_decreases_always_pass_and_an_old_violation_may_shrink_but_not_grow():
    before = _graph("OCCC", {(0, 1): 1, (0, 2): 1, (0, 3): 1})  # oxygen with three bonds: above its valence already
    shrink = _graph("OCCC", {(0, 1): 1, (0, 2): 1})
    assert torch.equal(KEEP(before, shrink)["bonds"], shrink["bonds"])
    same = _graph("OCCC", {(0, 1): 1, (0, 2): 1, (0, 3): 1, (1, 2): 1})
    assert torch.equal(KEEP(before, same)["bonds"], same["bonds"])  # the violation stays as it was; the C-C bond is fine
    grow = _graph("OCCC", {(0, 1): 2, (0, 2): 1, (0, 3): 1})
    assert torch.equal(KEEP(before, grow)["bonds"], before["bonds"])


def test_an_atom_type_change_below_the_bond_sum_is_undone():
    before = _graph("CCC", {(0, 1): 1, (0, 2): 1})
    to_fluorine = _graph("FCC", {(0, 1): 1, (0, 2): 1})  # F takes one bond; this atom has two
    out = KEEP(before, to_fluorine)
    assert out["atoms"][0, 0].argmax() == SPACE.atom_types.index("C")
    to_nitrogen = _graph("NCC", {(0, 1): 1, (0, 2): 1})
    assert torch.equal(KEEP(before, to_nitrogen)["atoms"], to_nitrogen["atoms"])


def test_an_atom_that_gains_a_bond_and_changes_type_is_settled_in_two_rounds():
    before = _graph("CCCC", {(0, 1): 1, (0, 2): 1})
    to_oxygen = _graph("OCCC", {(0, 1): 1, (0, 2): 1, (0, 3): 1})  # C -> O and a third bond: O takes two
    out = KEEP(before, to_oxygen)
    assert _orders(out)[0, 3] == 0 and out["atoms"][0, 0].argmax() == SPACE.atom_types.index("O")  # the bond goes, the type stays
    to_fluorine = _graph("FCCC", {(0, 1): 1, (0, 2): 1, (0, 3): 1})  # F takes one: without the new bond it still has two
    out = KEEP(before, to_fluorine)
    assert _orders(out)[0, 3] == 0 and out["atoms"][0, 0].argmax() == SPACE.atom_types.index("C")  # round 2 reverts the type
    assert not KEEP.violations(out).any()


def test_padding_and_unknown_classes_are_ignored():
    before = _graph("CC", {})
    after = _graph("CC", {(0, 1): 3})
    before["mask"] = after["mask"] = torch.tensor([[1.0, 0.0]])  # atom 1 is padding: its bonds count for nothing
    assert torch.equal(KEEP(before, after)["bonds"], after["bonds"])
    masked = State(atoms=torch.cat([before["atoms"], torch.zeros(1, 2, 1)], -1), bonds=torch.cat([before["bonds"], torch.zeros(1, 2, 2, 1)], -1),
                   mask=torch.ones(1, 2))
    masked["atoms"][0, 0] = F.one_hot(torch.tensor(4), 5).float()  # an absorbing process's mask class: no valence limit
    assert not KEEP.violations(masked).any()


def _random_graphs(B, n, g, probs=(0.75, 0.15, 0.06, 0.04)):
    atoms = F.one_hot(torch.randint(0, 4, (B, n), generator=g), 4).float()
    order = torch.multinomial(torch.tensor(probs), B * n * n, replacement=True, generator=g).view(B, n, n).triu(1)
    order = order + order.transpose(1, 2)
    mask = (torch.arange(n)[None] < torch.randint(2, n + 1, (B, 1), generator=g)).float()
    return State(atoms=atoms, bonds=F.one_hot(order, 4).float(), mask=mask)


def test_on_random_moves_no_violation_is_created_or_worsened():
    g = torch.Generator().manual_seed(0)
    created = 0
    for _ in range(10):
        before, after = _random_graphs(64, 9, g), _random_graphs(64, 9, g)
        after["mask"] = before["mask"]
        out = KEEP(before, after)
        real, pairs = KEEP._masks(out)
        valence = lambda s: (KEEP._orders_and_caps(s)[0] * pairs).sum(-1)  # noqa: E731
        same_type = out["atoms"].argmax(-1) == before["atoms"].argmax(-1)
        assert bool((~KEEP.violations(out) | (same_type & (valence(out) <= valence(before)))).all())
        assert torch.equal(KEEP(before, out)["bonds"], out["bonds"]) and torch.equal(KEEP(before, out)["atoms"], out["atoms"])  # settled
        assert bool(((out["bonds"] == before["bonds"]).all(-1) | (out["bonds"] == after["bonds"]).all(-1)).all())
        assert torch.equal(out["bonds"], out["bonds"].transpose(1, 2))
        created += int((KEEP.violations(after) & ~KEEP.violations(before)).sum())
    assert created > 100  # the random proposals do break valences, so the checks above are not empty


class _UniformGraphs(torch.nn.Module):
    """A denoiser backbone that believes every atom type and bond order equally likely: moves at random."""

    def forward(self, state, t, cond=None):
        return {"atoms": torch.zeros_like(state["atoms"][..., :4]), "bonds": torch.zeros_like(state["bonds"][..., :4])}


def test_dfm_euler_with_the_constraint_never_adds_an_atom_above_its_valence():
    diff = Diffusion({"atoms": DiscreteFlow(4, "uniform"), "bonds": DiscreteFlow(4, [0.7, 0.2, 0.06, 0.04], symmetric=True)}, layouts={"atoms": "node", "bonds": "pair"})
    denoiser = Denoiser(_UniformGraphs(), diff)
    template = SPACE.template(200, sizes=torch.full((200,), 9))

    def run(constraint):
        g = torch.Generator().manual_seed(1)
        counts = []
        x = diff.prior(template, g)
        counts.append(int(KEEP.violations(x).sum()))
        SAMPLERS["dfm-euler"](denoiser, x, make_times(diff, 20, "uniform"), generator=g, constraint=constraint,
                              callback=lambda info: counts.append(int(KEEP.violations(info["state"]).sum())))
        return counts

    free = run(None)
    assert max(b - a for a, b in zip(free, free[1:])) > 0  # moving at random adds violations
    kept = run(level_constraint(KEEP))
    assert all(b <= a for a, b in zip(kept, kept[1:])) and kept[-1] < kept[0]


def test_the_space_offers_valence_only_where_it_applies():
    assert set(SPACE.constraints()) == {"valence"}
    assert OneHotMoleculeSpace().constraints() == {}
    with pytest.raises(SpaceError, match="has no constraint 'valence'; it offers none"):
        OneHotMoleculeSpace().constraint("valence")
    assert isinstance(KEEP, ValenceConstraint)
    examples = [SPACE.from_smiles(s) for s in ("CCO", "c1ccoc1", "N#CC(F)C=O", "C")]
    assert "constraints" in check_space(SPACE, examples, registered_name="molecule", write=False)
