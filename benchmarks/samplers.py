"""Samplers on the exact-score oracle: quality against NFE (5 to 50), the defaults the measurements call
for, and the engine's per-step overhead.

    python benchmarks/samplers.py [--out benchmarks/results/samplers-DATE.json] [--n 20000] [--quick]

Figures (printed, and written to the JSON with a markdown report and one PNG per mixture beside it):
1. For every sampler, schedule and (where the option exists) ``lower_order_final`` on and off, at NFE
   5, 10, 20 and 50, on five mixtures (a 2-D ring, a 16-D mixture, narrow components, anisotropic
   components in 32-D, very unequal weights; :mod:`diffkit.oracle_mixtures`):
   - SW2 between samples and fresh target draws, beside the two-sample floor;
   - the coupled error: RMS distance between each sample and the converged flow from the same prior
     draw (DPM-Solver++(3M) on 500 log-SNR levels, checked against Heun on 500 Karras levels), which
     separates samplers where SW2 sits at its floor.
2. The defaults those figures call for: per sampler, the configuration with the least regret (geometric
   mean over mixtures and NFE 5, 10, 20 of its coupled error over the best reached there), and every
   configuration whose error grows with NFE.
3. Per-step overhead: a sampler driven by a free denoiser (it returns a precomputed x0) against the
   same update written as bare tensor arithmetic with precomputed coefficients, on 20,000 x 2 samples;
   medians of repeated runs measured side by side, one thread.
Comparison with diffusers' schedulers and k-diffusion's samplers is in peers.py (benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import time
from pathlib import Path

import torch

from diffkit.denoiser import Denoiser, guided
from diffkit.metrics import sliced_wasserstein
from diffkit.oracle import AnalyticBackbone, random_mixture, ring
from diffkit.oracle_mixtures import HARD_MIXTURES, coupled_error
from diffkit.processes import Diffusion, VPLinear
from diffkit.samplers import SAMPLERS, make_times, steps_for_nfe
from diffkit.state import State

SCHEDULES = ("uniform", "logsnr", "karras", "uniform-trailing", "logsnr-trailing", "karras-trailing")
SAMPLER_OPTIONS = {"langevin": {"n_steps": 5, "step_size": 1e-4}, "pc": {"n_corrector": 1}}
DETERMINISTIC = ("ddim", "euler", "heun", "dpmpp-2m", "dpmpp-3m", "deis", "unipc")
"""Samplers that follow the probability-flow ODE, so that the coupled error (distance to the converged
flow from the same prior draw) measures their discretisation error."""
LOWER_ORDER_FINAL = ("dpmpp-2m", "dpmpp-3m", "deis", "unipc")
"""Samplers measured with ``lower_order_final`` both on and off (the option exists in each)."""
REFERENCE = ("dpmpp-3m", "logsnr", 500)
CHECK = ("heun", "karras", 500)
"""The converged flow: DPM-Solver++(3M) on 500 log-SNR levels; Heun on 500 Karras levels (999 NFE)
checks it (their coupled distance bounds the reference's own error)."""


def mixtures_for(names) -> dict:
    out = {}
    for name in names:
        if name == "ring8-2d":
            out[name] = ring(8)
        elif name == "gmm-16d":
            out[name] = random_mixture(16)
        elif name in HARD_MIXTURES:
            out[name] = HARD_MIXTURES[name]()
        else:
            raise SystemExit(f"unknown mixture {name!r}; use any of ring8-2d, gmm-16d, {', '.join(HARD_MIXTURES)}")
    return out


def variants(name: str) -> list[dict]:
    """Sampler options to measure: the defaults, and ``lower_order_final`` flipped where it applies."""
    base = dict(SAMPLER_OPTIONS.get(name, {}))
    if name not in LOWER_ORDER_FINAL:
        return [base]
    default = inspect.signature(SAMPLERS[name]).parameters["lower_order_final"].default
    return [{**base, "lower_order_final": default}, {**base, "lower_order_final": not default}]


def quality(n: int, nfes: list[int], mixtures: dict, samplers=None) -> tuple[list[dict], dict]:
    rows, refs = [], {}
    proc = VPLinear()
    diff = Diffusion({"x": proc})
    samplers = samplers or list(SAMPLERS)
    for mix_name, mix in mixtures.items():
        fn = guided(Denoiser(AnalyticBackbone(mix, proc, "eps"), diff, "eps"))
        target = mix.sample(n, torch.Generator().manual_seed(100))
        floor = sliced_wasserstein(mix.sample(n, torch.Generator().manual_seed(101)), mix.sample(n, torch.Generator().manual_seed(102)))
        x_T = diff.prior(State(x=torch.zeros(n, mix.dim)), torch.Generator().manual_seed(7))  # the same prior draw for every run

        def solve(name, schedule, steps, opts=None, generator=None):
            with torch.no_grad():
                return SAMPLERS[name](fn, State(x_T), make_times(diff, steps, schedule), generator=generator, **(opts or {}))["x"]

        t0 = time.perf_counter()
        reference = solve(*REFERENCE)
        check = solve(*CHECK)
        refs[mix_name] = {"reference": f"{REFERENCE[0]}/{REFERENCE[1]}, {REFERENCE[2]} levels", "check": f"{CHECK[0]}/{CHECK[1]}, {CHECK[2]} levels",
                          "reference_vs_check": coupled_error(check, reference), "reference_sw2": sliced_wasserstein(reference, target), "floor": floor,
                          "seconds": time.perf_counter() - t0}
        print(f"\n{mix_name}: floor {floor:.4f}; converged flow SW2 {refs[mix_name]['reference_sw2']:.4f}, "
              f"its coupled distance to the check {refs[mix_name]['reference_vs_check']:.2e}", flush=True)
        for name in samplers:
            sampler = SAMPLERS[name]
            for opts in variants(name):
                for schedule in SCHEDULES:
                    for nfe in nfes:
                        steps = steps_for_nfe(sampler, nfe, **opts)
                        if sampler.nfe(steps, **opts) > nfe or steps < 2:
                            continue
                        x = solve(name, schedule, steps, opts, torch.Generator().manual_seed(8))
                        sw = sliced_wasserstein(x, target)
                        coupled = coupled_error(x, reference) if name in DETERMINISTIC else None
                        if not math.isfinite(sw):
                            sw = float("nan")
                        lof = opts.get("lower_order_final")
                        rows.append({"mixture": mix_name, "sampler": name, "schedule": schedule, "lower_order_final": lof, "budget": nfe,
                                     "nfe": sampler.nfe(steps, **opts), "sw2": sw, "coupled": coupled, "floor": floor})
                        tag = "" if lof is None else f" lof={'T' if lof else 'F'}"
                        print(f"{mix_name:16s} {name:9s}{tag:6s} {schedule:8s} NFE {rows[-1]['nfe']:3d}  SW2 {sw:.4f}  coupled "
                              + ("   -   " if coupled is None else f"{coupled:.2e}"), flush=True)
    return rows, refs


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


def _key(r) -> tuple:
    return (r["sampler"], r["schedule"], r["lower_order_final"])


def _label(key) -> str:
    name, schedule, lof = key
    return f"{name}/{schedule}" + ("" if lof is None else f" lof={'on' if lof else 'off'}")


def recommend(rows: list[dict], budgets=(5, 10, 20)) -> list[dict]:
    """Per deterministic sampler, every (schedule, lower_order_final) configuration scored by its regret:
    the geometric mean, over mixtures and the budgets, of its coupled error over the best coupled error
    any configuration reached there. The lowest regret is the default the measurements call for."""
    best = {}
    for r in rows:
        if r["coupled"] is not None and r["budget"] in budgets:
            k = (r["mixture"], r["budget"])
            best[k] = min(best.get(k, math.inf), r["coupled"])
    out = []
    for name in DETERMINISTIC:
        scores = {}
        for r in rows:
            if r["sampler"] == name and r["coupled"] is not None and r["budget"] in budgets:
                ratio = r["coupled"] / best[(r["mixture"], r["budget"])] if math.isfinite(r["coupled"]) else 1e6
                scores.setdefault(_key(r), []).append(math.log(max(ratio, 1e-12)))
        ranked = sorted((math.exp(statistics.fmean(v)), k) for k, v in scores.items())
        if ranked:
            out.append({"sampler": name, "best": _label(ranked[0][1]), "schedule": ranked[0][1][1], "lower_order_final": ranked[0][1][2],
                        "regret": ranked[0][0], "ranking": [(_label(k), g) for g, k in ranked]})
    return out


def non_monotone(rows: list[dict], tolerance: float = 1.1) -> list[str]:
    """Configurations whose coupled error grows with NFE (by more than ``tolerance`` x between consecutive budgets)."""
    out = []
    for key in sorted({_key(r) + (r["mixture"],) for r in rows if r["coupled"] is not None}, key=str):
        pts = sorted((r["nfe"], r["coupled"]) for r in rows if _key(r) + (r["mixture"],) == key)
        for (n0, c0), (n1, c1) in zip(pts, pts[1:]):
            if not (c1 <= tolerance * c0):
                out.append(f"{key[3]}: {_label(key[:3])} coupled error {c0:.2e} at NFE {n0} -> {c1:.2e} at NFE {n1}")
    return out


def markdown(report: dict) -> str:
    rows, refs = report["quality"], report["references"]
    budgets = sorted({r["budget"] for r in rows})
    lines = [f"# Samplers on the exact-score oracle ({report['date']})", "",
             f"VP linear process (beta 0.1..20), exact eps of each mixture, {report['n']} samples, one prior draw per mixture shared by every run, "
             f"torch {report['torch']}, one thread. Machine: {report['machine']}.", "",
             "SW2: sliced Wasserstein-2 to fresh target draws (floor: two independent target draws). Coupled: RMS per coordinate between each "
             f"sample and the converged flow from the same prior draw ({REFERENCE[0]}/{REFERENCE[1]}, {REFERENCE[2]} levels; checked against "
             f"{CHECK[0]}/{CHECK[1]}, {CHECK[2]} levels). `lof`: `lower_order_final`.", "",
             "| mixture | SW2 floor | converged flow SW2 | reference vs check (coupled) |", "|---|---|---|---|"]
    for mix, ref in refs.items():
        lines.append(f"| {mix} | {ref['floor']:.4f} | {ref['reference_sw2']:.4f} | {ref['reference_vs_check']:.2e} |")
    lines += ["", "## Defaults the measurements call for", "",
              "Regret: geometric mean over mixtures and NFE 5, 10, 20 of the configuration's coupled error over the best any configuration reached there (1 = always best).", "",
              "| sampler | best configuration | regret | runner-up | today's default |", "|---|---|---|---|---|"]
    from diffkit.samplers import DEFAULT_SCHEDULE

    for rec in report["recommendations"]:
        name = rec["sampler"]
        today = DEFAULT_SCHEDULE.get(name, "uniform")
        if name in LOWER_ORDER_FINAL:
            today += f" lof={'on' if inspect.signature(SAMPLERS[name]).parameters['lower_order_final'].default else 'off'}"
        second = rec["ranking"][1] if len(rec["ranking"]) > 1 else ("-", math.nan)
        lines.append(f"| {name} | {rec['best']} | {rec['regret']:.2f} | {second[0]} ({second[1]:.2f}) | {today} |")
    for mix in refs:
        lines += ["", f"## {mix}", "", "Coupled error (SW2 in brackets); NFE used where it differs from the budget.", "",
                  "| configuration | " + " | ".join(f"NFE {b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
        keys = []
        for r in rows:
            if r["mixture"] == mix and _key(r) not in keys:
                keys.append(_key(r))
        for k in keys:
            cells = []
            for b in budgets:
                r = next((r for r in rows if r["mixture"] == mix and _key(r) == k and r["budget"] == b), None)
                if r is None:
                    cells.append("—")
                    continue
                c = "—" if r["coupled"] is None else f"{r['coupled']:.2e}"
                cells.append(f"{c} ({r['sw2']:.4f})" + (f" [{r['nfe']}]" if r["nfe"] != b else ""))
            lines.append(f"| {_label(k)} | " + " | ".join(cells) + " |")
    lines += ["", "## Error that grows with NFE (coupled error up by more than 10 % between consecutive budgets)", ""]
    lines += [f"- {x}" for x in report["non_monotone"]] or ["- none"]
    if report.get("overhead"):
        lines += ["", "## Per-step overhead (free denoiser against bare tensor arithmetic, 20,000 x 2, one thread)", "",
                  "| sampler | engine us/step | bare us/step | ratio |", "|---|---|---|---|"]
        for o in report["overhead"]:
            lines.append(f"| {o['sampler']} | {o['engine_seconds_per_step'] * 1e6:.1f} | {o['bare_seconds_per_step'] * 1e6:.1f} | {o['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    from diffkit.plotting import curves_png

    for mix in sorted({r["mixture"] for r in rows}):
        series = {}
        for r in rows:
            if r["mixture"] == mix and r["coupled"] is not None and r["lower_order_final"] in (None, True):
                label = _label(_key(r))
                series.setdefault(label, ([], []))
                series[label][0].append(r["nfe"])
                series[label][1].append(r["coupled"])
        if series:
            curves_png(series, path.with_name(f"{path.stem}-{mix}.png"), "NFE", "coupled error to the converged flow", title=f"exact-score oracle: {mix}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=f"benchmarks/results/samplers-{time.strftime('%Y-%m-%d')}.json", help="JSON path; the .md and PNGs go beside it")
    parser.add_argument("--quick", action="store_true", help="2,000 samples, NFE 5 and 10, two mixtures (a minute or two)")
    parser.add_argument("--n", type=int, default=20000, help="samples per run")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--mixtures", nargs="+", default=["ring8-2d", "gmm-16d", *HARD_MIXTURES])
    parser.add_argument("--samplers", nargs="+", default=None, help="names from diffkit.samplers.SAMPLERS (default: all)")
    parser.add_argument("--no-overhead", action="store_true")
    parser.add_argument("--machine", default="2 shared CPU cores", help="how the machine was loaded, for the report")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    repeats = 21
    if args.quick:
        args.n, args.nfe, args.mixtures, repeats = 2000, [5, 10], ["ring8-2d", "narrow-ring-2d"], 5
    rows, refs = quality(args.n, args.nfe, mixtures_for(args.mixtures), args.samplers)
    over = [] if args.no_overhead else overhead(20000, 20, repeats)
    report = {"date": time.strftime("%Y-%m-%d"), "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
              "machine": args.machine, "threads": 1, "n": args.n, "nfe_budgets": args.nfe, "references": refs, "quality": rows, "overhead": over}
    report["recommendations"] = recommend(rows)
    report["non_monotone"] = non_monotone(rows)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    plot(rows, out.with_suffix(".png"))
    print("\n" + markdown(report))
    print(f"wrote {out}, {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
