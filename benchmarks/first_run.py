"""A newcomer's first run, timed: clone this repository, make a fresh venv, run the README's main job.

    python benchmarks/first_run.py [--torch cpu|default] [--out benchmarks/results/first-run]

What it does, as the README tells a user to: ``git clone`` of the current commit into a temporary folder,
``python3 -m venv venv``, then ``bash scripts/demo.sh`` with that venv first on PATH (so pip installs
diffkit, its plugins and torch into it, from the warm package cache of this machine). It reads the demo's
own markers (``== set up in``, ``== first result in``, ``== done in``) and writes, to OUT.json and OUT.md:
seconds to a finished install, to the first picture (the shipped gmm model sampled), and to the end of the
main job (training the gmm recipe and sampling it), with the load average before and after. Nothing here
is a test: times depend on the machine and on what else runs on it, which the report records.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKERS = {"setup_seconds": r"== set up in (\d+) s", "first_result_seconds": r"== first result in (\d+) s", "done_seconds": r"== done in (\d+) s"}


def run_first_time(torch_build: str, keep: Path | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="diffkit-first-run-"))
    try:
        clone = work / "diffkit"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(clone / "venv")], check=True)
        venv_seconds = time.perf_counter() - t0
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "OMP_NUM_THREADS")}
        env.update(VIRTUAL_ENV=str(clone / "venv"), PATH=f"{clone / 'venv' / 'bin'}:{os.environ['PATH']}")
        if torch_build == "cpu":
            env["DIFFKIT_TORCH"] = "cpu"
        t0 = time.perf_counter()
        res = subprocess.run(["bash", "scripts/demo.sh"], cwd=clone, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"first_run: scripts/demo.sh failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
        figures = {k: int(m.group(1)) for k, pat in MARKERS.items() if (m := re.search(pat, res.stdout))}
        produced = {p: (clone / p).exists() for p in ("runs/gmm-shipped/samples.png", "runs/gmm/samples/samples.png", "runs/gmm/samples/metrics.json")}
        metrics = json.loads((clone / "runs/gmm/samples/metrics.json").read_text()).get("metrics", {}) if produced["runs/gmm/samples/metrics.json"] else {}
        if keep:
            for p in ("runs/gmm-shipped/samples.png", "runs/gmm/samples/samples.png"):
                if (clone / p).exists():
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(clone / p, keep / p.replace("/", "-"))
        return {"commit": commit, "venv_seconds": round(venv_seconds, 1), "demo_wall_seconds": round(wall, 1), **figures, "files": produced,
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, "stdout_markers": [l for l in res.stdout.splitlines() if l.startswith("==")]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(report: dict) -> str:
    r = report["result"]
    m = report["machine"]
    return "\n".join([
        f"# First run, timed ({report['date']})", "",
        f"`{report['command']}`: a clone of commit {r['commit']}, a new venv, `bash scripts/demo.sh` (torch: {report['torch']} build). "
        f"Machine: {m['cpus']} CPUs, Python {m['python']}; load average before {m['load_before']}, after {m['load_after']}.", "",
        "| step | seconds from the start of demo.sh |", "|---|---|",
        f"| installed (diffkit, 4 plugins, test tools, torch from the package cache) | {r.get('setup_seconds', '–')} |",
        f"| first result: the shipped gmm model sampled (`runs/gmm-shipped/samples.png`) | {r.get('first_result_seconds', '–')} |",
        f"| main job done: gmm trained from scratch (3,000 steps) and sampled (`runs/gmm/samples/`) | {r.get('done_seconds', '–')} |", "",
        f"Creating the venv took {r['venv_seconds']} s before that. Sliced Wasserstein-2 of the trained model: "
        f"{r['metrics'].get('sliced_wasserstein', float('nan')):.4f} (floor {r['metrics'].get('sliced_wasserstein_floor', float('nan')):.4f}).", ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torch", choices=["default", "cpu"], default="default", help="DIFFKIT_TORCH for setup.sh (default: pip's build)")
    p.add_argument("--out", default=f"benchmarks/results/first-run-{time.strftime('%Y-%m-%d')}")
    p.add_argument("--keep-images", default=None, help="copy the two PNGs here")
    args = p.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    result = run_first_time(args.torch, Path(args.keep_images) if args.keep_images else None)
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": "python benchmarks/first_run.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "torch": args.torch, "result": result,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                          "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()]}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
