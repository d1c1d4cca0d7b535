"""Conformance checks for data spaces (docs/contracts.md, "Space")."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from diffkit.spaces.base import FieldSpec, Space, SpaceError
from diffkit.state import MASK_FIELDS, State, field_mask
from diffkit.testing.errors import Checker, json_roundtrip, max_abs_diff

KINDS = ("continuous", "categorical")
LAYOUTS = ("dense", "node", "pair")


def check_space(space: Space, examples: Sequence[Any], *, bad_examples: Sequence[Any] | None = None, atol: float = 1e-2,
                registered_name: str | None = None, write: bool = True) -> list[str]:
    """Check that ``space`` keeps the Space contract on a few valid ``examples``; returns the contracts checked.

    Rules enforced (each failure raises ConformanceError naming the rule in brackets):

    - ``[fields]``: ``fields`` is a non-empty tuple of FieldSpec with known kind and layout, unique names,
      ``num_classes >= 2`` for categorical fields; ``name`` is a string (equal to ``registered_name`` when given).
    - ``[validate]``: every example validates without error.
    - ``[collate]``: ``collate`` returns a State with one batch-first float32 tensor per field (plus
      ``mask``), batch size = number of examples, categorical fields one-hot over ``num_classes`` on real positions.
    - ``[round-trip]``: ``decode`` gives one element per example, each valid; re-encoding reproduces the
      encoding within ``atol``; and decode∘encode is idempotent (a second round trip changes nothing).
    - ``[decode-any]``: decoding an arbitrary State of the template's shapes (what a sampler may return)
      gives valid elements (decode clamps, rounds or takes the argmax).
    - ``[template]``: ``fit`` returns JSON; ``template(B, stats)`` returns zeros with the fields' shapes.
    - ``[config]``: ``config()`` is JSON and ``type(space)(**config)`` rebuilds a space with the same config
      that encodes the examples identically.
    - ``[constraints]``: ``constraints()`` is a dict of one-line descriptions; each ``constraint(name)`` returns
      encoded data unchanged when nothing changes, and given another proposal returns values that are either the
      state's or the proposal's, in the same shapes (a constraint only undoes proposed changes).
    - ``[determinism]``: ``collate(train=True)`` is identical under the same seeded generator.
    - ``[bad-input]``: invalid elements raise SpaceError with a one-line message (no other exception type).
    - ``[write]``: ``write`` returns a list of paths that exist.
    """
    name = registered_name or getattr(space, "name", type(space).__name__)
    ck = Checker("space", name)
    examples = list(examples)
    ck.require(len(examples) >= 2, "usage", "give at least two examples to check_space; pass a few valid elements of the space")
    checked = []

    # --- fields and name -------------------------------------------------------------------------------
    ck.require(isinstance(space, Space), "fields", f"{type(space).__name__} does not subclass diffkit.spaces.Space; subclass it")
    ck.require(isinstance(getattr(space, "name", None), str) and space.name, "fields", "the space has no string 'name'; set a class attribute name = '<registered name>'")
    if registered_name is not None:
        ck.require(space.name == registered_name, "fields", f"its name attribute is {space.name!r} but it is registered as {registered_name!r}; make them equal")
    fields = space.fields
    ck.require(isinstance(fields, tuple) and fields, "fields", f"fields must be a non-empty tuple of FieldSpec, got {fields!r}")
    for f in fields:
        ck.require(isinstance(f, FieldSpec), "fields", f"field {f!r} is not a FieldSpec")
        ck.require(f.kind in KINDS, "fields", f"field {f.name!r} has kind {f.kind!r}; use one of {KINDS}")
        ck.require(f.layout in LAYOUTS, "fields", f"field {f.name!r} has layout {f.layout!r}; use one of {LAYOUTS}")
        ck.require(f.kind != "categorical" or f.num_classes >= 2, "fields", f"categorical field {f.name!r} has num_classes={f.num_classes}; give at least 2")
        ck.require(f.name not in MASK_FIELDS, "fields", f"field name {f.name!r} is reserved for masks; rename the field")
    ck.require(len({f.name for f in fields}) == len(fields), "fields", f"field names repeat: {[f.name for f in fields]}")
    checked.append("fields")

    # --- validate and collate -------------------------------------------------------------------------
    for i, x in enumerate(examples):
        with ck.step("validate", f"validate(example {i})"):
            space.validate(x)
    checked.append("validate")
    with ck.step("collate", "collate(examples)"):
        state = space.collate(examples)
    _check_state(ck, "collate", space, state, len(examples))
    checked.append("collate")

    # --- round trip ----------------------------------------------------------------------------------
    with ck.step("round-trip", "decode(collate(examples))"):
        decoded = space.decode(state)
    ck.require(isinstance(decoded, list) and len(decoded) == len(examples), "round-trip",
               f"decode returned {type(decoded).__name__} of length {len(decoded) if hasattr(decoded, '__len__') else '?'} for {len(examples)} examples; return a list, one element per example")
    with ck.step("round-trip", "collate(decode(collate(examples)))"):
        again = space.collate(decoded)
    _compare_states(ck, "round-trip", state, again, atol, "re-encoding the decoded examples moved field {field} by {diff:.3g} (tolerance {tol}); decode must invert collate")
    with ck.step("round-trip", "a second decode/collate"):
        twice = space.collate(space.decode(again))
    _compare_states(ck, "round-trip", again, twice, 1e-5, "a second round trip moved field {field} by {diff:.3g}; decode∘collate must be idempotent")
    checked.append("round-trip")

    # --- fit / template / decode of arbitrary sampler output ------------------------------------------
    with ck.step("template", "fit(examples)"):
        stats = space.fit(examples)
    with ck.step("template", "JSON encoding of fit(examples)"):
        json_roundtrip(stats)
    gen = torch.Generator().manual_seed(0)
    with ck.step("template", "template(3, stats)"):
        tmpl = space.template(3, stats, gen)
    ck.require(isinstance(tmpl, dict), "template", f"template returned {type(tmpl).__name__}; return a diffkit State")
    for f in fields:
        ck.require(f.name in tmpl, "template", f"template has no field {f.name!r}; give a zero tensor per field")
        t, s = tmpl[f.name], state[f.name]
        ck.require(t.shape[0] == 3, "template", f"field {f.name!r} has batch size {t.shape[0]} in template(3)")
        ck.require(t.dim() == s.dim() and (f.layout != "dense" or t.shape[1:] == s.shape[1:]), "template",
                   f"field {f.name!r} has shape {tuple(t.shape)} in the template but {tuple(s.shape)} when collated; make them agree")
        ck.require(t.shape[-1] == s.shape[-1], "template", f"field {f.name!r} has {t.shape[-1]} features in the template but {s.shape[-1]} when collated")
        ck.require(bool((t == 0).all()), "template", f"field {f.name!r} of the template is not all zeros")
    any_state = State({k: v.clone() for k, v in tmpl.items()})
    for f in fields:
        any_state[f.name] = 3.0 * torch.randn(tmpl[f.name].shape, generator=gen)
    with ck.step("decode-any", "decode(a random state of the template's shapes)"):
        items = space.decode(any_state)
    ck.require(len(items) == 3, "decode-any", f"decode returned {len(items)} elements for a batch of 3")
    for i, item in enumerate(items):
        with ck.step("decode-any", f"validate(decode(random state)[{i}])"):
            space.validate(item)
    checked += ["template", "decode-any"]

    # --- config ---------------------------------------------------------------------------------------
    with ck.step("config", "JSON encoding of config()"):
        config = json_roundtrip(space.config())
    with ck.step("config", f"{type(space).__name__}(**config())"):
        rebuilt = type(space)(**config)
    ck.require(json_roundtrip(rebuilt.config()) == config, "config", f"{type(space).__name__}(**config()) has config {rebuilt.config()}, not {config}; config() must give every constructor argument")
    with ck.step("config", "collate(examples) with the rebuilt space"):
        rebuilt_state = rebuilt.collate(examples)
    _compare_states(ck, "config", state, rebuilt_state, 1e-6, "the space rebuilt from config() encodes field {field} differently (by {diff:.3g}); config() must give every constructor argument")
    checked.append("config")

    # --- constraints a sampler may keep ---------------------------------------------------------------------
    with ck.step("constraints", "constraints()"):
        offered = space.constraints()
    ck.require(isinstance(offered, dict), "constraints", f"constraints() returned {type(offered).__name__}; return a dict {{name: one-line description}}")
    proposal = space.collate(examples[1:] + examples[:1]) if offered else None  # the examples, each in another's place
    comparable = proposal is not None and all(proposal[k].shape == state[k].shape for k in state)
    if comparable:
        for k in MASK_FIELDS:
            if k in state:
                proposal[k] = state[k]  # samplers never move masks
    for cname, text in offered.items():
        ck.require(isinstance(text, str) and text and "\n" not in text, "constraints", f"constraint {cname!r} has no one-line description; give one")
        with ck.step("constraints", f"constraint({cname!r})"):
            keep = space.constraint(cname)
        ck.require(callable(keep), "constraints", f"constraint({cname!r}) returned {type(keep).__name__}; return a function keep(x_t, x_s) -> State")
        with ck.step("constraints", f"constraint({cname!r})(data, data)"):
            kept = keep(state, state)
        ck.require(isinstance(kept, State) and set(kept) == set(state), "constraints", f"constraint {cname!r} returned fields {sorted(kept) if isinstance(kept, dict) else kept!r}; return a State with the input's fields")
        _compare_states(ck, "constraints", state, kept, 0.0, f"constraint {cname!r} changed encoded data (field {{field}} by {{diff:.3g}}); a State that proposes no change must pass unchanged")
        if comparable:
            with ck.step("constraints", f"constraint({cname!r})(data, another proposal)"):
                out = keep(state, proposal)
            for k in state:
                ck.require(out[k].shape == state[k].shape, "constraints", f"constraint {cname!r} changed the shape of field {k!r}")
                from_either = (out[k] == state[k]) | (out[k] == proposal[k])
                ck.require(bool(from_either.all()), "constraints", f"constraint {cname!r} put values in field {k!r} that are neither the state's nor the proposal's; "
                                                                  "only undo proposed changes (return x_t's value where a change breaks the rule)")
    checked.append("constraints")

    # --- determinism of the training transform -----------------------------------------------------------
    with ck.step("determinism", "collate(examples, train=True, generator=seeded)"):
        a = space.collate(examples, train=True, generator=torch.Generator().manual_seed(7))
        b = space.collate(examples, train=True, generator=torch.Generator().manual_seed(7))
    _check_state(ck, "determinism", space, a, len(examples))
    _compare_states(ck, "determinism", a, b, 0.0, "collate(train=True) differs by {diff:.3g} in field {field} under the same seed; draw randomness only from the generator")
    checked.append("determinism")

    # --- bad input ------------------------------------------------------------------------------------
    bad = list(bad_examples) if bad_examples is not None else _corruptions(examples[0])
    for desc, item in bad:
        try:
            space.validate(item)
        except SpaceError as exc:
            msg = str(exc).strip()
            ck.require(msg and "\n" not in msg, "bad-input", f"validate({desc}) raised SpaceError with a {'multi-line' if msg else 'blank'} message; use one line naming the problem and the fix")
            ck.require(len(msg) <= 400, "bad-input", f"validate({desc}) raised a {len(msg)}-character message; keep it to one short line")
        except Exception as exc:  # noqa: BLE001
            ck.fail("bad-input", f"validate({desc}) raised {type(exc).__name__} ({str(exc).strip()[:120]}), not SpaceError; catch it and raise SpaceError with a one-line message")
        else:
            ck.fail("bad-input", f"validate({desc}) accepted it; raise SpaceError naming the problem and the fix")
    try:
        space.collate([])
    except SpaceError:
        pass
    except Exception as exc:  # noqa: BLE001
        ck.fail("bad-input", f"collate([]) raised {type(exc).__name__}, not SpaceError; refuse an empty batch with SpaceError")
    else:
        ck.fail("bad-input", "collate([]) accepted an empty batch; raise SpaceError")
    checked.append("bad-input")

    # --- write -----------------------------------------------------------------------------------------
    if write:
        with tempfile.TemporaryDirectory() as tmp:
            with ck.step("write", "write(decoded, out)"):
                paths = space.write(decoded, Path(tmp) / "out")
            ck.require(isinstance(paths, list) and paths, "write", f"write returned {paths!r}; return the list of written paths")
            missing = [str(p) for p in paths if not Path(p).exists()]
            ck.require(not missing, "write", f"write returned paths that do not exist: {missing[:3]}")
        checked.append("write")
    return checked


def _check_state(ck: Checker, contract: str, space: Space, state, batch: int) -> None:
    ck.require(isinstance(state, State), contract, f"collate returned {type(state).__name__}; return a diffkit.State")
    has_mask = "mask" in state
    for f in space.fields:
        ck.require(f.name in state, contract, f"the State has no field {f.name!r} (it has {list(state)}); collate must give every field")
        x = state[f.name]
        ck.require(isinstance(x, torch.Tensor) and x.dtype == torch.float32, contract, f"field {f.name!r} has dtype {getattr(x, 'dtype', type(x).__name__)}; encode every field as float32")
        ck.require(x.shape[0] == batch, contract, f"field {f.name!r} has batch size {x.shape[0]} for {batch} examples; put the batch first")
        ck.require(bool(torch.isfinite(x).all()), contract, f"field {f.name!r} holds NaN or infinite values")
        if f.layout in ("node", "pair"):
            ck.require(has_mask or x.dim() >= 3, contract, f"field {f.name!r} has layout {f.layout!r} but the State has no B×n 'mask'")
        if f.kind == "categorical":
            ck.require(x.shape[-1] == f.num_classes, contract, f"categorical field {f.name!r} has {x.shape[-1]} classes on its last axis, not num_classes={f.num_classes}")
            mask = field_mask(state, f.layout)
            sums, ones = x.sum(-1), ((x == 0) | (x == 1)).all(-1)
            real = torch.ones_like(sums, dtype=torch.bool) if mask is None else mask.bool()
            ck.require(bool(((sums - 1).abs() < 1e-6)[real].all() and ones[real].all()), contract, f"categorical field {f.name!r} is not one-hot on real positions; encode classes with F.one_hot")
    if has_mask:
        m = state["mask"]
        ck.require(m.dim() == 2 and m.shape[0] == batch, contract, f"mask has shape {tuple(m.shape)}; it must be B×n")
        ck.require(bool(((m == 0) | (m == 1)).all()), contract, "mask must hold only 0 and 1")


def _compare_states(ck: Checker, contract: str, a, b, tol: float, template: str) -> None:
    for k in a:
        if k not in b:
            ck.fail(contract, f"field {k!r} is missing after the round trip")
        if a[k].shape != b[k].shape:
            ck.fail(contract, f"field {k!r} changed shape from {tuple(a[k].shape)} to {tuple(b[k].shape)}")
        diff = max_abs_diff(a[k], b[k])
        if diff > tol:
            ck.fail(contract, template.format(field=repr(k), diff=diff, tol=tol))


def _corruptions(example) -> list[tuple[str, Any]]:
    """Generic invalid elements derived from a valid one (plugins can pass their own ``bad_examples``)."""
    out: list[tuple[str, Any]] = [("an arbitrary object()", object())]
    if isinstance(example, torch.Tensor) and example.is_floating_point() and example.numel():
        nan = example.clone()
        nan.reshape(-1)[0] = float("nan")
        out.append(("an element holding NaN", nan))
        out.append(("an element with twice the last axis", torch.cat([example, example], dim=-1)))
    elif isinstance(example, dict) and example:
        key = next(iter(example))
        out.append((f"an element without key {key!r}", {k: v for k, v in example.items() if k != key}))
    return out


__all__ = ["check_space"]
