"""Training losses for a whole State.

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
import torch.nn.functional as F

from diffkit.denoiser import NULL_LABEL, Denoiser, _coef, loss_weight, target_for
from diffkit.state import State


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None, feature_dims: int) -> torch.Tensor:
    """Per-example mean of ``values`` (B×...) over unmasked positions; ``mask`` covers all but the last ``feature_dims`` axes."""
    if mask is None:
        return values.reshape(values.shape[0], -1).mean(1)
    m = mask.to(values.dtype)
    for _ in range(feature_dims):
        m = m.unsqueeze(-1)
    m = m.expand_as(values)
    return (values * m).reshape(values.shape[0], -1).sum(1) / m.reshape(m.shape[0], -1).sum(1).clamp_min(1.0)


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
        mask = diffusion.mask_for(x0, name)
        if proc.kind == "gaussian":
            p = denoiser.parameterization[name]
            a, s = _coef(proc, t, x0[name])
            target = target_for(p, x0[name], eps[name], a, s, denoiser.sigma_data)
            residual = raw[name].float() - target
            if p == "score":
                residual = residual * s
            feature_dims = x0[name].dim() - (1 if mask is None else mask.dim())
            per_example = _masked_mean(residual.pow(2), mask, feature_dims)
            snr_t = torch.exp(proc.log_snr(t)).to(per_example)
            sig = (proc.sigma(t) / proc.alpha(t)).to(per_example)
            per_example = per_example * loss_weight(weighting, p, snr_t, sig, denoiser.sigma_data, gamma)
        else:
            logits = raw[name].float()
            labels = x0[name].argmax(-1)
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none").reshape(labels.shape)
            per_example = _masked_mean(ce, mask, 0)
            if vlb_weight > 0:
                per_example = per_example + vlb_weight * _categorical_kl(proc, noisy[name], x0[name], logits.softmax(-1), t, vlb_steps, mask)
        loss = per_example.mean()
        logs[name] = float(loss.detach())
        total = total + weights.get(name, 1.0) * loss
    return total, logs


def _categorical_kl(proc, xt, x0, x0_probs, t, steps, mask):
    s = (t - 1.0 / steps).clamp_min(0.0)
    q = proc.posterior_probs(xt, x0, t, s)
    p = proc.reverse_probs(xt, x0_probs, t, s)
    kl = (q * (torch.log(q.clamp_min(1e-20)) - torch.log(p.clamp_min(1e-20)))).sum(-1)
    return _masked_mean(kl, mask, 0)
