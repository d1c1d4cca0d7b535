"""Conformer benchmark: a diffusion model of positions given the graph against RDKit's ETKDG and
ETKDG + MMFF, on the same held-out QM9 molecules, in one run.

    python benchmarks/conformers.py [--recipe qm9-conformers-cpu] [--minutes 60] [--molecules 200] [--k 1]
                                    [--steps 100] [--run RUN_DIR] [--out benchmarks/results/conformers] [--threads 1]

For each of the first ``--molecules`` test molecules (QM9 with hydrogens; the DFT geometry is the
reference), each method produces ``--k`` conformers; a molecule's RMSD is the smallest heavy-atom RMSD of
its conformers to the DFT geometry after optimal alignment, symmetry-aware (RDKit ``GetBestRMS``).
Figures per method: median and mean RMSD (Å), coverage (fraction of molecules under 0.5 Å), failures
(no conformer produced: counted as misses), seconds per molecule. Printed, and written to
OUT/conformers.json and OUT/conformers.md; the diffusion conformers are written as OUT/samples/samples.sdf.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from diffkit.evaluation import split_items
from diffkit.recipe import conditioning_fields
from diffkit.runs import conditioning_state, generate
from diffkit.rundir import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qm9_3d import machine, run_arguments, trained_run, training_figures  # noqa: E402

from diffkit_molecule.conformers import best_rmsd, etkdg_positions, rmsd_figures  # noqa: E402


def per_molecule(rmsds: list[list[float]]) -> tuple[list[float], int]:
    best = [min(r) for r in rmsds if r]
    return best, sum(1 for r in rmsds if not r)


def markdown(report: dict) -> str:
    lines = [f"# {report['recipe']}: conformers of {report['molecules']} held-out QM9 molecules, {report['k']} per molecule", "",
             f"Date: {report['date']}. Machine: {report['machine']}.", "", f"Training: {json.dumps(report['training'])}", "",
             "RMSD: heavy atoms, after optimal alignment, symmetry-aware (RDKit GetBestRMS), to the DFT geometry; per molecule the best of its conformers.", "",
             "| method | median RMSD (Å) | mean RMSD (Å) | coverage (< 0.5 Å) | failed | seconds / molecule |", "|---|---|---|---|---|---|"]
    for name, row in report["results"].items():
        lines.append(f"| {name} | {row['rmsd_median']:.3f} | {row['rmsd_mean']:.3f} | {row['coverage']:.3f} | {row['failed']} | {row['seconds_per_molecule']:.3g} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = run_arguments(__doc__, "qm9-conformers-cpu", "benchmarks/results/conformers")
    p.add_argument("--molecules", type=int, default=200, help="held-out (test) molecules")
    p.add_argument("--k", type=int, default=1, help="conformers per molecule and method")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the recipe's)")
    p.add_argument("--sampler", default=None)
    args = p.parse_args(argv)
    out, run_dir, train_summary, run = trained_run(args)
    space = run.space
    reference, _ = split_items(run.split(run.reference_split))
    molecules = [space.validate(x) for x in reference[: args.molecules]]
    truth = [space.parts(x) for x in molecules]
    report = {"recipe": run.recipe["name"], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), "molecules": len(molecules),
              "k": args.k, "training": {**training_figures(run_dir), **{k: v for k, v in train_summary.items() if k in ("seconds", "wall_seconds", "reused")}},
              "results": {}}

    # the diffusion model: K samples per molecule, sample j*M + i conditioned on molecule i
    items = [m for _ in range(args.k) for m in molecules]
    conditioning = conditioning_state(space.collate(items), conditioning_fields(space))
    t0 = time.perf_counter()
    with torch.no_grad():
        samples, _, timing = generate(run, len(items), sampler=args.sampler, steps=args.steps, seed=args.seed, device=args.device, progress=True,
                                      conditioning=conditioning)
    seconds = time.perf_counter() - t0
    space.write(samples, out / "samples", labels=[i for _ in range(args.k) for i in range(len(molecules))])
    rmsds = [[] for _ in molecules]
    for j, sample in enumerate(samples):
        try:
            rmsds[j % len(molecules)].append(best_rmsd(space.parts(sample), truth[j % len(molecules)]))
        except Exception:  # noqa: BLE001 - counted as a failure of this conformer
            pass
    best, failed = per_molecule(rmsds)
    report["results"][f"diffusion ({timing['sampler']}, {timing['nfe']} NFE)"] = {**rmsd_figures(best, failed=failed), "seconds_per_molecule": seconds / len(molecules)}
    report["per_molecule"] = {"diffusion": [min(r) if r else None for r in rmsds]}

    for name, mmff in (("ETKDG", False), ("ETKDG + MMFF", True)):
        t0 = time.perf_counter()
        rmsds = []
        for i, (symbols, charges, bonds, pos) in enumerate(truth):
            found = []
            for conf in etkdg_positions(symbols, charges, bonds, k=args.k, seed=args.seed + i, mmff=mmff):
                try:
                    found.append(best_rmsd((symbols, charges, bonds, conf), (symbols, charges, bonds, pos)))
                except Exception:  # noqa: BLE001
                    pass
            rmsds.append(found)
        best, failed = per_molecule(rmsds)
        report["results"][name] = {**rmsd_figures(best, failed=failed), "seconds_per_molecule": (time.perf_counter() - t0) / len(molecules)}
        report["per_molecule"][name] = [min(r) if r else None for r in rmsds]
    diffusion_median = next(iter(report["results"].values()))["rmsd_median"]
    report["diffusion_beats_etkdg_median"] = bool(np.isfinite(diffusion_median) and diffusion_median < report["results"]["ETKDG"]["rmsd_median"])
    atomic_write_json(out / "conformers.json", report)
    (out / "conformers.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
