"""Conformance checks for backbones (docs/contracts.md, "Backbone")."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from diffkit.processes.categorical import CategoricalProcess, symmetrise_indices
from diffkit.processes.composite import Diffusion
from diffkit.spaces.base import Space
from diffkit.state import State
from diffkit.testing.errors import Checker, component_name, max_abs_diff

EQUIVARIANCES = ("permutation",)
"""Symmetries a backbone may declare with a class attribute ``equivariance`` (a string or a tuple of them)."""


def example_state(space: Space, diffusion: Diffusion, batch: int, generator: torch.Generator, examples: Sequence[Any] | None = None, stats: dict | None = None) -> State:
    """A clean batch State ``x_0``: collated ``examples`` if given, else random values shaped by the template
    (conditioning fields, which have no process, get standard normal values)."""
    if examples:
        items = list(examples)
        items = (items * batch)[:max(batch, 1)] if len(items) < batch else items[:batch]
        return space.collate(items)
    state = space.template(batch, stats or {}, generator)
    out = State(state)
    for f in space.fields:
        like = state[f.name]
        if f.name not in diffusion.processes:
            out[f.name] = torch.randn(like.shape, generator=generator)
            continue
        proc = diffusion.processes[f.name]
        if f.kind == "categorical":
            idx = torch.randint(f.num_classes, like.shape[:-1], generator=generator)
            if f.symmetric:
                idx = symmetrise_indices(idx)
            out[f.name] = F.one_hot(idx, f.num_classes).float()
        else:
            out[f.name] = proc.project(0.5 * torch.randn(like.shape, generator=generator), diffusion.mask_for(state, f.name))
    return out


def check_backbone(factory_or_module, space: Space, diffusion: Diffusion, *, examples: Sequence[Any] | None = None, stats: dict | None = None,
                   num_classes: int = 0, options: dict | None = None, name: str | None = None, batch: int = 4, seed: int = 0, atol: float = 1e-4) -> list[str]:
    """Check a backbone factory (or a built module) for ``space`` and ``diffusion``; returns the contracts checked.

    Rules enforced:

    - ``[build]``: ``factory(space, diffusion, num_classes=..., **options)`` returns a ``torch.nn.Module``.
    - ``[outputs]``: ``forward(state, t, cond)`` returns a dict with one finite float32 tensor per diffused
      field: the field's shape for Gaussian fields, ``...×num_classes`` logits for categorical ones
      (whose input is one-hot over the process's ``num_states``); with ``num_classes > 0`` labels and
      the null label ``-1`` are accepted.
    - ``[batch-independence]``: in eval mode an example's output does not depend on the other examples.
    - ``[mask]``: values at padded nodes (``state["mask"] == 0``) do not change outputs at real nodes.
    - ``[equivariance]``: a declared ``equivariance = "permutation"`` holds: permuting the nodes (node and
      pair fields and the mask) permutes the outputs the same way.
    - ``[gradients]``: the diffusion loss back-propagates finite gradients into the parameters.
    - ``[checkpoint]``: saving ``state_dict()`` with safetensors and loading it into a freshly built
      (differently initialised) backbone gives identical outputs.
    - ``[determinism]``: the same seed builds the same weights, and eval-mode forward passes repeat exactly.
    """
    from diffkit.denoiser import Denoiser
    from diffkit.losses import diffusion_loss

    options = dict(options or {})
    is_module = isinstance(factory_or_module, nn.Module)
    ck = Checker("backbone", name or (type(factory_or_module).__name__ if is_module else component_name(factory_or_module)))
    checked = []

    def build(build_seed: int) -> nn.Module:
        torch.manual_seed(build_seed)
        if is_module:
            return factory_or_module
        with ck.step("build", f"factory(space, diffusion, num_classes={num_classes}, **{options})"):
            module = factory_or_module(space, diffusion, num_classes=num_classes, **options)
        ck.require(isinstance(module, nn.Module), "build", f"the factory returned {type(module).__name__}; return a torch.nn.Module")
        return module

    model = build(seed).eval()
    checked.append("build")
    gen = torch.Generator().manual_seed(seed)
    x0 = example_state(space, diffusion, batch, gen, examples, stats)
    B = x0.batch_size
    t = diffusion.sample_t(B, gen).float()
    with ck.step("outputs", "diffusion.noise(x0, t)"):
        xt, _ = diffusion.noise(x0, t.double(), gen)
    cond = torch.arange(B) % num_classes if num_classes else None

    def forward(m, state, times, labels=cond):
        with torch.no_grad():
            return m(state, times, labels)

    with ck.step("outputs", "forward(state, t, cond)"):
        out = forward(model, xt, t)
    _check_outputs(ck, out, xt, diffusion, space)
    if num_classes:
        with ck.step("outputs", "forward with the null label -1"):
            _check_outputs(ck, forward(model, xt, t, torch.full((B,), -1)), xt, diffusion, space)
    checked.append("outputs")

    # determinism of eval-mode forward passes (checked first: a random forward breaks every comparison below)
    with ck.step("determinism", "a second forward pass"):
        out2 = forward(model, xt, t)
    for k in diffusion.processes:
        diff = max_abs_diff(out2[k], out[k])
        ck.require(diff == 0.0, "determinism", f"two eval-mode forward passes differ by {diff:.3g} in output {k!r}; draw no random numbers in eval mode")

    # batch independence
    with ck.step("batch-independence", "forward on the first example alone"):
        single = forward(model, xt.index(slice(0, 1)), t[:1], None if cond is None else cond[:1])
    for k in diffusion.processes:
        diff = _masked_diff(single[k], out[k][:1], xt.index(slice(0, 1)), diffusion, k)
        ck.require(diff <= atol, "batch-independence", f"output {k!r} of the first example changes by {diff:.3g} when the batch has other examples; do not mix examples (BatchNorm, batch statistics)")
    checked.append("batch-independence")

    # padded nodes are ignored
    if "mask" in xt and bool((xt["mask"] == 0).any()):
        noisy = State(xt)
        pad = xt["mask"] == 0
        for k in diffusion.processes:
            layout = diffusion.layouts[k]
            junk = 5.0 * torch.randn(xt[k].shape, generator=gen)
            where = pad if layout == "node" else (pad[:, :, None] | pad[:, None, :]) if layout == "pair" else None
            if where is None:
                continue
            w = where.reshape(*where.shape, *([1] * (xt[k].dim() - where.dim())))
            noisy[k] = torch.where(w, junk, xt[k])
        with ck.step("mask", "forward with junk at padded nodes"):
            out_junk = forward(model, noisy, t)
        for k in diffusion.processes:
            diff = _masked_diff(out_junk[k], out[k], xt, diffusion, k)
            ck.require(diff <= atol, "mask", f"values at padded nodes change output {k!r} at real nodes by {diff:.3g}; multiply messages and pooling by state['mask']")
        checked.append("mask")

    # declared equivariances
    declared = getattr(model, "equivariance", None) or ()
    declared = (declared,) if isinstance(declared, str) else tuple(declared)
    for sym in declared:
        ck.require(sym in EQUIVARIANCES, "equivariance", f"declares unknown equivariance {sym!r}; declare one of {EQUIVARIANCES}")
        node_fields = [k for k in diffusion.processes if diffusion.layouts[k] in ("node", "pair")]
        ck.require(node_fields, "equivariance", "declares permutation equivariance but the space has no node or pair fields to permute")
        n = xt[node_fields[0]].shape[1]
        perm = torch.randperm(n, generator=gen)
        with ck.step("equivariance", "forward on permuted nodes"):
            out_p = forward(model, _permute(xt, diffusion, perm), t)
        expected = _permute(State({k: out[k] for k in diffusion.processes}), diffusion, perm)
        for k in diffusion.processes:
            diff = _masked_diff(out_p[k], expected[k], _permute(xt, diffusion, perm), diffusion, k)
            ck.require(diff <= 1e-3, "equivariance", f"declares permutation equivariance but permuting the nodes changes output {k!r} by {diff:.3g} beyond the permutation; remove position-dependent layers or the declaration")
        checked.append("equivariance")

    # gradients through the diffusion loss
    model.train()
    denoiser = Denoiser(model, diffusion, "eps")
    model.zero_grad(set_to_none=True)
    with ck.step("gradients", "diffusion_loss(...).backward()"):
        loss, _ = diffusion_loss(denoiser, x0, torch.Generator().manual_seed(seed), cond=cond)
        loss.backward()
    ck.require(bool(torch.isfinite(loss)), "gradients", f"the diffusion loss is {float(loss.detach())}; outputs must be finite")
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad for p in params if p.grad is not None]
    ck.require(params and grads, "gradients", "no parameter received a gradient; the outputs must depend on trainable parameters")
    ck.require(all(bool(torch.isfinite(g).all()) for g in grads), "gradients", "a gradient holds NaN or infinite values")
    model.zero_grad(set_to_none=True)
    model.eval()
    checked.append("gradients")

    # checkpoint round trip through safetensors
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "backbone.safetensors"
        with ck.step("checkpoint", "safetensors save_file(state_dict())"):
            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
        if is_module:
            fresh = copy.deepcopy(model)
            with torch.no_grad():
                for p in fresh.parameters():
                    p.add_(torch.randn(p.shape, generator=gen).to(p))
        else:
            fresh = build(seed + 1)
        fresh.eval()
        with ck.step("checkpoint", "load_state_dict(load_file(...), strict=True)"):
            fresh.load_state_dict(load_file(str(path)), strict=True)
        with ck.step("checkpoint", "forward of the reloaded backbone"):
            out_loaded = forward(fresh, xt, t)
    for k in diffusion.processes:
        diff = max_abs_diff(out_loaded[k], out[k])
        ck.require(diff == 0.0, "checkpoint", f"output {k!r} differs by {diff:.3g} after a safetensors state_dict round trip; keep every tensor that shapes the output in parameters or persistent buffers")
    checked.append("checkpoint")

    # determinism of the weights
    if not is_module:
        again = build(seed).eval()
        sd1, sd2 = model.state_dict(), again.state_dict()
        same = sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
        ck.require(same, "determinism", "two builds under the same torch.manual_seed have different weights; initialise only from torch's global generator")
    checked.append("determinism")
    return checked


def _check_outputs(ck: Checker, out, xt: State, diffusion: Diffusion, space: Space) -> None:
    ck.require(isinstance(out, dict), "outputs", f"forward returned {type(out).__name__}; return a dict {{field: tensor}}")
    for k, proc in diffusion.processes.items():
        ck.require(k in out, "outputs", f"forward returned no output for field {k!r} (it returned {list(out)}); give one per diffused field")
        y = out[k]
        ck.require(isinstance(y, torch.Tensor) and y.dtype == torch.float32, "outputs", f"output {k!r} has dtype {getattr(y, 'dtype', type(y).__name__)}; return float32")
        expected = tuple(proc.output_shape(xt[k].shape))
        ck.require(tuple(y.shape) == expected, "outputs", f"output {k!r} has shape {tuple(y.shape)}; its process ({type(proc).__name__}) reads outputs of shape {expected}"
                   + (" (logits over the data classes)" if isinstance(proc, CategoricalProcess) else ""))
        ck.require(bool(torch.isfinite(y).all()), "outputs", f"output {k!r} holds NaN or infinite values")


def _masked_diff(a: torch.Tensor, b: torch.Tensor, state: State, diffusion: Diffusion, field: str) -> float:
    mask = diffusion.mask_for(state, field)
    if mask is None:
        return max_abs_diff(a, b)
    m = mask.bool().reshape(*mask.shape, *([1] * (a.dim() - mask.dim())))
    return max_abs_diff(torch.where(m, a, 0.0), torch.where(m, b, 0.0))


def _permute(state: State, diffusion: Diffusion, perm: torch.Tensor) -> State:
    out = State(state)
    if "mask" in state:
        out["mask"] = state["mask"][:, perm]
    for k in diffusion.processes:
        if k not in state:
            continue
        layout = diffusion.layouts[k]
        if layout == "node":
            out[k] = state[k][:, perm]
        elif layout == "pair":
            out[k] = state[k][:, perm][:, :, perm]
    return out


__all__ = ["EQUIVARIANCES", "check_backbone", "example_state"]
