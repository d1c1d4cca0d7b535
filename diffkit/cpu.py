"""CPU floating-point mode: subnormal numbers flushed to zero; and where bfloat16 pays.

Training on a CPU drifts into subnormal floats (magnitudes below 1.2e-38): gradients through saturated gates
(``tanh(a) * sigmoid(b)`` in DiffWave's layers, say) become so small that the hardware takes a slow path for
every operation that touches them. Measured on the two-stage spoken-digit recipe (a DiffWave denoiser over mel
frames): 5 training steps/s at the start fell to 1 step/s after 1,100 steps; the same weights' step took 1.19 s
with subnormals and 0.22 s flushed (one thread). Flushing them changes no value above 1.2e-38.

The mode is a property of each CPU thread, and threads inherit it when they are created, so it must be set
before torch starts its OpenMP workers (its first parallel operation): ``diffkit``'s command line does so
first thing; Python users call :func:`flush_denormals` at the top of their script. ``DIFFKIT_DENORMALS=keep``
leaves the mode alone.

Training precision (``[train] precision``, the log-mel vocoder's ``learned_precision``): ``"fp32"``, ``"bf16"`` (the
forward pass under bfloat16 autocast; weights, optimiser state and EMA stay float32) or ``"auto"``, which is bf16
where :func:`native_bf16` says the device multiplies bfloat16 matrices in hardware and fp32 elsewhere. A training
step of the spoken-digit denoiser takes 0.55 of its float32 time on an Intel Xeon with AMX and 0.52-0.60 on an AMD EPYC
with AVX-512 BF16 (``benchmarks/cpu_precision.py``, 2026-12-05); a CPU with neither emulates bfloat16, which is no
gain and may be a loss.
"""
from __future__ import annotations

import os


def flush_denormals() -> bool:
    """Flush subnormal floats to zero on this thread and the threads it starts from now on (x86 SSE3 and
    ARM); returns whether the mode is on. ``DIFFKIT_DENORMALS=keep`` makes it a no-op (returns False)."""
    if os.environ.get("DIFFKIT_DENORMALS", "").strip().lower() == "keep":
        return False
    import torch

    return bool(torch.set_flush_denormal(True))


PRECISIONS = ("fp32", "bf16", "auto")
"""The training precisions a recipe may name (module docstring)."""


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a CPU with Intel AMX tiles or with the AVX-512
    BF16 instructions (``amx_tile`` / ``avx512_bf16`` in ``/proc/cpuinfo``; the gain was measured on one of each), or
    a CUDA device that supports bfloat16."""
    import torch

    kind = str(device).split(":")[0]
    if kind == "cpu":
        checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
        return any(bool(check()) for check in checks if check is not None)
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return False


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line ``ValueError`` naming the choices (the one check
    behind ``[train] precision`` and the vocoder's ``learned_precision``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (bf16: the forward pass under bfloat16 autocast; auto: bf16 "
                         f"where the device has bfloat16 units, see diffkit.cpu), got {precision!r}")
    return precision


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``"fp32"`` or ``"bf16"`` for a recipe's ``precision``: ``"auto"`` is ``"bf16"`` where :func:`native_bf16`,
    else ``"fp32"``; anything outside :data:`PRECISIONS` is refused in one line (:func:`check_precision`)."""
    if check_precision(precision) == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


__all__ = ["PRECISIONS", "check_precision", "flush_denormals", "native_bf16", "resolve_precision"]
