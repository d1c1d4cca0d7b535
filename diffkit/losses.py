"""Training losses for a whole State: the sum over fields of each field's family loss
(:meth:`diffkit.processes.FieldProcess.loss`), weighted by ``field_weights``.

Gaussian fields: ``w(t) * mean ||F - target||^2`` in the field's parameterisation, with ``w`` from
:func:`diffkit.denoiser.loss_weight` (``simple``, ``snr``, ``min-snr``). Score parameterisation uses
denoising score matching with NCSN's ``lambda(sigma) = sigma^2``: ``||sigma F + eps||^2``.

Categorical fields: cross-entropy of the predicted ``p(x_0 | x_t)`` against ``x_0`` (DiGress), plus,
with ``vlb_weight > 0``, the variational-bound term ``KL(q(x_s | x_t, x_0) || p(x_s | x_t))`` at
``s = t - 1/steps`` (D3PM's hybrid loss). Masked positions (padding, the diagonal of pair fields)
contribute nothing.
"""
from __future__ import annotations

from typing import Mapping

import torch

from diffkit.denoiser import NULL_LABEL, Denoiser
from diffkit.state import State


def diffusion_loss(
    denoiser: Denoiser,
    x0: State,
    generator: torch.Generator | None = None,
    *,
    weighting: str = "simple",
    gamma: float = 5.0,
    cond: torch.Tensor | None = None,
    p_uncond: float = 0.0,
    field_weights: Mapping[str, float] | None = None,
    vlb_weight: float = 0.0,
    vlb_steps: int = 1000,
    t: torch.Tensor | None = None,
    shard: slice | None = None,
) -> tuple[torch.Tensor, dict]:
    """Draw ``t`` and noise, run the backbone once, and return ``(loss, {field: loss})``.

    ``generator`` drives every random draw here, so a run is reproducible from its seed. With
    ``shard``, the draws are made for the whole batch and only that slice is evaluated: each
    data-parallel rank then sees exactly the noise a single process would give those examples.
    """
    diffusion = denoiser.diffusion
    B = x0.batch_size
    if t is None:
        t = diffusion.sample_t(B, generator).to(x0.device)
    noisy, eps = diffusion.noise(x0, t, generator)
    if cond is not None and p_uncond > 0:
        drop = torch.rand(B, generator=generator).to(cond.device) < p_uncond
        cond = torch.where(drop, torch.full_like(cond, NULL_LABEL), cond)
    if shard is not None:
        x0, noisy, t = x0.index(shard), noisy.index(shard), t[shard]
        eps = {k: v[shard] for k, v in eps.items()}
        cond = None if cond is None else cond[shard]
    raw = denoiser.raw(noisy, t, cond)
    weights = dict(field_weights or {})
    total = torch.zeros((), device=x0.device)
    logs = {}
    for name, proc in diffusion.processes.items():
        per_example = proc.loss(raw[name], x0[name], noisy[name], eps.get(name), t, diffusion.mask_for(x0, name),
                                parameterization=denoiser.parameterization.get(name), sigma_data=denoiser.sigma_data,
                                weighting=weighting, gamma=gamma, vlb_weight=vlb_weight, vlb_steps=vlb_steps)
        loss = per_example.mean()
        logs[name] = float(loss.detach())
        total = total + weights.get(name, 1.0) * loss
    return total, logs
