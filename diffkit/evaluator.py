"""``diffkit eval``: score samples from any generator with a task's metrics.

The samples are read in the modality's natural form by the task's space (``Space.read``); the
reference set is the task's test split, or ``--reference`` read the same way. Samples that cannot be
read or are not elements of the space are never fatal: they count as invalid and are listed with the
reason under ``invalid``. The figures come from the same metric functions ``diffkit sample`` and
``diffkit bench`` use.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from diffkit.evaluation import EvalContext, run_metrics, split_items
from diffkit.recipe import load_dataset, load_recipe


def metric_definitions(names) -> dict:
    """The first paragraph of each metric's docstring: the definition of its figures."""
    from diffkit.registry import RegistryError, load

    out = {}
    for name in names:
        try:
            doc = inspect.getdoc(load("metrics", name)) or ""
        except RegistryError as exc:
            doc = f"unavailable: {exc}"
        out[name] = " ".join(doc.split("\n\n")[0].split())
    return out


def definitions_markdown(first_party_only: bool = False) -> str:
    """Every installed metric's figures and their definitions as markdown (``diffkit eval --definitions``):
    the single source for ``docs/metrics.md`` and ``diffkit eval --help``."""
    from diffkit.registry import discover

    comps = sorted((c for (kind, _), c in discover().items() if kind == "metrics"), key=lambda c: (c.distribution != "diffkit", c.distribution, c.name))
    if first_party_only:
        comps = [c for c in comps if c.distribution == "diffkit" or c.distribution.startswith("diffkit-")]
    lines = ["# Metric definitions", "", "Generated from the metrics' docstrings by `diffkit eval --definitions`; `diffkit eval --help` prints the same text.", ""]
    current = None
    for c in comps:
        if c.distribution != current:
            current = c.distribution
            lines += [f"## {current}", ""]
        lines += [f"- **{c.name}**: {metric_definitions([c.name])[c.name]}", ""]
    return "\n".join(lines)


def check_samples_path(samples: Path) -> None:
    """Refuse, in one line, a samples path that holds nothing: missing, an empty file, or a folder without files."""
    if not samples.exists():
        raise FileNotFoundError(f"{samples} does not exist; pass a file or folder of samples in the task's natural format")
    if samples.is_file() and samples.stat().st_size == 0:
        raise ValueError(f"{samples} is empty: there are no samples to score; pass the file 'diffkit sample' wrote")
    if samples.is_dir() and not any(p.is_file() and not p.name.startswith(".") for p in samples.rglob("*")):
        raise ValueError(f"{samples} is a folder with no files: there are no samples to score; pass the folder 'diffkit sample' wrote")


def evaluate_path(task: str, samples: str | Path, reference: str | Path | None = None) -> dict:
    recipe = load_recipe(task)
    names = recipe.get("eval", {}).get("metrics", [])
    if not names:
        raise ValueError(f"task {task!r} names no metrics in its [eval] table; choose a task with metrics (see 'diffkit plugins')")
    samples = Path(samples)
    check_samples_path(samples)  # before any dataset is loaded (QM9 takes minutes)
    train = load_dataset(recipe, "train")
    space = train.space
    items, labels, failures = space.read_labelled(samples)
    if not items:
        first = f"; the first: {failures[0]['item']}: {failures[0]['reason']}" if failures else ""
        raise ValueError(f"no sample in {samples} could be read ({len(failures)} unreadable{first}); pass samples in task {task!r}'s natural format")
    if reference is not None:
        ref_items, ref_labels, ref_failures = space.read_labelled(Path(reference))
    else:
        ref_items, ref_labels = split_items(load_dataset(recipe, recipe.get("eval", {}).get("reference", "test")))
        ref_items, ref_failures = [space.validate(x) for x in ref_items], []
    ctx = EvalContext(generated=items, labels=labels, reference=ref_items, reference_labels=ref_labels, train=train, space=space,
                      extras={"failures": failures, "n_total": len(items) + len(failures), "source": str(samples)})
    figures = run_metrics(names, ctx, recipe.get("eval", {}).get("options", {}))
    return {
        "task": task, "samples": str(samples), "n_read": len(items), "n_labelled": 0 if labels is None else len(labels), "n_invalid": len(failures), "invalid": failures,
        "reference": str(reference) if reference else f"{task}:{recipe.get('eval', {}).get('reference', 'test')}", "n_reference": len(ref_items),
        "reference_unreadable": len(ref_failures), "figures": figures, "definitions": metric_definitions(names),
    }
