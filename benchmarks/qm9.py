"""QM9 benchmark: train a molecule recipe under a wall-clock budget, then sample and score.

    python benchmarks/qm9.py [--recipe qm9-cpu] [--minutes 60] [--n 10000] [--steps 50 100 250]
                             [--run RUN_DIR] [--out benchmarks/results/qm9] [--threads 2]
    python benchmarks/qm9.py --recipe qm9-cpu-flow --steps 5 10 20 50 100 500    # discrete flow matching (dfm-euler)
    python benchmarks/qm9.py --recipe qm9-cpu --steps 5 10 20 50 100 500         # the categorical diffusion, same curve

With ``--run`` an existing run directory is scored instead of training a new one. Figures (printed,
and written to OUT/qm9.json and OUT/qm9.md, with the samples of each configuration under OUT/):

- training: steps reached, wall time, graphs per second (the mean of the run's logged rates);
- per sampler configuration (ancestral at each ``--steps``; every ODE/SDE sampler at each NFE when the
  recipe diffuses a Gaussian relaxation): strict and relaxed validity, connectivity, uniqueness,
  novelty, V.U.N., FCD against the test split, the atom/bond/valency/size total-variation distances,
  sampling rate (molecules per second) and seconds per network evaluation.

With ``--rescore SAMPLES.smi`` nothing is trained or sampled: a recorded sample file is scored again by
``diffkit eval``'s path (``diffkit.evaluator.evaluate_path``) under the recipe's current metrics, and the
report (OUT.json, OUT.md) says so.

The markdown shows one row per protocol (strict whole molecule, DiGress's, GDSS's; see docs/metrics.md)
with its validity, uniqueness, novelty against the training split and against every split, V.U.N. and
FCD beside its floor, then the protocol-free figures (connectivity, stability filters, NSPDK, the
distribution distances). The definitions of the figures are the metrics' own (``diffkit eval --definitions``).
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

from diffkit.cpu import flush_denormals
from diffkit.recipe import load_dataset

from diffkit.runs import evaluate, generate, load_run, read_log
from diffkit.rundir import atomic_write_json

SHOWN = ["validity", "validity_relaxed", "connected", "valid_connected", "uniqueness", "novelty", "novelty_all_splits", "vun", "fcd", "fcd_floor",
         "filters", "nspdk_gdss", "nspdk_floor_gdss", "atom_types_distance", "bond_types_distance", "valency_distance", "size_distance"]
PROTOCOL_ROWS = [("strict (whole molecule)", "", "validity"), ("digress (largest fragment)", "_digress", "validity"),
                 ("gdss (relaxed valence, longest fragment)", "_gdss", "validity_relaxed")]
SHARED = ["connected", "valid_connected", "filters", "filters_reference", "filters_novel", "nspdk_gdss", "nspdk_floor_gdss", "atom_types_distance", "bond_types_distance",
          "valency_distance", "size_distance"]


def _cell(m: dict, key: str) -> str:
    v = m.get(key)
    if not isinstance(v, float):
        return "–"
    return f"{v:.5f}" if key.startswith("nspdk") else f"{v:.3f}"   # NSPDK MMD² is of order 1e-4


def protocol_table(m: dict) -> list[str]:
    """Markdown lines: one row per protocol, then the figures that do not depend on one."""
    lines = ["| protocol | validity | uniqueness | novelty (train) | novelty (all splits) | V.U.N. (train) | V.U.N. (all splits) | FCD | FCD floor | n in FCD |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, sfx, validity in PROTOCOL_ROWS:
        n = m.get("fcd_valid_n" + sfx)
        lines.append(f"| {name} | {_cell(m, validity)} | {_cell(m, 'uniqueness' + sfx)} | {_cell(m, 'novelty' + sfx)} | {_cell(m, 'novelty_all_splits' + sfx)} | "
                     f"{_cell(m, 'vun' + sfx)} | {_cell(m, 'vun_all_splits' + sfx)} | {_cell(m, 'fcd' + sfx)} | {_cell(m, 'fcd_floor' + sfx)} | "
                     + (f"{int(n):,}" if isinstance(n, (int, float)) else "–") + " |")
    lines += ["", "| " + " | ".join(SHARED) + " |", "|" + "---|" * len(SHARED), "| " + " | ".join(_cell(m, k) for k in SHARED) + " |"]
    fails = {k[len("filters_fail_"):]: v for k, v in m.items() if k.startswith("filters_fail_")}
    if fails:
        lines += ["", "Valid molecules failing each stability filter: " + ", ".join(f"{k} {v:.3f}" for k, v in fails.items()) + "."]
    return lines


def train_run(recipe: str, out: Path, minutes: float | None, steps: int | None) -> tuple[Path, dict]:
    from qm9_3d import train_run as train_or_reuse  # one train-or-reuse step for the molecule benchmarks

    return train_or_reuse(recipe, out, minutes, steps, device="cpu")


def training_figures(run_dir: Path) -> dict:
    log = read_log(run_dir)
    rates = [r["items_per_second"] for r in log if "items_per_second" in r]
    steps = max((r["step"] for r in log if "step" in r), default=0)
    return {"steps": steps, "graphs_per_second": sum(rates) / max(len(rates), 1), "stopped_by_time_budget": any(r.get("event") == "time budget" for r in log)}


def configurations(run, ancestral_steps: list[int], nfes: list[int], sampler: str | None = None) -> list[tuple[str, int]]:
    """``sampler`` (default: the recipe's own for discrete flows, else ancestral) at each ``--steps`` (one evaluation each)."""
    if sampler is None:
        from diffkit.processes import DiscreteFlow

        sampler = run.recipe["sample"]["sampler"] if run.diffusion.fields_of((DiscreteFlow,)) else "ancestral"
    jobs = [(sampler, s) for s in ancestral_steps]
    if run.diffusion.gaussian_fields:  # a continuous relaxation: the ODE samplers apply too
        jobs += [(s, n) for s in ("ddim", "heun", "dpmpp-2m") for n in nfes]
    return jobs


def markdown(report: dict) -> str:
    if report.get("rescored"):
        return rescore_markdown(report)
    t = report["training"]
    lines = [f"# QM9 benchmark ({report['date']})", "",
             f"Recipe `{report['recipe']}`; machine: {report['machine']['cpus']} CPUs ({report['machine']['platform']}), "
             f"torch {report['machine']['torch']} with {report['machine']['torch_threads']} threads; load average at the start {report['machine']['load_average']}.", "",
             f"Training: {t['steps']} steps, "
             + (f"{t['wall_seconds'] / 60:.1f} min" if "wall_seconds" in t else "wall time not recorded (a reused run)")
             + f", {t['graphs_per_second']:.0f} graphs/s"
             + (" (stopped by the time budget)" if t.get("stopped_by_time_budget") else ""), ""]
    for row in report["rows"]:
        lines += [f"## {row['sampler']}, {row['steps']} steps, {row['n']} molecules, {row['samples_per_second']:.1f} molecules/s", ""]
        lines += protocol_table(row["metrics"]) + [""]
    return "\n".join(lines) + "\n"


def rescore_markdown(report: dict) -> str:
    r = report["result"]
    m = r["figures"]
    lines = [f"# QM9: recorded samples re-scored ({report['date']})", "",
             f"`{report['command']}`", "",
             f"The samples are the {r['n_read'] + r['n_invalid']:,} molecules of `{r['samples']}`, drawn by an earlier run of this benchmark; "
             "nothing was trained or sampled again: these are the same samples scored under the current metrics. "
             f"Task `{r['task']}`; reference: {r['reference']} ({r['n_reference']:,} molecules; FCD used {int(m.get('fcd_reference_n', 0)):,} of them, "
             f"NSPDK {int(m.get('nspdk_reference_n', 0)):,}); floors drawn from the training split without the reference's molecules. "
             f"Machine: {report['machine']['cpus']} CPUs, load average at the start {report['machine']['load_average']}; scoring took {report['seconds'] / 60:.1f} min.", ""]
    lines += protocol_table(m)
    if m.get("errors"):
        lines += ["", f"Errors: {m['errors']}"]
    return "\n".join(lines) + "\n"


def rescore(args, machine: dict) -> int:
    from diffkit.evaluator import evaluate_path

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = evaluate_path(args.recipe, args.rescore)
    report = {"date": time.strftime("%Y-%m-%d"), "rescored": True, "recipe": args.recipe, "machine": machine, "seconds": time.perf_counter() - t0,
              "command": "python benchmarks/qm9.py " + " ".join(sys.argv[1:]), "result": result}
    atomic_write_json(out.with_suffix(".json"), report)
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="qm9-cpu")
    p.add_argument("--run", default=None, help="score this trained run directory instead of training")
    p.add_argument("--minutes", type=float, default=60.0, help="training wall-clock budget")
    p.add_argument("--train-steps", type=int, default=None, help="override the recipe's training steps")
    p.add_argument("--n", type=int, default=10000, help="molecules per configuration")
    p.add_argument("--steps", type=int, nargs="+", default=[100], help="levels (= NFE) of the categorical sampler: ancestral, or dfm-euler for discrete flows")
    p.add_argument("--sampler", default=None, help="the categorical sampler (default: the recipe's for a discrete flow, else ancestral)")
    p.add_argument("--nfe", type=int, nargs="+", default=[20, 50], help="NFEs for the ODE samplers (Gaussian relaxation only)")
    p.add_argument("--out", default="benchmarks/results/qm9", help="output folder (with --rescore: the report's path without suffix)")
    p.add_argument("--rescore", default=None, help="score this recorded SMILES file under the recipe's current metrics instead of training and sampling")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    flush_denormals()                      # as `diffkit train` does, before torch starts its threads
    torch.set_num_threads(args.threads)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "load_average": [round(v, 2) for v in os.getloadavg()]}
    if args.rescore:
        return rescore(args, machine)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.run:
        run_dir, summary = Path(args.run), {"reused": True}
    else:
        run_dir, summary = train_run(args.recipe, out, args.minutes, args.train_steps)
    training = {**training_figures(run_dir), **{k: v for k, v in summary.items() if k in ("wall_seconds", "seconds")}}
    run = load_run(run_dir)
    recipe = run.recipe
    reference = load_dataset(recipe, recipe.get("eval", {}).get("reference", "test"))
    rows = []
    for sampler, steps in configurations(run, args.steps, args.nfe, args.sampler):
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
