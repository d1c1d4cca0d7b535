"""QM9 benchmark: train a molecule recipe under a wall-clock budget, then sample and score.

    python benchmarks/qm9.py [--recipe qm9-cpu] [--minutes 60] [--n 10000] [--steps 50 100 250]
                             [--run RUN_DIR] [--out benchmarks/results/qm9] [--threads 2]

With ``--run`` an existing run directory is scored instead of training a new one. Figures (printed,
and written to OUT/qm9.json and OUT/qm9.md, with the samples of each configuration under OUT/):

- training: steps reached, wall time, graphs per second (the mean of the run's logged rates);
- per sampler configuration (ancestral at each ``--steps``; every ODE/SDE sampler at each NFE when the
  recipe diffuses a Gaussian relaxation): strict and relaxed validity, connectivity, uniqueness,
  novelty, V.U.N., FCD against the test split, the atom/bond/valency/size total-variation distances,
  sampling rate (molecules per second) and seconds per network evaluation.

The definitions of the figures are the metrics' own (``diffkit eval --definitions``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from diffkit.recipe import load_dataset, load_recipe

from diffkit.runs import evaluate, generate, load_run, read_log
from diffkit.rundir import atomic_write_json
from diffkit.training.trainer import train

SHOWN = ["validity", "validity_relaxed", "connected", "uniqueness", "novelty", "vun", "fcd", "atom_types_distance", "bond_types_distance",
         "valency_distance", "size_distance"]


def train_run(recipe: str, out: Path, minutes: float | None, steps: int | None) -> tuple[Path, dict]:
    run_dir = out / "run"
    if (run_dir / "config.json").exists():
        print(f"qm9 bench: reusing the trained run in {run_dir}", file=sys.stderr)
        summary = {"reused": True}
    else:
        t0 = time.perf_counter()
        summary = train(recipe, run_dir, steps=steps, max_minutes=minutes, progress=True)
        summary["wall_seconds"] = time.perf_counter() - t0
    return run_dir, summary


def training_figures(run_dir: Path) -> dict:
    log = read_log(run_dir)
    rates = [r["items_per_second"] for r in log if "items_per_second" in r]
    steps = max((r["step"] for r in log if "step" in r), default=0)
    return {"steps": steps, "graphs_per_second": sum(rates) / max(len(rates), 1), "stopped_by_time_budget": any(r.get("event") == "time budget" for r in log)}


def configurations(run, ancestral_steps: list[int], nfes: list[int]) -> list[tuple[str, int]]:
    jobs = [("ancestral", s) for s in ancestral_steps]
    if run.diffusion.gaussian_fields:  # a continuous relaxation: the ODE samplers apply too
        jobs += [(s, n) for s in ("ddim", "heun", "dpmpp-2m") for n in nfes]
    return jobs


def markdown(report: dict) -> str:
    t = report["training"]
    lines = [f"# QM9 benchmark ({report['date']})", "",
             f"Recipe `{report['recipe']}`; machine: {report['machine']['cpus']} CPUs ({report['machine']['platform']}), "
             f"torch {report['machine']['torch']} with {report['machine']['torch_threads']} threads; load average at the start {report['machine']['load_average']}.", "",
             f"Training: {t['steps']} steps, "
             + (f"{t['wall_seconds'] / 60:.1f} min" if "wall_seconds" in t else "wall time not recorded (a reused run)")
             + f", {t['graphs_per_second']:.0f} graphs/s"
             + (" (stopped by the time budget)" if t.get("stopped_by_time_budget") else ""), "",
             "| sampler | steps | n | " + " | ".join(SHOWN) + " | molecules/s |", "|" + "---|" * (len(SHOWN) + 4)]
    for row in report["rows"]:
        m = row["metrics"]
        cells = [f"{m[k]:.3f}" if isinstance(m.get(k), float) else "–" for k in SHOWN]
        lines.append(f"| {row['sampler']} | {row['steps']} | {row['n']} | " + " | ".join(cells) + f" | {row['samples_per_second']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="qm9-cpu")
    p.add_argument("--run", default=None, help="score this trained run directory instead of training")
    p.add_argument("--minutes", type=float, default=60.0, help="training wall-clock budget")
    p.add_argument("--train-steps", type=int, default=None, help="override the recipe's training steps")
    p.add_argument("--n", type=int, default=10000, help="molecules per configuration")
    p.add_argument("--steps", type=int, nargs="+", default=[100], help="ancestral lengths (categorical diffusion)")
    p.add_argument("--nfe", type=int, nargs="+", default=[20, 50], help="NFEs for the ODE samplers (Gaussian relaxation only)")
    p.add_argument("--out", default="benchmarks/results/qm9")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "load_average": [round(v, 2) for v in os.getloadavg()]}
    if args.run:
        run_dir, summary = Path(args.run), {"reused": True}
    else:
        run_dir, summary = train_run(args.recipe, out, args.minutes, args.train_steps)
    training = {**training_figures(run_dir), **{k: v for k, v in summary.items() if k in ("wall_seconds", "seconds")}}
    run = load_run(run_dir)
    recipe = run.recipe
    reference = load_dataset(recipe, recipe.get("eval", {}).get("reference", "test"))
    rows = []
    for sampler, steps in configurations(run, args.steps, args.nfe):
        print(f"qm9 bench: {sampler} with {steps} steps, {args.n} molecules", file=sys.stderr, flush=True)
        items, labels, timing = generate(run, args.n, sampler=sampler, steps=steps, seed=args.seed, progress=True)
        sample_dir = out / f"{sampler}-{steps}"
        run.space.write(items, sample_dir, labels=labels)
        metrics = evaluate(run, items, labels, out_dir=sample_dir, reference_data=reference)
        row = {"sampler": sampler, "steps": steps, "nfe": timing["nfe"], "n": args.n, "seconds": timing["seconds"],
               "samples_per_second": timing["samples_per_second"], "seconds_per_evaluation": timing["seconds_per_evaluation"], "metrics": metrics}
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("sampler", "steps", "samples_per_second")} | {k: metrics.get(k) for k in SHOWN}), flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "recipe": recipe["name"], "run": str(run_dir), "machine": machine, "training": training, "rows": rows}
    atomic_write_json(out / "qm9.json", report)
    (out / "qm9.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
