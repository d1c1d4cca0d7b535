"""Samplers on the exact-score oracle: sliced Wasserstein-2 against NFE, and the engine's per-step overhead.

    python benchmarks/samplers.py [--out benchmarks/results] [--quick]

Figures (printed, and written to OUT/samplers.json with a plot OUT/samplers.png):
1. SW2 between samples and fresh target draws for every sampler and schedule at NFE in {5, 10, 20, 50}
   on a 2-D 8-component ring (20,000 samples) and a 16-D mixture, with the two-sample noise floor.
2. Per-step overhead: a sampler driven by a free denoiser (it returns a precomputed x0) against the
   same update written as bare tensor arithmetic with precomputed coefficients, on 20,000 x 2 samples;
   medians of repeated runs measured side by side, one thread.
Comparison with diffusers' schedulers and k-diffusion's samplers is in peers.py (benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from diffkit.denoiser import Denoiser, guided
from diffkit.metrics import sliced_wasserstein
from diffkit.oracle import AnalyticBackbone, random_mixture, ring
from diffkit.processes import Diffusion, VPLinear
from diffkit.samplers import SAMPLERS, make_times, steps_for_nfe
from diffkit.state import State

SCHEDULES = ("uniform", "logsnr", "karras")
SAMPLER_OPTIONS = {"langevin": {"n_steps": 5, "step_size": 1e-4}, "pc": {"n_corrector": 1}}


def quality(n: int, nfes: list[int], mixtures: dict) -> list[dict]:
    rows = []
    proc = VPLinear()
    diff = Diffusion({"x": proc})
    for mix_name, mix in mixtures.items():
        fn = guided(Denoiser(AnalyticBackbone(mix, proc, "eps"), diff, "eps"))
        target = mix.sample(n, torch.Generator().manual_seed(100))
        floor = sliced_wasserstein(mix.sample(n, torch.Generator().manual_seed(101)), mix.sample(n, torch.Generator().manual_seed(102)))
        for name, sampler in SAMPLERS.items():
            opts = SAMPLER_OPTIONS.get(name, {})
            for schedule in SCHEDULES:
                for nfe in nfes:
                    steps = steps_for_nfe(sampler, nfe, **opts)
                    if sampler.nfe(steps, **opts) > nfe or steps < 2:
                        continue
                    g = torch.Generator().manual_seed(7)
                    x_T = diff.prior(State(x=torch.zeros(n, mix.dim)), g)
                    x = sampler(fn, x_T, make_times(diff, steps, schedule), generator=g, **opts)["x"]
                    sw = sliced_wasserstein(x, target)
                    rows.append({"mixture": mix_name, "sampler": name, "schedule": schedule, "nfe": sampler.nfe(steps, **opts), "sw2": sw, "floor": floor})
                    print(f"{mix_name:8s} {name:10s} {schedule:8s} NFE {rows[-1]['nfe']:3d}  SW2 {sw:.4f}  (floor {floor:.4f})", flush=True)
    return rows


class _FreeDenoiser:
    """Returns a fixed x0: isolates the engine's own cost per step."""

    def __init__(self, x0, diffusion):
        self.x0, self.diffusion = x0, diffusion

    def __call__(self, state, t):
        return State(x=self.x0)


def _bare_ddim(x, x0, alpha, sigma):
    for i in range(len(alpha) - 1):
        if sigma[i + 1] == 0:
            x = x0
            continue
        eps = (x - alpha[i] * x0) / sigma[i]
        x = alpha[i + 1] * x0 + sigma[i + 1] * eps
    return x


def _bare_dpmpp_2m(x, x0, alpha, sigma):
    lam = [math.log(a / s) if s > 0 else math.inf for a, s in zip(alpha, sigma)]
    prev = None
    for i in range(len(alpha) - 1):
        if sigma[i + 1] == 0:
            x = x0
            continue
        h = lam[i + 1] - lam[i]
        phi = math.expm1(-h)
        d = x0 if prev is None else x0 + 0.5 * (x0 - prev) * h / (lam[i] - lam[i - 1])
        x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * phi * d
        prev = x0
    return x


def overhead(n: int, steps: int, repeats: int) -> list[dict]:
    torch.set_num_threads(1)
    proc = VPLinear()
    diff = Diffusion({"x": proc})
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    fn = _FreeDenoiser(x0, diff)
    rows = []
    for name, bare, schedule in (("ddim", _bare_ddim, "uniform"), ("dpmpp-2m", _bare_dpmpp_2m, "logsnr")):
        times = make_times(diff, steps, schedule)
        alpha = proc.alpha(times).tolist() + [1.0]
        sigma = proc.sigma(times).tolist() + [0.0]
        x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
        SAMPLERS[name](fn, State(x=x_T), times)  # warm-up, untimed
        bare(x_T, x0, alpha, sigma)
        engine_t, bare_t = [], []
        for _ in range(repeats):  # interleaved, so both see the same machine load
            t0 = time.perf_counter()
            SAMPLERS[name](fn, State(x=x_T), times)
            engine_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            bare(x_T, x0, alpha, sigma)
            bare_t.append(time.perf_counter() - t0)
        e, b = statistics.median(engine_t) / steps, statistics.median(bare_t) / steps
        rows.append({"sampler": name, "steps": steps, "n": n, "engine_seconds_per_step": e, "bare_seconds_per_step": b, "ratio": e / b})
        print(f"overhead {name:10s} engine {e * 1e6:8.1f} us/step  bare {b * 1e6:8.1f} us/step  ratio {e / b:.2f}", flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    from diffkit.plotting import curves_png

    for mix in sorted({r["mixture"] for r in rows}):
        series = {}
        for r in rows:
            if r["mixture"] == mix:
                series.setdefault(f"{r['sampler']}/{r['schedule']}", ([], []))
                series[f"{r['sampler']}/{r['schedule']}"][0].append(r["nfe"])
                series[f"{r['sampler']}/{r['schedule']}"][1].append(r["sw2"])
        floor = next(r["floor"] for r in rows if r["mixture"] == mix)
        curves_png(series, path.with_name(f"{path.stem}-{mix}.png"), "NFE", "sliced W2 to target", title=f"exact-score oracle: {mix}", hline=floor, hline_label="two-sample floor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="2,000 samples, NFE 10 only, 2-D only (well under a minute)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        n, nfes, mixtures, repeats = 2000, [10], {"ring8-2d": ring(8)}, 5
    else:
        n, nfes, mixtures, repeats = 20000, [5, 10, 20, 50], {"ring8-2d": ring(8), "gmm-16d": random_mixture(16)}, 21
    rows = quality(n, nfes, mixtures)
    over = overhead(20000, 20, repeats)
    report = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "threads_for_overhead": 1, "n": n, "quality": rows, "overhead": over}
    (out / "samplers.json").write_text(json.dumps(report, indent=2))
    plot(rows, out / "samplers.png")
    print(f"wrote {out / 'samplers.json'}")


if __name__ == "__main__":
    main()
