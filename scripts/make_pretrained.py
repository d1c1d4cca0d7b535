"""Make a shipped model: train a recipe from its seed, sample and score it, and cut the run down to
``config.json`` + EMA weights + ``card.json`` inside the distribution that ships it.

    python scripts/make_pretrained.py gmm --dest diffkit/shipped/gmm
    python scripts/make_pretrained.py digits --dest plugins/diffkit-image/diffkit_image/shipped/digits
    python scripts/make_pretrained.py qm9-cpu --run RUN_DIR --n 200 --dest plugins/diffkit-molecule/diffkit_molecule/shipped/qm9-cpu

With ``--refigure`` nothing is trained or cut: the shipped model already in ``--dest`` is sampled again with
today's code (after a change of a sampler's defaults, say) and its card's figures are replaced, the earlier
ones kept under ``figures_before``.

With ``--run`` nothing is trained: a run directory already trained from the same recipe and seed (by a
benchmark script, say) is scored and cut; the card then records the run's own training figures from its log.

The card records the command, the recipe, the seed, the SHA-256 and size of every file, and the figures
measured here (the recipe's sampler, steps and sample count, seed 0) with the relative tolerance within which
``diffkit sample NAME`` on another machine reproduces them (tests/test_pretrained.py checks it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffkit.pretrained import export
from diffkit.runs import sample_run
from diffkit.training.trainer import train


def trained_run_summary(run_dir: Path, recipe: str, seed: int) -> dict:
    """What the run's config and log say of its training; refuses a run of another recipe or seed."""
    from diffkit.rundir import read_config, read_log

    config = read_config(run_dir)
    made = config["recipe"]
    if made.get("name") != recipe or int(made.get("seed", 0)) != seed:
        raise SystemExit(f"make_pretrained: {run_dir} was trained from recipe {made.get('name')!r} seed {made.get('seed', 0)}, "
                         f"not {recipe!r} seed {seed}; pass the matching recipe and --seed")
    log = read_log(run_dir)
    rated = [r for r in log if r.get("items_per_second")]
    rates = [r["items_per_second"] for r in rated]
    budget = [r["minutes"] for r in log if r.get("event") == "time budget"]
    if budget:
        seconds, source = 60 * budget[-1], "time budget"
    elif rated:   # a run stopped by its step count: each logged stretch of steps at its logged rate
        batch, previous, seconds = int(made.get("train", {}).get("batch_size", 1)), 0, 0.0
        for r in rated:
            seconds += (r["step"] - previous) * batch / r["items_per_second"]
            previous = r["step"]
        source = "log rates"
    else:
        seconds, source = None, None
    return {"steps": config.get("step"), "items_per_second": round(sum(rates) / len(rates), 1) if rates else None,
            "train_seconds": None if seconds is None else round(seconds, 1), "train_seconds_from": source, "stopped_by_time_budget": bool(budget)}


def refigure(dest: Path, args) -> int:
    """Sample the shipped model in ``dest`` as its card says (sampler, steps, n, seed, guidance) with today's code and
    rewrite the card's figures; the sampling defaults the card relies on are the code's, so they move with it."""
    from diffkit.pretrained import CARD, verify
    from diffkit.rundir import atomic_write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    verify(dest)
    card = json.loads((dest / CARD).read_text())
    before = card["figures"]
    with tempfile.TemporaryDirectory(prefix="diffkit-refigure-") as work:
        sampled = sample_run(dest, n=before["n"], sampler=before["sampler"], steps=before["steps"], guidance=before.get("guidance"), seed=before.get("seed", 0),
                             out=Path(work) / "samples", progress=False)
    figures = {**before, "sampler": sampled["sampler"], "steps": sampled["steps"], "n": sampled["n"],
               "metrics": {k: v for k, v in sampled.get("metrics", {}).items() if isinstance(v, (int, float))}, "torch_threads": torch.get_num_threads()}
    figures.pop("figures_before", None)
    card["figures"] = {**figures, "figures_before": {"metrics": before["metrics"], "replaced_on": time.strftime("%Y-%m-%d")}}
    card["refigured_by"] = "python scripts/make_pretrained.py " + " ".join(sys.argv[1:])
    atomic_write_json(dest / CARD, card)
    print(json.dumps({"before": before["metrics"], "after": figures["metrics"]}, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", help="registered recipe name")
    p.add_argument("--dest", required=True, help="directory to write inside the shipping distribution (its name is the model's name)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=None, help="samples for the recorded figures (default: the recipe's)")
    p.add_argument("--tolerance", type=float, default=0.15, help="relative tolerance recorded for reproducing the figures")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--keep-run", default=None, help="also keep the full training run here")
    p.add_argument("--run", default=None, help="cut this run directory (trained from RECIPE with --seed) instead of training one")
    p.add_argument("--trained-by", default=None, help="with --run: the command that trained it, recorded on the card")
    p.add_argument("--sampler", default=None, help="sampler for the recorded figures, and the shipped model's default (default: the recipe's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps for the figures, and the shipped default (default: the recipe's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale for the figures, and the shipped default (default: the recipe's)")
    p.add_argument("--refigure", action="store_true", help="sample the shipped model in --dest again and rewrite its card's figures")
    args = p.parse_args(argv)
    if args.refigure:
        return refigure(Path(args.dest), args)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="diffkit-pretrained-"))
    try:
        if args.run:
            run_dir, summary = Path(args.run), trained_run_summary(Path(args.run), args.recipe, args.seed)
            train_seconds = summary.get("train_seconds")
        else:
            run_dir = work / "run"
            t0 = time.perf_counter()
            summary = train(args.recipe, run_dir, seed=args.seed, progress=False)
            train_seconds = time.perf_counter() - t0
        sampled = sample_run(run_dir, n=args.n, sampler=args.sampler, steps=args.steps, guidance=args.guidance, seed=0, out=work / "samples", progress=False)
        figures = {"sampler": sampled["sampler"], "steps": sampled["steps"], "n": sampled["n"], "seed": 0, "guidance": sampled.get("guidance"),
                   **({"guidance_interval": sampled["guidance_interval"]} if sampled.get("guidance_interval") else {}),
                   "metrics": {k: v for k, v in sampled.get("metrics", {}).items() if isinstance(v, (int, float))},
                   "train_seconds": None if train_seconds is None else round(train_seconds, 1), "torch_threads": torch.get_num_threads()}
        if args.run:
            figures["training"] = summary
            if args.trained_by:
                figures["trained_by"] = args.trained_by
        command = "python scripts/make_pretrained.py " + " ".join(sys.argv[1:] if argv is None else argv)
        info = export(run_dir, args.dest, figures=figures, made_by=command, tolerance={"relative": args.tolerance})
        if args.keep_run:
            shutil.copytree(run_dir, args.keep_run, dirs_exist_ok=True)
        print(json.dumps({"train": summary, "card": info}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
