"""Registered molecule metrics on an evaluation context, and FCD."""
import random

import pytest

from diffkit.evaluation import EvalContext
from diffkit.registry import load
from diffkit.testing.datasets import check_metric
from diffkit_molecule import chem
from diffkit_molecule.metrics import fcd_value

CHEAP = ["molecule-validity", "molecule-uniqueness", "molecule-novelty", "molecule-filters", "molecule-distribution"]


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
    assert figures["validity"] == 1.0 and figures["validity_relaxed"] == 1.0 and figures["valid_connected"] == 1.0
    assert figures["uniqueness"] > 0.95            # QM9 repeats a few heavy-atom graphs (stereoisomers)
    for suffix in ("", "_digress", "_gdss"):
        assert figures["novelty" + suffix] == 0.0 and figures["vun" + suffix] == 0.0 and figures["novelty_all_splits" + suffix] == 0.0
    assert figures["filters"] == 1.0 and figures["filters_reference"] == 1.0
    assert figures["size_distance"] < 0.2 and figures["atom_types_distance"] < 0.1


def test_held_out_molecules_are_new_to_the_training_split_but_not_to_the_dataset(qm9_small):
    test = qm9_small["test"]
    ctx = _context(qm9_small, [test[i] for i in range(len(test))])
    figures = load("metrics", "molecule-novelty")(ctx)
    assert figures["novelty"] > 0.95               # all but the few stereoisomer graphs QM9 repeats across splits
    assert figures["novelty_all_splits"] == 0.0 and figures["vun_all_splits"] == 0.0
    assert figures["novelty_all_splits_gdss"] == 0.0 and figures["novelty_all_splits_digress"] == 0.0


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


def test_fcd_metric_reports_every_protocol_and_its_floor(qm9_small):
    from diffkit_molecule.metrics import floor_sample

    val = qm9_small["val"]
    ctx = _context(qm9_small, [val[i] for i in range(60)])
    out = load("metrics", "fcd")(ctx)
    assert out["fcd_reference_n"] == len(qm9_small["test"])
    for suffix in ("", "_digress", "_gdss"):
        assert out["fcd_valid_n" + suffix] == 60 and out["fcd" + suffix] > 0
        assert out["fcd_floor_n" + suffix] == 60 and out["fcd_floor" + suffix] > 0
    # the floor is the FCD of that many training molecules (none of them in the reference) against the reference
    reference = [s for s in qm9_small["test"].smiles]
    sample = floor_sample(qm9_small["train"].smiles, reference, 60, seed=0)
    assert len(sample) == 60 and not set(sample) & set(reference)
    assert out["fcd_floor"] == pytest.approx(fcd_value(sample, reference), rel=1e-6)
    # molecules with shuffled atoms score far above the floor of real molecules at the same size
    shuffled = _shuffled_atoms(qm9_small["val"].smiles[:120])[:60]
    assert fcd_value(shuffled, reference) > out["fcd_floor"] + 0.5


def test_nspdk_metric_is_near_its_floor_for_real_molecules_and_far_for_shuffled_ones(qm9_small):
    from diffkit_molecule.metrics import analyse, nspdk_figures

    val = qm9_small["val"]
    ctx = _context(qm9_small, [val[i] for i in range(len(val))])
    out = load("metrics", "nspdk")(ctx)
    assert out["nspdk_n_gdss"] == len(val) and out["nspdk_floor_n_gdss"] == len(val)
    assert out["nspdk_reference_n"] == len(qm9_small["test"])
    # at 150 molecules the diagonal terms of the biased MMD² dominate (about 2/n): real molecules sit at the floor,
    # molecules with shuffled atoms (bonds kept) clearly above the floor of their own size
    assert 0.0 < out["nspdk_gdss"] < 1.2 * out["nspdk_floor_gdss"]
    shuffled = [chem.smiles_to_graph(s)[:2] for s in _shuffled_atoms(val.smiles)]
    wrong = nspdk_figures(analyse(shuffled), qm9_small["test"].smiles, qm9_small["train"].smiles)
    assert wrong["nspdk_gdss"] > 1.3 * wrong["nspdk_floor_gdss"]
