"""Conformance checks for first stages of two-stage generation (``diffkit.representations``)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from diffkit.spaces.base import Space
from diffkit.testing.errors import Checker, json_roundtrip, max_abs_diff


def check_representation(rep, elements: Sequence[Any], bound: float, *, error: Callable[[Any, Any], float] | None = None,
                         registered_name: str | None = None, fit: bool = False) -> dict:
    """Check that ``rep`` keeps the representation contract on data ``elements``; returns the measured figures.

    ``bound`` is the round-trip error the representation states: ``error(x, decode(encode(x)))`` (by default the
    largest absolute difference) must not exceed it on any element. Rules (a failure raises ConformanceError
    naming the rule in brackets):

    - ``[contract]``: ``space`` and ``data_space`` are Spaces; ``name`` a string (equal to ``registered_name`` when given).
    - ``[fit]`` (with ``fit=True``): ``fit(elements)`` runs and returns a JSON dict.
    - ``[shapes]``: ``encode`` returns one code per element, each valid in ``space`` and of its template's shape;
      ``decode`` returns one element per code, each valid in ``data_space``.
    - ``[round-trip]``: ``error(x, decode(encode(x))) <= bound`` for every element.
    - ``[determinism]``: encoding and decoding twice give identical results.
    - ``[config]``: ``config()`` is JSON; ``state_dict()`` holds only tensors, and a representation rebuilt with
      ``type(rep)(data_space, **config())`` and ``load_state_dict(state_dict())`` encodes identically.
    """
    name = registered_name or getattr(rep, "name", type(rep).__name__)
    ck = Checker("representation", name)
    elements = list(elements)
    ck.require(len(elements) >= 2, "usage", "give at least two data elements to check_representation")
    ck.require(isinstance(getattr(rep, "space", None), Space), "contract", "it has no .space (a diffkit Space); set the Space its codes live in")
    ck.require(isinstance(getattr(rep, "data_space", None), Space), "contract", "it has no .data_space (a diffkit Space); keep the space it was built over")
    ck.require(isinstance(getattr(rep, "name", None), str) and rep.name, "contract", "it has no string 'name'; set name = '<registered name>'")
    if registered_name is not None:
        ck.require(rep.name == registered_name, "contract", f"its name is {rep.name!r} but it is registered as {registered_name!r}; make them equal")
    elements = [rep.data_space.validate(e) for e in elements]
    if fit:
        with ck.step("fit", "fit(elements)"):
            report = rep.fit(elements, None)
        with ck.step("fit", "JSON of fit()'s report"):
            json_roundtrip(report or {})

    with ck.step("shapes", "encode(elements)"):
        codes = list(rep.encode(elements))
    ck.require(len(codes) == len(elements), "shapes", f"encode returned {len(codes)} codes for {len(elements)} elements; return one per element")
    shape = {k: tuple(v.shape[1:]) for k, v in rep.space.template(1).items()}
    with ck.step("shapes", "space.collate(codes)"):
        state = rep.space.collate(codes)
    got = {k: tuple(state[k].shape[1:]) for k in shape}
    ck.require(got == shape, "shapes", f"codes collate to shapes {got}, the space's template says {shape}; encode to the space's shape")
    with ck.step("shapes", "decode(codes)"):
        decoded = list(rep.decode(codes))
    ck.require(len(decoded) == len(codes), "shapes", f"decode returned {len(decoded)} elements for {len(codes)} codes; return one per code")
    with ck.step("shapes", "data_space.validate(decoded element)"):
        decoded = [rep.data_space.validate(d) for d in decoded]

    measure = error or (lambda a, b: max_abs_diff(torch.as_tensor(a), torch.as_tensor(b)))
    errors = [float(measure(x, y)) for x, y in zip(elements, decoded)]
    worst = max(errors)
    ck.require(worst <= bound, "round-trip", f"decode(encode(x)) is {worst:.4g} from x (mean {sum(errors) / len(errors):.4g}), above the stated bound {bound:g}; "
                                            f"fit it longer or state the bound it keeps")

    codes2, decoded2 = list(rep.encode(elements)), [rep.data_space.validate(d) for d in rep.decode(codes)]
    for a, b in zip(codes + decoded, codes2 + decoded2):
        diff = max_abs_diff(torch.as_tensor(a), torch.as_tensor(b))
        ck.require(diff == 0.0, "determinism", f"encoding or decoding the same input twice differs by {diff:.3g}; use eval mode and no random draws")

    with ck.step("config", "JSON of config()"):
        config = json_roundtrip(rep.config())
    tensors = rep.state_dict()
    ck.require(all(isinstance(v, torch.Tensor) for v in tensors.values()), "config", "state_dict() must hold only tensors (saved with safetensors)")
    with ck.step("config", f"{type(rep).__name__}(data_space, **config()) with load_state_dict(state_dict())"):
        twin = type(rep)(rep.data_space, **config)
        twin.load_state_dict({k: v.clone() for k, v in tensors.items()})
        twin_codes = list(twin.encode(elements))
    diff = max(max_abs_diff(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(codes, twin_codes))
    ck.require(diff <= 1e-5, "config", f"a representation rebuilt from config() and state_dict() encodes differently (by {diff:.3g}); put every fitted value in state_dict()")
    return {"max_error": worst, "mean_error": sum(errors) / len(errors), "code_shape": {k: list(v) for k, v in shape.items()}}


__all__ = ["check_representation"]
