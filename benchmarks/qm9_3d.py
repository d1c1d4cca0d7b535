"""3-D QM9 benchmark (de novo molecules with hydrogens): train a recipe under a wall-clock budget, then
sample and score.

    python benchmarks/qm9_3d.py [--recipe qm9-3d-cpu] [--minutes 60] [--n 1000] [--steps 100 50]
                                [--run RUN_DIR] [--out benchmarks/results/qm9-3d] [--threads 1] [--device cpu]

With ``--run`` an existing run directory is scored instead of training a new one. Figures (printed,
and written to OUT/qm9-3d.json and OUT/qm9-3d.md; the samples of each configuration, as SDF, XYZ and a
PNG drawn from the 3-D coordinates, under OUT/samples-*):

- training: steps reached, wall time, molecules per second;
- per ancestral length: atom and molecule stability under both protocols (generated bonds and charges,
  MiDi's; bonds from distances, EDM's), RDKit validity (whole molecule, largest fragment, from
  distances), connectivity, uniqueness, and the distances between generated and test distributions of
  atom types, charges, bond lengths and bond angles; sampling rate;
- the same figures for the first ``n`` test molecules themselves (the data's own score under each
  protocol: the ceiling a perfect generator reaches, and a check of the metrics; these molecules are
  also among the 5,000 reference molecules of the distribution distances, so their distances there are
  a lower bound of the two-sample floor).

Definitions: ``diffkit eval --definitions`` and docs/metrics.md.
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

from diffkit.evaluation import split_items
from diffkit.runs import evaluate, generate, load_run, read_log
from diffkit.rundir import atomic_write_json
from diffkit.training.trainer import train

SHOWN = ["molecule_stability", "atom_stability", "molecule_stability_distances", "atom_stability_distances", "validity", "validity_largest_fragment",
         "validity_distances", "connected", "uniqueness", "atom_types_tv", "charges_tv", "bond_lengths_w1", "bond_angles_w1"]


def train_run(recipe: str, out: Path, minutes: float | None, steps: int | None, device: str) -> tuple[Path, dict]:
    run_dir = out / "run"
    if (run_dir / "config.json").exists():
        print(f"{Path(sys.argv[0]).stem} bench: reusing the trained run in {run_dir}", file=sys.stderr)
        return run_dir, {"reused": True}
    t0 = time.perf_counter()
    summary = train(recipe, run_dir, steps=steps, max_minutes=minutes, progress=True, device=device)
    summary["wall_seconds"] = time.perf_counter() - t0
    return run_dir, summary


def training_figures(run_dir: Path) -> dict:
    log = read_log(run_dir)
    rates = [r["items_per_second"] for r in log if "items_per_second" in r]
    steps = max((r["step"] for r in log if "step" in r), default=0)
    last = [r for r in log if "loss" in r][-1:] or [{}]
    return {"steps": steps, "molecules_per_second": sum(rates) / max(len(rates), 1), "last_logged": {k: v for k, v in last[0].items() if k.startswith("loss")}}


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def markdown(report: dict) -> str:
    lines = [f"# {report['recipe']}: 3-D QM9 with hydrogens", "", f"Date: {report['date']}. Machine: {report['machine']}.", "",
             f"Training: {json.dumps(report['training'])}", "", "| configuration | " + " | ".join(SHOWN) + " | molecules/s |",
             "|---" * (len(SHOWN) + 2) + "|"]
    for name, row in report["results"].items():
        cells = [f"{row.get(k, float('nan')):.4g}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in SHOWN]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row.get('samples_per_second', float('nan')):.3g} |")
    lines += ["", "Targets (generated-bonds molecule stability, full recipe on a GPU): MiDi 97.5 %, EQGAT-diff 98.7 %, SemlaFlow 99.7 % at 100 steps.", ""]
    if report.get("errors"):
        lines += ["Errors: " + json.dumps(report["errors"]), ""]
    return "\n".join(lines)


def run_arguments(doc: str, recipe: str, out: str) -> argparse.ArgumentParser:
    """The options every 3-D molecule benchmark takes: which recipe, a run to reuse or the training budget, where to write."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--recipe", default=recipe)
    p.add_argument("--run", default=None, help="score this trained run directory instead of training")
    p.add_argument("--minutes", type=float, default=None, help="training wall-clock budget (default: the recipe's max_minutes)")
    p.add_argument("--train-steps", type=int, default=None, help="override the recipe's training steps")
    p.add_argument("--out", default=out)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    return p


def trained_run(args) -> tuple[Path, Path, dict, object]:
    """``(out, run_dir, training summary, loaded run)``: ``--run`` reused, or the recipe trained into ``out/run``."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.run:
        run_dir, train_summary = Path(args.run), {"reused": True}
    else:
        run_dir, train_summary = train_run(args.recipe, out, args.minutes, args.train_steps, args.device)
    return out, run_dir, train_summary, load_run(run_dir, device=args.device)


def main(argv=None) -> int:
    p = run_arguments(__doc__, "qm9-3d-cpu", "benchmarks/results/qm9-3d")
    p.add_argument("--n", type=int, default=1000, help="molecules per configuration")
    p.add_argument("--steps", type=int, nargs="+", default=[100], help="ancestral lengths (at most 100 in the issue's protocol)")
    args = p.parse_args(argv)
    out, run_dir, train_summary, run = trained_run(args)
    report = {"recipe": run.recipe["name"], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
              "training": {**training_figures(run_dir), **{k: v for k, v in train_summary.items() if k in ("seconds", "wall_seconds", "steps", "reused")}},
              "n": args.n, "results": {}}
    reference, _ = split_items(run.split(run.reference_split))
    data = [run.space.validate(x) for x in reference[: args.n]]
    t0 = time.perf_counter()
    report["results"]["test molecules (data)"] = {**evaluate(run, data, None), "samples_per_second": float("nan"), "seconds": time.perf_counter() - t0}
    for steps in args.steps:
        name = f"ancestral-{steps}"
        with torch.no_grad():
            items, labels, timing = generate(run, args.n, sampler="ancestral", steps=steps, seed=args.seed, device=args.device, progress=True)
        run.space.write(items, out / f"samples-{name}")
        figures = evaluate(run, items, labels, out_dir=out / f"samples-{name}")
        report["results"][name] = {**figures, **{k: timing[k] for k in ("samples_per_second", "seconds", "nfe")}}
        print(name, json.dumps({k: figures.get(k) for k in SHOWN}), file=sys.stderr)
    atomic_write_json(out / "qm9-3d.json", report)
    (out / "qm9-3d.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
