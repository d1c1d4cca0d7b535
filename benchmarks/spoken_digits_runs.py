"""Trained spoken-digit models side by side: judge figures and real-time factor per sampler setting.

Each run (a run directory or a shipped model's name) draws ``--n`` clips per setting, class labels cycling
through the ten digits, and is scored by the audio plugin's judge against the recipe's reference split:
class accuracy, FD (with the half-reference floor), IS (with the real clips'). The real-time factor is the
wall time of drawing and decoding the clips (a two-stage run's vocoder included) over the audio's duration.

    python benchmarks/spoken_digits_runs.py --runs runs/sd-mel spoken-digits-cpu --settings 1.5@10 2@10 4@100@ancestral 3/0.3-0.9@10
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

import torch


def parse_setting(text: str) -> dict:
    """``GUIDANCE[/T_LO-T_HI]@STEPS[@SAMPLER]``, e.g. ``2@10`` (DPM-Solver++(2M)), ``4@100@ancestral``, or
    ``3/0.3-0.9@10`` (guidance 3 only at times 0.3 < t <= 0.9, ``[sample] guidance_interval``). Without an
    interval a setting guides at every level, even where the run's recipe names an interval. The keys are
    :func:`diffkit.runs.generate`'s keyword arguments, so a caller passes the setting whole (``generate(run, n, **s)``)."""
    parts = text.split("@")
    if len(parts) not in (2, 3):
        raise SystemExit(f"setting {text!r}: write GUIDANCE[/T_LO-T_HI]@STEPS[@SAMPLER], e.g. 2@10, 4@100@ancestral or 3/0.3-0.9@10")
    guidance, _, interval = parts[0].partition("/")
    return {"guidance": float(guidance), "steps": int(parts[1]), "sampler": parts[2] if len(parts) == 3 else "dpmpp-2m",
            "guidance_interval": [float(v) for v in interval.split("-")] if interval else []}  # [] guides every level, whatever the recipe says


def _interval(row: dict) -> str:
    interval = row.get("guidance_interval")
    return f" in ({interval[0]:g}, {interval[1]:g}]" if interval else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run directories or shipped model names")
    parser.add_argument("--settings", nargs="+", default=["2@10"], help="GUIDANCE[/T_LO-T_HI]@STEPS[@SAMPLER] per row")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed of every row (the noise drawn; labels still cycle through the digits)")
    parser.add_argument("--write", default=None, help="one of the --settings, as written there: write 16 clips and spectrograms of this setting per run")
    parser.add_argument("--out", default=f"benchmarks/results/spoken-digits-runs-{dt.date.today().isoformat()}.json")
    args = parser.parse_args(argv)
    from diffkit.cpu import flush_denormals

    flush_denormals()
    torch.set_num_threads(args.threads)
    from diffkit.pretrained import resolve
    from spoken_digits_mel import judge_cells  # the sibling script (benchmarks/ is on the path when this one runs)
    from diffkit.runs import evaluate, generate, load_run

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"date": dt.date.today().isoformat(), "threads": args.threads, "n": args.n, "seed": args.seed, "load_average_start": os.getloadavg()[0], "rows": []}
    settings = [(text, parse_setting(text)) for text in args.settings]
    for name in args.runs:
        run = load_run(resolve(name)[0])
        space = run.data_space
        for text, s in settings:
            t0 = time.perf_counter()
            items, labels, timing = generate(run, args.n, **s, seed=args.seed)
            metrics = evaluate(run, items, labels)
            audio_seconds = len(items) * space.length / space.sample_rate
            row = {"run": name, "recipe": run.recipe.get("name"), **s, "nfe": timing["nfe"], "seconds": timing["seconds"],
                   "real_time_factor": timing["seconds"] / audio_seconds, "load_average": os.getloadavg()[0],
                   "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
            report["rows"].append(row)
            m = row["metrics"]
            print(f"{name} {text}: accuracy {m.get('spoken_digits_accuracy', float('nan')):.3f}, FD {m.get('spoken_digits_fd', float('nan')):.1f} "
                  f"(floor {m.get('spoken_digits_fd_floor', float('nan')):.1f}, half-reference {m.get('spoken_digits_fd_half_floor', float('nan')):.1f}), IS {m.get('spoken_digits_is', float('nan')):.2f}, "
                  f"RTF {row['real_time_factor']:.4f} ({time.perf_counter() - t0:.0f} s with scoring)", flush=True)
            if args.write == text:
                space.write(items[:16], out.with_suffix("") / f"{Path(name).name}-g{s['guidance']:g}-{s['sampler']}-{s['steps']}", labels=labels[:16])
    out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Spoken-digit models side by side ({report['date']})", "",
             f"{args.n} clips per row, labels cycling through the digits; judged against each recipe's reference split. "
             f"Sampling seed {args.seed}; {args.threads} torch thread(s); load average {report['load_average_start']:.1f} at the start.", "",
             "| run | sampler | steps | NFE | guidance | accuracy | FD (floor) | IS (real) | real-time factor |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        m = r["metrics"]
        accuracy, fd, inception = judge_cells(m)
        lines.append(f"| {r['run']} | {r['sampler']} | {r['steps']} | {r['nfe']} | {r['guidance']:g}{_interval(r)} | {accuracy} | {fd} | "
                     f"{inception} ({m.get('spoken_digits_is_reference', float('nan')):.2f}) | {r['real_time_factor']:.4f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
