"""Make a shipped model: train a recipe from its seed, sample and score it, and cut the run down to
``config.json`` + EMA weights + ``card.json`` inside the distribution that ships it.

    python scripts/make_pretrained.py gmm --dest diffkit/shipped/gmm
    python scripts/make_pretrained.py digits --dest plugins/diffkit-image/diffkit_image/shipped/digits

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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", help="registered recipe name")
    p.add_argument("--dest", required=True, help="directory to write inside the shipping distribution (its name is the model's name)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=None, help="samples for the recorded figures (default: the recipe's)")
    p.add_argument("--tolerance", type=float, default=0.15, help="relative tolerance recorded for reproducing the figures")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--keep-run", default=None, help="also keep the full training run here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="diffkit-pretrained-"))
    try:
        run_dir = work / "run"
        t0 = time.perf_counter()
        summary = train(args.recipe, run_dir, seed=args.seed, progress=False)
        train_seconds = time.perf_counter() - t0
        sampled = sample_run(run_dir, n=args.n, seed=0, out=work / "samples", progress=False)
        figures = {"sampler": sampled["sampler"], "steps": sampled["steps"], "n": sampled["n"], "seed": 0, "guidance": sampled.get("guidance"),
                   "metrics": {k: v for k, v in sampled.get("metrics", {}).items() if isinstance(v, (int, float))},
                   "train_seconds": round(train_seconds, 1), "torch_threads": torch.get_num_threads()}
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
