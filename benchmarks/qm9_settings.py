"""Sampler settings of a trained QM9 run at given NFEs over seeds: strict validity, connectivity, uniqueness,
novelty and FCD per row, the JSON rewritten (atomically) after every row.

    python benchmarks/qm9_settings.py RUN_DIR --out rows.json --settings 0:0 0:0.2 20:0.5 0:0.5:0.2 --seeds 0 1 --n 1000
        # dfm-euler ETA:OMEGA[:BELOW], BELOW: target guidance only on steps from t <= BELOW (data at t = 0);
        # OMEGA a number for every field or per field, bonds=0.5,atoms=0.1
    python benchmarks/qm9_settings.py RUN_DIR --out rows.json --sampler ancestral --steps 50 100
    python benchmarks/qm9_settings.py RUN_DIR --out rows.json --distortions polydec identity cos
        # dfm-euler's time distortion per row (polydec when not given)
    python benchmarks/qm9_settings.py RUN_DIR --out rows.json --constraints none valence valence:0.2
        # each row without the space's valence constraint (diffkit_molecule.constraints), with it on every level,
        # and with it on the levels from t <= 0.2 only
    python benchmarks/qm9_settings.py RUN_DIR --out rows.json --sampler ancestral --grids uniform power:1.5 power:0.75
        # the levels' times: uniform in t, or t_i = t_min + (t_max - t_min) (1 - i/(K-1))^P over K = steps levels
        # (P > 1: more levels near the data, P < 1: more near the prior)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

METRICS = ["molecule-validity", "molecule-uniqueness", "molecule-novelty", "fcd"]


def sampler_options(sampler: str, settings: list[str], distortions: list[str] = ("polydec",)) -> list[dict]:
    """``ETA:OMEGA[:BELOW]`` settings as dfm-euler options, one per setting and time distortion (DeFoG's; ``BELOW``:
    the target guidance only on steps from ``t <= BELOW``); one empty set otherwise."""
    if sampler != "dfm-euler":
        return [{}]
    out = []
    for text, distortion in ((text, distortion) for text in settings for distortion in distortions):
        eta, omega, *below = text.split(":")
        if "=" in omega:  # per field: bonds=0.5,atoms=0.1
            omega = {field: float(value) for field, value in (pair.split("=") for pair in omega.split(","))}
        else:
            omega = float(omega)
        out.append({"eta": float(eta), "target_guidance": omega, "distortion": distortion, **({"guidance_below": float(below[0])} if below else {})})
    return out


def level_times(diffusion, steps: int, grid: str) -> list[float] | None:
    """The times of ``steps`` levels for ``grid``: ``uniform`` (None: the sampler's own uniform grid) or ``power:P``,
    ``t_i = t_min + (t_max - t_min) (1 - i/(steps-1))^P`` for ``i = 0 .. steps-1`` (P = 1 is the uniform grid)."""
    if grid == "uniform":
        return None
    kind, _, power = grid.partition(":")
    if kind != "power" or not power:
        raise SystemExit(f"unknown grid {grid!r}: use 'uniform' or 'power:P' (P > 0)")
    power = float(power)
    if power <= 0 or steps < 2:
        raise SystemExit(f"grid {grid!r} needs P > 0 and at least 2 steps")
    t_min, t_max = float(diffusion.t_min), float(diffusion.t_max)
    return [t_min + (t_max - t_min) * (1 - i / (steps - 1)) ** power for i in range(steps)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--out", required=True)
    p.add_argument("--sampler", default="dfm-euler")
    p.add_argument("--steps", type=int, nargs="+", default=[50])
    p.add_argument("--settings", nargs="+", default=["0:0"], help="ETA:OMEGA[:BELOW] per row, for dfm-euler")
    p.add_argument("--distortions", nargs="+", default=["polydec"], help="dfm-euler's time distortion per row: identity, polydec, polyinc, cos")
    p.add_argument("--constraints", nargs="+", default=["none"], help="NAME[:BELOW] per row: the space's constraint to keep while sampling, on the levels from t <= BELOW when given ('none': no constraint)")
    p.add_argument("--grids", nargs="+", default=["uniform"], help="the levels' times per row: 'uniform' or 'power:P' (see level_times)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    from diffkit.cpu import flush_denormals

    flush_denormals()  # before torch starts its threads
    import torch

    from diffkit.recipe import load_dataset
    from diffkit.rundir import atomic_write_json
    from diffkit.runs import evaluate, generate, load_run
    from diffkit.samplers.flow import DISTORTIONS

    unknown = sorted(set(args.distortions) - set(DISTORTIONS))
    if unknown:  # before the run and the reference load (a minute)
        raise SystemExit(f"unknown time distortion(s) {unknown}; use some of {', '.join(DISTORTIONS)}")
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    reference = load_dataset(run.recipe, run.recipe.get("eval", {}).get("reference", "test"))  # once, for every row
    rows = []
    settings = [(steps, options, constraint, grid) for steps in args.steps for options in sampler_options(args.sampler, args.settings, args.distortions)
                for constraint in args.constraints for grid in args.grids]
    for steps, options, constraint, grid in settings:
        times = level_times(run.diffusion, steps, grid)
        name, *below = constraint.split(":")
        below = float(below[0]) if below else None
        for seed in args.seeds:
            t0 = time.perf_counter()
            items, labels, _ = generate(run, args.n, sampler=args.sampler, steps=steps, seed=seed, options=options, schedule=times,
                                        constraint="" if name == "none" else name, constraint_below=below)
            metrics = evaluate(run, items, labels, metrics=METRICS, reference_data=reference)
            row = {"run": args.run, "sampler": args.sampler, "steps": steps, **options, "constraint": name, "constraint_below": below, "grid": grid, "seed": seed,
                   **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}, "seconds": time.perf_counter() - t0}
            rows.append(row)
            print(json.dumps(row), flush=True)
            atomic_write_json(Path(args.out), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
