"""Conformance checks for datasets and metrics (docs/contracts.md, "Dataset" and "Metric")."""
from __future__ import annotations

import math

import torch

from diffkit.evaluation import EvalContext, split_items
from diffkit.spaces.base import Space
from diffkit.testing.errors import Checker, component_name, max_abs_diff
from diffkit.testing.spaces import check_space

SPLITS = ("train", "val", "test")


def check_dataset(factory, *, options: dict | None = None, name: str | None = None, n_examples: int = 8, splits=SPLITS, space: bool = True) -> list[str]:
    """Check a dataset factory; returns the contracts checked.

    Rules enforced:

    - ``[factory]``: ``factory(split=s, **options)`` for every split in ``splits`` returns an object with
      ``__len__`` (> 0), ``__getitem__`` and a ``space`` attribute that is a diffkit Space.
    - ``[items]``: items are elements of that space, or ``(element, label)`` with a non-negative int label;
      either all items carry labels or none does.
    - ``[determinism]``: building the same split twice gives the same items (datasets are deterministic for a seed).
    - and the dataset's space passes :func:`check_space` on its first ``n_examples`` items (``space=False`` skips it).
    """
    options = dict(options or {})
    ck = Checker("dataset", name or component_name(factory))
    checked = []
    built = {}
    for split in splits:
        with ck.step("factory", f"factory(split={split!r}, **{options})"):
            ds = factory(split=split, **options)
        ck.require(hasattr(ds, "__len__") and hasattr(ds, "__getitem__"), "factory", f"split {split!r} returned {type(ds).__name__}, which has no __len__/__getitem__; return a torch.utils.data.Dataset")
        ck.require(len(ds) > 0, "factory", f"split {split!r} is empty; every split needs elements")
        ck.require(isinstance(getattr(ds, "space", None), Space), "factory", f"split {split!r} has no .space (a diffkit Space); set dataset.space")
        built[split] = ds
    checked.append("factory")

    ds = built[splits[0]]
    k = min(n_examples, len(ds))
    with ck.step("items", f"reading the first {k} items"):
        head = [ds[i] for i in range(k)]
    elements, labels = split_items(head)
    if labels is not None:
        ck.require(all(isinstance(lab, int) and lab >= 0 for lab in labels), "items", f"labels must be non-negative ints, got {labels[:5]}")
    for i, x in enumerate(elements):
        with ck.step("items", f"space.validate(item {i})"):
            ds.space.validate(x)
    labelled = [isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], (int, torch.Tensor)) and not isinstance(x[0], (int, float)) for x in head]
    ck.require(all(labelled) or not any(labelled), "items", "some items carry labels and others do not; return (element, label) for every item or for none")
    checked.append("items")

    with ck.step("determinism", f"factory(split={splits[0]!r}) a second time"):
        again = factory(split=splits[0], **options)
    ck.require(len(again) == len(ds), "determinism", f"two builds have {len(ds)} and {len(again)} items; build deterministically from the seed")
    other, _ = split_items([again[i] for i in range(k)])
    a, b = ds.space.collate(elements), again.space.collate(other)
    for key in a:
        diff = max_abs_diff(a[key], b[key]) if a[key].shape == b[key].shape else math.inf
        ck.require(diff == 0.0, "determinism", f"two builds of split {splits[0]!r} differ (field {key!r} by {diff:.3g}); draw only from a generator seeded by the options")
    checked.append("determinism")

    if space and len(elements) >= 2:
        check_space(ds.space, elements, write=True)
        checked.append("space")
    return checked


def check_metric(metric, ctx: EvalContext, *, options: dict | None = None, name: str | None = None) -> list[str]:
    """Check a metric on an evaluation context; returns the contracts checked.

    Rules enforced:

    - ``[output]``: ``metric(ctx, **options)`` returns a non-empty dict of string names to finite floats (or ints).
    - ``[determinism]``: calling it twice on the same context gives the same figures.
    - ``[identity]``: a figure named as a distance (ending in ``error``, ``distance`` or ``wasserstein``) is never
      negative, and scoring the reference against itself gives no more than scoring the generated samples.
    """
    ck = Checker("metric", name or component_name(metric))
    options = dict(options or {})
    with ck.step("output", "metric(ctx, **options)"):
        first = metric(ctx, **options)
    ck.require(isinstance(first, dict) and first, "output", f"the metric returned {type(first).__name__}; return a non-empty dict {{name: float}}")
    for k, v in first.items():
        ck.require(isinstance(k, str), "output", f"figure name {k!r} is not a string")
        ck.require(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)), "output", f"figure {k!r} is {v!r}; return finite floats")
    with ck.step("determinism", "a second call"):
        second = metric(ctx, **options)
    changed = [k for k in first if first[k] != second.get(k)]
    ck.require(not changed, "determinism", f"figure(s) {changed} change between two calls on the same samples; seed any random projections")
    distances = [k for k in first if k.endswith(("error", "distance", "wasserstein")) and not k.endswith("floor")]
    if distances and ctx.reference:
        same = EvalContext(generated=list(ctx.reference), reference=list(ctx.reference), labels=ctx.reference_labels,
                           reference_labels=ctx.reference_labels, train=ctx.train, space=ctx.space, out_dir=ctx.out_dir)
        with ck.step("identity", "metric(ctx with generated = reference)"):
            zero = metric(same, **options)
        for k in distances:
            ck.require(float(first[k]) >= -1e-9, "identity", f"distance {k!r} is negative ({first[k]:.3g})")
            ck.require(float(zero[k]) <= float(first[k]) + 1e-6, "identity", f"distance {k!r} is {zero[k]:.3g} for samples equal to the reference but {first[k]:.3g} for others; a distance is smallest at identity")
    return ["output", "determinism"] + (["identity"] if distances else [])


__all__ = ["SPLITS", "check_dataset", "check_metric"]
