"""Registered molecule metrics on an evaluation context, and FCD."""
import random

import pytest

from diffkit.evaluation import EvalContext
from diffkit.registry import load
from diffkit.testing.datasets import check_metric
from diffkit_molecule import chem
from diffkit_molecule.metrics import fcd_value

CHEAP = ["molecule-validity", "molecule-uniqueness", "molecule-novelty", "molecule-distribution"]


def _context(qm9_small, generated):
    test = qm9_small["test"]
    return EvalContext(generated=generated, reference=[test[i] for i in range(len(test))], train=qm9_small["train"], space=test.space, extras={})


def test_metrics_on_training_molecules(qm9_small):
    train = qm9_small["train"]
    ctx = _context(qm9_small, [train[i] for i in range(0, len(train), 5)])   # spread over the split (QM9 is ordered by size)
    for name in CHEAP:
        assert check_metric(load("metrics", name), ctx, name=name)
    figures = {}
    for name in CHEAP:
        figures.update(load("metrics", name)(ctx))
    assert figures["validity"] == 1.0 and figures["validity_relaxed"] == 1.0
    assert figures["uniqueness"] > 0.95            # QM9 repeats a few heavy-atom graphs (stereoisomers)
    assert figures["novelty"] == 0.0 and figures["vun"] == 0.0
    assert figures["size_distance"] < 0.2 and figures["atom_types_distance"] < 0.1


def test_unreadable_samples_count_as_invalid(qm9_small):
    train = qm9_small["train"]
    ctx = _context(qm9_small, [train[i] for i in range(10)])
    ctx.extras["n_total"] = 20                     # 10 lines of the file could not be read
    figures = load("metrics", "molecule-validity")(ctx)
    assert figures["validity"] == pytest.approx(0.5)


def test_novelty_without_training_data_names_the_fix(qm9_small):
    ctx = _context(qm9_small, [qm9_small["train"][0]])
    ctx.train = None
    with pytest.raises(ValueError, match="train_dataset"):
        load("metrics", "molecule-novelty")(ctx)
    out = load("metrics", "molecule-novelty")(ctx, train_dataset={"dataset": "qm9", "options": {"source_limit": 1500}})
    assert out["novelty"] == 0.0


def _shuffled_atoms(smiles_list, seed=0):
    """Each molecule's element labels permuted over its atoms (bonds kept); the strictly valid results."""
    rng = random.Random(seed)
    out = []
    for s in smiles_list:
        symbols, bonds, _ = chem.smiles_to_graph(s)
        for _ in range(20):
            perm = symbols[:]
            rng.shuffle(perm)
            mol, _ = chem.strict_molecule(perm, bonds)
            if mol is not None and perm != symbols:
                out.append(chem.canonical(mol))
                break
    return out


def test_fcd_near_zero_for_a_set_against_itself_and_larger_for_shuffled_atoms(qm9_small):
    ref = qm9_small["test"].smiles[:120]
    other = qm9_small["val"].smiles[:120]
    shuffled = _shuffled_atoms(ref)
    assert len(shuffled) > 60
    same = fcd_value(ref, ref)
    real = fcd_value(other, ref)
    wrong = fcd_value(shuffled, ref)
    assert same < 0.05
    assert wrong > 1.0                            # clearly above the identity value
    assert wrong > real > same                    # and above two real sets of this size (whose FCD is the small-set bias)
    assert fcd_value(ref, ref) == same            # reference statistics come from the cache the second time


def test_fcd_metric_on_context(qm9_small):
    train = qm9_small["train"]
    ctx = _context(qm9_small, [train[i] for i in range(60)])
    out = load("metrics", "fcd")(ctx)
    assert out["fcd_valid_n"] == 60 and out["fcd"] > 0
