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
    # the floor depends on the reference set only: computed once per run (bench scores many samplers against it)
    memo = ctx.extras.get("memo", {})
    key = ("sliced-wasserstein-floor", int(n_projections), len(ref), float(ref.double().sum()))
    if key not in memo:
        memo[key] = sliced_wasserstein(ref[:half], ref[half:], n_projections)
    return {"sliced_wasserstein": sliced_wasserstein(gen, ref, n_projections), "sliced_wasserstein_floor": memo[key]}


def bits_per_dim_metric(ctx: EvalContext, n: int = 256, steps: int = 64, divergence: str = "auto", batch_size: int = 128, seed: int = 0) -> dict:
    """``bits_per_dim``: the model's negative log-likelihood of ``n`` reference elements in bits per
    dimension, an upper bound on the discrete data's code length:
    ``(-log p(y) / D - log w) / ln 2`` with ``p`` the probability-flow ODE density
    (:func:`diffkit.likelihood.log_likelihood`), ``y`` the element encoded and uniformly dequantised, and
    ``w`` the width of one quantisation level in the encoded coordinates (``space.bin_width``). Also
    ``bits_per_dim_stderr`` (the standard error over the ``n`` elements). Needs a model (``ctx.extras
    ["denoiser"]``), so it is scored on the reference set and does not depend on the samples; a
    class-conditional model is scored unconditionally (null label). Evaluated once per run."""
    from diffkit.denoiser import NULL_LABEL
    from diffkit.likelihood import bits_per_dim, log_likelihood

    denoiser = ctx.extras.get("denoiser")
    if denoiser is None:
        raise ValueError("bits-per-dim needs the model: run it through diffkit sample/bench, not on sample files alone")
    width = getattr(ctx.space, "bin_width", None)
    if width is None:
        raise ValueError(f"bits-per-dim needs quantised data; the {getattr(ctx.space, 'name', '?')} space has no quantisation levels")
    key = ("bits-per-dim", int(n), int(steps), divergence, int(seed))
    memo = ctx.extras.get("memo", {})
    if key in memo:
        return dict(memo[key])
    reference = list(ctx.reference)[: int(n)]
    if not reference:
        raise ValueError("bits-per-dim needs reference elements; give the run a reference split")
    generator = torch.Generator().manual_seed(int(seed))
    num_classes = int(ctx.extras.get("num_classes") or 0)
    values = []
    for start in range(0, len(reference), int(batch_size)):
        state = ctx.space.collate(reference[start:start + int(batch_size)], train=True, generator=generator)  # dequantised
        cond = torch.full((state.batch_size,), NULL_LABEL, dtype=torch.long) if num_classes else None

        def fn(s, t, cond=cond):
            return denoiser(s, t, cond=cond)

        fn.diffusion = denoiser.diffusion
        dims = sum(state[name][0].numel() for name in denoiser.diffusion.gaussian_fields)
        values.append(bits_per_dim(log_likelihood(fn, state, steps=steps, divergence=divergence, generator=generator), dims, width))
    bpd = torch.cat(values)
    out = {"bits_per_dim": float(bpd.mean()), "bits_per_dim_stderr": float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else 0.0}
    memo[key] = dict(out)
    return out


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
