"""What metrics receive, and how a run's metrics are computed."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from diffkit.metrics import sliced_wasserstein


@dataclass
class EvalContext:
    """Everything a metric may look at. ``generated`` and ``reference`` are decoded elements."""

    generated: list
    reference: list = field(default_factory=list)
    labels: list | None = None
    reference_labels: list | None = None
    train: Any = None
    space: Any = None
    out_dir: Path | None = None
    extras: dict = field(default_factory=dict)


def sliced_wasserstein_metric(ctx: EvalContext, n_projections: int = 256) -> dict:
    """``sliced_wasserstein``: SW2 between generated and reference vectors, and ``sliced_wasserstein_floor``:
    SW2 between two halves of the reference set (the two-sample noise floor at that size)."""
    gen = torch.stack([torch.as_tensor(x).reshape(-1) for x in ctx.generated])
    ref = torch.stack([torch.as_tensor(x).reshape(-1) for x in ctx.reference])
    half = len(ref) // 2
    return {
        "sliced_wasserstein": sliced_wasserstein(gen, ref, n_projections),
        "sliced_wasserstein_floor": sliced_wasserstein(ref[:half], ref[half:], n_projections),
    }


def split_items(dataset) -> tuple[list, list | None]:
    """Split dataset items into elements and labels (``None`` when the data carries no labels)."""
    elements, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], (int, torch.Tensor)) and not isinstance(item[0], (int, float)):
            elements.append(item[0])
            labels.append(int(item[1]))
        else:
            elements.append(item)
    return elements, (labels if len(labels) == len(elements) else None)


def run_metrics(names: Sequence[str], ctx: EvalContext, options: dict | None = None) -> dict:
    """Run each registered metric; a metric that fails is reported under ``errors`` (never fatal)."""
    from diffkit.registry import load

    results, errors = {}, {}
    for name in names:
        try:
            fn = load("metrics", name)
            values = fn(ctx, **(options or {}).get(name, {}))
            for k, v in values.items():
                results[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        except Exception as exc:  # noqa: BLE001 - reported in the output
            errors[name] = f"{type(exc).__name__}: {exc}"
    if errors:
        results["errors"] = errors
    return results


def finite_figures(results: dict) -> bool:
    return all(math.isfinite(v) for v in results.values() if isinstance(v, float))
