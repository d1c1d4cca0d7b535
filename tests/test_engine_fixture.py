"""Bit-identical engine outputs: samplers, losses and likelihoods against values recorded from the engine
before its refactor (``tests/fixtures/make_sampler_fixture.py`` lists the cases and rewrites the fixture).

Bit for bit on a machine like the recording one (same torch version and CPU vector capability); elsewhere to within
``TOLERANCE`` of each tensor's scale, which float32 rounding across vector widths stays far inside and any change of
algorithm, seed or schedule leaves far behind."""
import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

_SCRIPT = Path(__file__).parent / "fixtures" / "make_sampler_fixture.py"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_sampler_fixture", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIX = _fixture_module()
RECORDED = load_file(str(FIX.FIXTURE))
with safe_open(str(FIX.FIXTURE), "pt") as _f:
    RECORDED_ON = _f.metadata() or {}
EXACT = RECORDED_ON == FIX.machine()


def _compare(prefix: str, out: dict, exact: bool = EXACT) -> None:
    expected = {k[len(prefix) + 1:]: v for k, v in RECORDED.items() if k.startswith(prefix + "/")}
    assert expected, f"the fixture has no case {prefix!r}; rerun tests/fixtures/make_sampler_fixture.py"
    assert sorted(out) == sorted(expected), f"{prefix}: fields {sorted(out)} vs recorded {sorted(expected)}"
    for k, v in expected.items():
        got = out[k].detach()
        assert got.dtype == v.dtype and got.shape == v.shape, f"{prefix}/{k}: {got.dtype} {tuple(got.shape)} vs recorded {v.dtype} {tuple(v.shape)}"
        difference = float((got.double() - v.double()).abs().max()) if got.numel() else 0.0
        if exact:
            assert torch.equal(got, v), f"{prefix}/{k} moved: max difference {difference:.3g} (bit for bit on {RECORDED_ON})"
        else:
            bound = FIX.TOLERANCE * max(1.0, float(v.double().abs().max()) if v.numel() else 0.0)
            assert torch.equal(got, v) or difference <= bound, \
                f"{prefix}/{k} moved: max difference {difference:.3g} > {bound:.3g} (recorded on {RECORDED_ON}, here {FIX.machine()})"


@pytest.mark.parametrize("key,args", list(FIX.oracle_cases()), ids=[k for k, _ in FIX.oracle_cases()])
def test_oracle_samples_are_bit_identical(key, args):
    _compare(key, FIX.run_oracle(*args))


@pytest.mark.parametrize("key,args", list(FIX.mixed_cases()), ids=[k for k, _ in FIX.mixed_cases()])
def test_mixed_state_samples_are_bit_identical(key, args):
    _compare(key, FIX.run_mixed(*args))


@pytest.mark.parametrize("sampler", FIX.BUILTIN_SAMPLERS)
def test_graph_and_guided_samples_are_bit_identical(sampler):
    _compare(f"graph/{sampler}", FIX.run_graph(sampler))
    _compare(f"guided/{sampler}", FIX.run_mixed("absorbing", sampler, guidance=3.0))


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpmpp-2m"])
def test_categorical_only_samples_are_bit_identical(sampler):
    _compare(f"categorical-only/{sampler}", FIX.run_categorical_only(sampler))


@pytest.mark.parametrize("key,args", list(FIX.loss_cases()), ids=[k for k, _ in FIX.loss_cases()])
def test_losses_are_bit_identical(key, args):
    _compare(key, FIX.run_loss(*args))


def test_likelihoods_are_bit_identical():
    _compare("likelihood", FIX.run_likelihood())


@pytest.mark.parametrize("exact", [True, False], ids=["bit-for-bit", "tolerant"])
def test_the_comparison_can_fail(exact):
    """A sampler's output under another seed differs from the recorded one: the check has teeth in both modes."""
    key, args = next(iter(FIX.oracle_cases()))
    out = FIX.run_oracle(*args, seed=12)
    with pytest.raises(AssertionError, match="moved"):
        _compare(key, out, exact=exact)


def test_the_tolerant_comparison_catches_a_small_change():
    """A change of 1e-4 of a recorded tensor's scale (ten times the tolerance) fails the tolerant comparison."""
    key, args = next(iter(FIX.oracle_cases()))
    recorded = {k[len(key) + 1:]: v for k, v in RECORDED.items() if k.startswith(key + "/")}
    name, value = next(iter(recorded.items()))
    nudged = dict(recorded)
    nudged[name] = value.clone()
    nudged[name].view(-1)[0] += 1e-4 * max(1.0, float(value.abs().max()))
    _compare(key, recorded, exact=False)
    with pytest.raises(AssertionError, match="moved"):
        _compare(key, nudged, exact=False)
