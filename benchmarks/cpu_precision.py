"""Training steps in float32 and under bfloat16 autocast, side by side on this CPU.

    python benchmarks/cpu_precision.py [--threads 1] [--repeats 5] [--out benchmarks/results/cpu-precision-DATE.json]

For each network, one training step at the batch its recipe trains with, taken by the project's own code (the
denoiser's loss by :func:`diffkit.losses.diffusion_loss`, the vocoder's step by
:func:`diffkit_audio.vocoder.train_vocoder`), in ``fp32`` and in ``bf16`` (the forward pass under
``torch.autocast(dtype=torch.bfloat16)``, as ``[train] precision = "bf16"`` and ``learned_precision = "bf16"`` run it;
weights and optimiser stay float32). The two precisions are
interleaved (fp32, bf16, fp32, ...) and each figure is the median of ``--repeats`` timings of 10 steps, so a load
that comes and goes on a shared machine touches both alike. Networks:

- ``diffusion``: the ``spoken-digits-mel`` denoiser (1-D DiffWave over 40 log-mel bands, 128 channels, 12 layers,
  class-conditional), batch 32 of 64 frames, v-prediction loss;
- ``vocoder-128``, ``vocoder-256``: the ``IstftVocoder`` (8 blocks, 128 / 256 wide), batch 16 of 0.512 s clips at 8 kHz,
  the vocoder's spectral and log-mel losses.

Whether bf16 pays depends on the CPU: with bfloat16 matrix units or instructions (Intel AMX: ``amx_bf16`` in
``/proc/cpuinfo``; AVX-512 BF16: ``avx512_bf16``, on Intel Cooper Lake and later and AMD Zen 4 and later) the matrix
products run natively; without them they are emulated. The report names the flags.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import time
from pathlib import Path

import torch


def cpu_flags() -> dict:
    """The CPU's model name and its bfloat16-related flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {"model": model, "bf16_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx"))}


def diffusion_step():
    """One step as the trainer takes it: :func:`diffkit.losses.diffusion_loss` on the recipe's denoiser (VP-cosine,
    v-prediction, labels dropped at p_uncond 0.1), AdamW, the gradient clipped to norm 1."""
    from diffkit.denoiser import Denoiser
    from diffkit.losses import diffusion_loss
    from diffkit.processes import Diffusion, VPCosine
    from diffkit.state import State

    from diffkit_audio.backbone import DiffWave

    net = DiffWave("x", 40, 128, 12, 6, 10, 0, 64, 128, 256)
    denoiser = Denoiser(net, Diffusion({"x": VPCosine()}), "v")
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    x0, labels = State(x=torch.randn(32, 40, 64, generator=g)), torch.randint(10, (32,), generator=g)

    def step(precision: str) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = diffusion_loss(denoiser, x0, g, cond=labels, p_uncond=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    return step


def vocoder_step(channels: int):
    """A one-step call of :func:`diffkit_audio.vocoder.train_vocoder` itself (its augmentation at the recipe's level 1,
    losses, clipping and optimiser); each call also computes 16 clips' frames and a fresh optimiser, the same cost in
    both precisions."""
    from diffkit_audio.backbone import mel_spectrogram
    from diffkit_audio.vocoder import IstftVocoder, train_vocoder

    net = IstftVocoder(40, 64, channels, 8)
    waves = 0.1 * torch.randn(16, 1, 4096, generator=torch.Generator().manual_seed(0))
    log_mel = lambda w: mel_spectrogram(w, 8000)  # noqa: E731

    def step(precision: str) -> None:
        train_vocoder(net, waves, log_mel, steps=1, batch_size=16, noise=1.0, precision=precision)

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=f"benchmarks/results/cpu-precision-{dt.date.today().isoformat()}.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffkit.cpu import flush_denormals

    flush_denormals()
    networks = {"diffusion": diffusion_step(), "vocoder-128": vocoder_step(128), "vocoder-256": vocoder_step(256)}
    report = {"date": dt.date.today().isoformat(), "torch": torch.__version__, "threads": args.threads, "cpu": cpu_flags(),
              "load_average_start": os.getloadavg()[0], "repeats": args.repeats, "rows": []}
    for name, step in networks.items():
        for precision in ("fp32", "bf16"):  # warm-up: allocator, oneDNN kernels
            for _ in range(3):
                step(precision)
        times = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for precision in ("fp32", "bf16"):
                t0 = time.perf_counter()
                for _ in range(10):
                    step(precision)
                times[precision].append((time.perf_counter() - t0) / 10 * 1000)
        fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        row = {"network": name, "fp32_ms": fp32, "bf16_ms": bf16, "bf16_over_fp32": bf16 / fp32, "fp32_all_ms": times["fp32"], "bf16_all_ms": times["bf16"]}
        report["rows"].append(row)
        print(f"{name}: fp32 {fp32:.1f} ms/step, bf16 {bf16:.1f} ms/step, ratio {bf16 / fp32:.2f}", flush=True)
    report["load_average_end"] = os.getloadavg()[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    cpu = report["cpu"]
    lines = [f"# Training steps in fp32 and bf16 autocast ({report['date']})", "",
             f"{cpu.get('model', '?')} (flags: {', '.join(cpu.get('bf16_flags', [])) or 'none'}), torch {report['torch']}, {args.threads} thread(s); "
             f"medians of {args.repeats} × 10 steps, the precisions interleaved; load average {report['load_average_start']:.1f} at the start, "
             f"{report['load_average_end']:.1f} at the end.", "",
             "| network | fp32 ms/step | bf16 ms/step | bf16 / fp32 |", "|---|---:|---:|---:|"]
    lines += [f"| {r['network']} | {r['fp32_ms']:.1f} | {r['bf16_ms']:.1f} | {r['bf16_over_fp32']:.2f} |" for r in report["rows"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
