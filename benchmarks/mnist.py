"""MNIST 28×28 in pixel space and through an autoencoder, side by side; and image-folder on real PNG files.

For each recipe named (default: ``mnist`` and ``mnist-latent``) it trains for at most ``--minutes`` of
diffusion training (the latent recipe's autoencoder is fitted first, or read from the cache, and timed
apart), then draws ``--n`` class-conditional samples per sampler and NFE at the recipe's guidance and scores
them with the recipe's metrics (the 28×28 judge's class accuracy and Frechet distance with its floor; bits per
dimension for the pixel model). ``--folder`` adds a row trained from a folder of PNG files: the MNIST test
split written to disk (``diffkit_image.data.write_image_folder``) and read by the ``image-folder`` dataset,
so the path a user with their own images takes is measured (load time, training throughput, quality).

Writes ``<out>/mnist-<date>.json`` and ``.md``, and a sample grid per row under ``<out>/mnist-samples/``::

    python benchmarks/mnist.py --minutes 25 --n 500 --out benchmarks/results      # two idle cores: the standard figures
    python benchmarks/mnist.py --minutes 1 --n 50 --nfe 10 --out /tmp/mnist-smoke  # a smoke run
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch


def train_and_score(recipe: dict, run_dir: Path, *, minutes: float, n: int, nfes: list, samplers: list, device: str, progress: bool) -> dict:
    from diffkit.runs import evaluate, generate, load_run, read_log
    from diffkit.samplers import SAMPLERS, steps_for_nfe
    from diffkit.training.trainer import Trainer

    t0 = time.perf_counter()
    trainer = Trainer(recipe, run_dir, device=device, progress=progress, max_minutes=minutes)
    build_seconds = time.perf_counter() - t0  # data loading, and for a two-stage recipe the first stage's fit (or cache read)
    summary = trainer.fit()
    log = [r for r in read_log(run_dir) if "items_per_second" in r]
    run = load_run(run_dir, device=device)
    first_stage = run.extra["config"].get("representation", {}).get("report", {})
    rows = []
    for sampler in samplers:
        for nfe in nfes:
            steps = steps_for_nfe(SAMPLERS[sampler], nfe)
            items, labels, timing = generate(run, n, sampler=sampler, steps=steps, seed=0, device=device)
            sample_dir = run_dir / "samples" / f"{sampler}-nfe{timing['nfe']}"
            metrics = evaluate(run, items, labels, out_dir=sample_dir)
            run.data_space.write(items[:100], sample_dir, labels=labels[:100] if labels else None, title=f"{recipe['name']}: {sampler}, NFE {timing['nfe']}")
            rows.append({"sampler": sampler, "nfe": timing["nfe"], "guidance": timing["guidance"], "n": n, "seconds": timing["seconds"],
                         "samples_per_second": timing["samples_per_second"], "metrics": {k: v for k, v in metrics.items() if k != "errors"},
                         "metric_errors": metrics.get("errors", {}), "samples_dir": str(sample_dir)})
            print(f"{recipe['name']:>14} {sampler:>9} NFE {timing['nfe']:>3}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)), flush=True)
    return {"recipe": recipe["name"], "data": recipe["data"], "representation": recipe.get("representation"),
            "first_stage": first_stage, "build_seconds": build_seconds,
            "train": {"steps": summary["steps"], "seconds": summary["seconds"], "minutes_cap": minutes, "batch_size": recipe["train"]["batch_size"],
                      "items_per_second": sum(r["items_per_second"] for r in log) / max(len(log), 1), "final_loss": summary.get("loss")},
            "rows": rows}


def folder_recipe(root: Path, base: str = "mnist") -> dict:
    """``base`` (``mnist`` or ``mnist-latent``) reading the same images as files: a folder of PNGs, one sub-folder per class."""
    from diffkit.recipe import load_recipe

    recipe = load_recipe(base)
    recipe["name"] = f"{base}-image-folder"
    recipe["data"] = {"dataset": "image-folder", "options": {"root": str(root), "size": 28, "channels": 1, "val_fraction": 0.1, "test_fraction": 0.2}}
    recipe.pop("bench", None)
    return recipe


def markdown(report: dict) -> str:
    lines = [f"# MNIST 28×28: pixel space and two-stage ({report['date']})", "", f"Machine: {report['machine']}", f"Load: {report['load']}", "",
             "| recipe | first stage | diffusion training | sampler | NFE | guidance | accuracy | Frechet (floor, ratio) | bits/dim | samples/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task in report["tasks"]:
        fs = task["first_stage"]
        first = f"{fs.get('steps', '?')} steps, {fs.get('seconds', 0):.0f} s, train MSE {fs.get('train_mse', float('nan')):.4f}" + (" (cached)" if fs.get("cached") else "") if fs else "none"
        train = f"{task['train']['steps']} steps, {task['train']['seconds']:.0f} s"
        for row in task["rows"]:
            m = row["metrics"]
            fd = f"{m.get('digits_frechet_distance', float('nan')):.3g} ({m.get('digits_frechet_train_floor', float('nan')):.3g}, {m.get('digits_frechet_ratio', float('nan')):.2f})"
            bpd = f"{m['bits_per_dim']:.3f}" if "bits_per_dim" in m else "-"
            lines.append(f"| {task['recipe']} | {first} | {train} | {row['sampler']} | {row['nfe']} | {row['guidance']} | {m.get('digits_accuracy', float('nan')):.3f} | {fd} | {bpd} | {row['samples_per_second']:.1f} |")
    if report.get("folder"):
        f = report["folder"]
        lines += ["", f"image-folder: {f['files']} PNG files written in {f['write_seconds']:.1f} s, read (train split) in {f['read_seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=["mnist", "mnist-latent"], help="none with --folder: the folder row alone")
    parser.add_argument("--minutes", type=float, default=25.0, help="diffusion training budget per recipe (the first stage is timed apart)")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--nfe", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--samplers", nargs="+", default=["dpmpp-2m"])
    parser.add_argument("--folder", action="store_true", help="add the image-folder row (the MNIST test split written as PNG files)")
    parser.add_argument("--folder-recipe", default="mnist", choices=["mnist", "mnist-latent"], help="the recipe the image-folder row trains")
    parser.add_argument("--folder-minutes", type=float, default=None, help="training budget of the image-folder row (default: --minutes)")
    parser.add_argument("--first-stage-steps", type=int, default=None, help="override the autoencoder's training steps (a loaded machine)")
    parser.add_argument("--bpd-n", type=int, default=None, help="override the reference elements bits per dimension is measured on")
    parser.add_argument("--tag", default="", help="appended to the report's file name (mnist-<date><tag>.json)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffkit.bench import machine
    from diffkit.recipe import load_recipe

    out = Path(args.out)
    work = out / "mnist-runs"
    report = {"date": dt.date.today().isoformat(), "machine": machine(), "load": f"load average {os.getloadavg()[0]:.1f} at start", "args": vars(args), "tasks": []}
    recipes = [load_recipe(name) for name in args.recipes]
    for recipe in recipes:
        if args.first_stage_steps and recipe.get("representation"):
            recipe["representation"].setdefault("options", {})["steps"] = args.first_stage_steps
        if args.bpd_n and "bits-per-dim" in recipe["eval"]["metrics"]:
            recipe["eval"].setdefault("options", {}).setdefault("bits-per-dim", {})["n"] = args.bpd_n
    if args.folder:
        from diffkit_image.data import image_folder, mnist, write_image_folder

        root = work / "mnist-test-png"
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        write_image_folder(mnist("test"), root)
        t1 = time.perf_counter()
        image_folder("train", root=str(root), size=28, channels=1, val_fraction=0.1, test_fraction=0.2)
        report["folder"] = {"root": str(root), "files": sum(1 for _ in root.rglob("*.png")), "write_seconds": t1 - t0, "read_seconds": time.perf_counter() - t1}
        recipes.append(folder_recipe(root, args.folder_recipe))
    for recipe in recipes:
        run_dir = work / recipe["name"]
        shutil.rmtree(run_dir, ignore_errors=True)
        minutes = args.folder_minutes if recipe["data"]["dataset"] == "image-folder" and args.folder_minutes else args.minutes
        report["tasks"].append(train_and_score(copy.deepcopy(recipe), run_dir, minutes=minutes, n=args.n, nfes=args.nfe, samplers=args.samplers,
                                               device=args.device, progress=sys.stderr.isatty()))
        report["load"] += f"; {os.getloadavg()[0]:.1f} after {recipe['name']}"
    stem = out / f"mnist-{report['date']}{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
