"""Space constraints kept by samplers (``Space.constraints`` / ``Space.constraint``, ``drive(constraint=...)``).

The rule used here, on the categorical oracle: "no position enters class 0". Its constraint reverts every
proposed move into class 0, so a position is in class 0 at the end only if the prior draw put it there; the
same run without the constraint ends with many such positions, so the check can fail.
"""
import pytest
import torch

from diffkit.denoiser import Denoiser
from diffkit.oracle_categorical import AnalyticCategoricalBackbone, two_modes
from diffkit.processes import CategoricalProcess, Diffusion, DiscreteFlow
from diffkit.samplers import SAMPLERS, level_constraint, make_times
from diffkit.spaces import SpaceError
from diffkit.spaces.euclidean import EuclideanSpace
from diffkit.state import State

MIX = two_modes(length=4, num_classes=3)


def never_enter_zero(before: State, after: State) -> State:
    """Undo every proposed move into class 0 (a position already in class 0 may stay or leave)."""
    moved_in = (after["x"].argmax(-1) == 0) & (before["x"].argmax(-1) != 0)
    out = State(after)
    out["x"] = torch.where(moved_in[..., None], before["x"], after["x"])
    return out


def _sample(sampler: str, process, levels: int = 30, n: int = 3000, **options):
    diff = Diffusion({"x": process})
    fn = Denoiser(AnalyticCategoricalBackbone(MIX, process), diff)
    g = torch.Generator().manual_seed(0)
    prior = diff.prior(State(x=torch.zeros(n, MIX.length, 3)), g)
    out = SAMPLERS[sampler](fn, State(prior), make_times(diff, levels, "uniform"), generator=g, **options)
    return prior["x"].argmax(-1), out["x"].argmax(-1)


@pytest.mark.parametrize("sampler,process", [("dfm-euler", DiscreteFlow(3, "uniform")), ("ancestral", CategoricalProcess(3, "uniform"))],
                         ids=["dfm-euler", "ancestral"])
def test_a_sampler_keeps_the_constraint_at_every_level(sampler, process):
    prior, free = _sample(sampler, process)
    entered = ((free == 0) & (prior != 0)).sum()
    assert entered > 500  # the oracle puts much mass on class 0: without the constraint many positions enter it
    prior, kept = _sample(sampler, process, constraint=level_constraint(never_enter_zero))
    assert not bool(((kept == 0) & (prior != 0)).any())


def test_a_constraint_that_changes_nothing_leaves_the_samples_bit_identical():
    calls = []

    def identity(before, after):
        calls.append((before.batch_size, after.batch_size))
        return after

    _, free = _sample("dfm-euler", DiscreteFlow(3, "uniform"), levels=12, n=500)
    _, same = _sample("dfm-euler", DiscreteFlow(3, "uniform"), levels=12, n=500, constraint=level_constraint(identity))
    assert torch.equal(free, same)
    assert calls == [(500, 500)] * 12  # once per level, after the level's update


def test_a_constraint_below_a_time_acts_only_on_the_late_levels():
    """Levels start at 1, 11/12, ..., 1/12 (uniform grid of 12): ``below = 0.5`` keeps the rule on the six levels
    from t <= 0.5 only; ``below = 0`` on none of them, so it draws exactly the free samples."""
    calls = []

    def record(before, after):
        calls.append(1)
        return after

    _sample("dfm-euler", DiscreteFlow(3, "uniform"), levels=12, n=50, constraint=level_constraint(record, below=0.5))
    assert len(calls) == 6
    prior, free = _sample("ancestral", CategoricalProcess(3, "uniform"))
    _, none = _sample("ancestral", CategoricalProcess(3, "uniform"), constraint=level_constraint(never_enter_zero, below=0.0))
    assert torch.equal(free, none)
    prior, late = _sample("ancestral", CategoricalProcess(3, "uniform"), constraint=level_constraint(never_enter_zero, below=0.3))
    entered_late = int(((late == 0) & (prior != 0)).sum())
    entered_free = int(((free == 0) & (prior != 0)).sum())
    assert 0 < entered_late < entered_free  # moves into class 0 before t = 0.3 stay; later ones are undone
    with pytest.raises(ValueError, match="constraint_below is a time of the process"):
        level_constraint(never_enter_zero, below=-0.5)


def test_a_space_offers_no_constraint_by_default_and_names_the_ones_it_has():
    space = EuclideanSpace(2)
    assert space.constraints() == {}
    with pytest.raises(SpaceError, match="has no constraint 'valence'; it offers none"):
        space.constraint("valence")

    class Offers(EuclideanSpace):
        def constraints(self):
            return {"inside": "stays inside the unit ball"}

    with pytest.raises(SpaceError, match=r"offers \['inside'\]"):
        Offers(2).constraint("outside")


def test_generate_refuses_a_sampler_that_takes_no_constraint():
    from types import SimpleNamespace

    from diffkit.runs import sampler_constraint

    def bare(denoiser, state, times, *, generator=None, callback=None):
        return state

    run = SimpleNamespace(space=EuclideanSpace(2))
    with pytest.raises(ValueError, match="takes no constraint"):
        sampler_constraint(run, bare, "anything")
    with pytest.raises(SpaceError, match="has no constraint"):
        sampler_constraint(run, "dpmpp-2m", "anything")
