"""CPU floating-point mode: subnormal numbers flushed to zero.

Training on a CPU drifts into subnormal floats (magnitudes below 1.2e-38): gradients through saturated gates
(``tanh(a) * sigmoid(b)`` in DiffWave's layers, say) become so small that the hardware takes a slow path for
every operation that touches them. Measured on the two-stage spoken-digit recipe (a DiffWave denoiser over mel
frames): 5 training steps/s at the start fell to 1 step/s after 1,100 steps; the same weights' step took 1.19 s
with subnormals and 0.22 s flushed (one thread). Flushing them changes no value above 1.2e-38.

The mode is a property of each CPU thread, and threads inherit it when they are created, so it must be set
before torch starts its OpenMP workers (its first parallel operation): ``diffkit``'s command line does so
first thing; Python users call :func:`flush_denormals` at the top of their script. ``DIFFKIT_DENORMALS=keep``
leaves the mode alone.
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


__all__ = ["flush_denormals"]
