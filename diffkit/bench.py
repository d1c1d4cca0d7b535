"""``diffkit bench``: one protocol over every installed modality.

A task is a registered recipe that carries a ``[bench]`` table. For each task and tier the protocol
trains with the tier's fixed budget and seed, samples with every applicable sampler at each NFE of
the tier (those the task lists, plus every installed plugin sampler that updates one of the task's process
families: :func:`bench_samplers`; plus the ancestral sampler at full length), scores the samples with the task's metrics and
times everything: training items/s, samples/s, seconds per network evaluation, peak memory; for spaces
whose elements last a time (``space.duration`` seconds, audio), also seconds of signal trained per second
and the sampling real-time factor, seconds of compute per second of signal (below 1: faster than real time).

Output in ``--out``: ``report.json`` (every figure, the machine, versions, seed, tier), ``report.md``
(tables), one PNG per task of its primary metric against NFE per sampler, and the samples themselves
in their natural form. ``report.json`` is rewritten after each task, so an interrupted run resumes
without redoing finished tasks.

A recipe's bench table::

    [bench]
    primary = "sliced_wasserstein"      # the metric plotted against NFE (lower is better unless higher_is_better)
    higher_is_better = false
    samplers = ["ddim", "euler", "heun", "dpmpp-2m", "dpmpp-3m"]
    ancestral_steps = 1000
    guidance = 2.0                       # classifier-free guidance scale (default: the recipe's [sample] guidance)
    [bench.quick]                        # per-tier overrides
    train = { steps = 300 }
    n = 500
    nfe = [10]
    ancestral_steps = 100
    guidance = [2.0, 4.0]                # a list: every sampler row is run at each scale
"""
from __future__ import annotations

import json
import math
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from diffkit import __version__
from diffkit.rundir import atomic_write_json, read_config

TIERS = ("quick", "standard", "full")
DEFAULT_NFE = {"quick": [10], "standard": [10, 20, 50], "full": [10, 20, 50]}
DEFAULT_SAMPLERS = ["ddim", "euler", "heun", "dpmpp-2m", "dpmpp-3m"]


def discover_tasks() -> dict[str, dict]:
    """Every registered recipe with a ``[bench]`` table, by task name; broken recipes are skipped and reported."""
    from diffkit.recipe import load_recipe
    from diffkit.registry import RegistryError, names

    tasks, broken = {}, {}
    for name in names("recipes"):
        try:
            recipe = load_recipe(f"recipe:{name}")  # a registered name, whatever files lie here
        except (RegistryError, ValueError) as exc:
            broken[name] = str(exc)
            continue
        if "bench" in recipe:
            tasks[recipe["bench"].get("task", name)] = recipe
    if broken:
        for name, err in broken.items():
            print(f"diffkit bench: skipping recipe {name!r}: {err}", file=sys.stderr)
    return tasks


def tier_recipe(recipe: dict, tier: str) -> tuple[dict, dict]:
    """Apply a tier's overrides; returns the recipe to train and the sampling plan."""
    import copy

    recipe = copy.deepcopy(recipe)
    bench = recipe["bench"]
    over = bench.get(tier, {})
    for section in ("train", "sample", "data", "model", "representation"):
        if section in over:
            if section in ("data", "representation") and "options" in over[section]:
                recipe[section].setdefault("options", {}).update(over[section]["options"])
            else:
                recipe[section].update(over[section])
    plan = {
        "n": int(over.get("n", bench.get("n", recipe["sample"]["n"]))),
        "nfe": list(over.get("nfe", bench.get("nfe", DEFAULT_NFE[tier]))),
        "samplers": list(over.get("samplers", bench.get("samplers", DEFAULT_SAMPLERS))),
        "ancestral_steps": int(over.get("ancestral_steps", bench.get("ancestral_steps", 1000))),
        "primary": bench.get("primary"),
        "higher_is_better": bool(bench.get("higher_is_better", False)),
        "guidance": _guidance_list(over.get("guidance", bench.get("guidance", recipe["sample"].get("guidance")))),
        "options": bench.get("options", {}),
    }
    return recipe, plan


def _guidance_list(value) -> list:
    """A tier's guidance: one scale, a list of scales (every sampler row is run at each), or none."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    for w in values:
        if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float))):
            raise ValueError(f"bench guidance must be a number or a list of numbers, got {value!r}; e.g. guidance = [2.0, 4.0]")
    return [None if w is None else float(w) for w in values] or [None]


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def machine() -> dict:
    info = {"platform": platform.platform(), "python": sys.version.split()[0], "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "diffkit": __version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_task(name: str, recipe: dict, tier: str, out: Path, device: str = "cpu", progress: bool = True, seed: int = 0) -> dict:
    from diffkit.runs import evaluate, generate, load_run, read_log
    from diffkit.samplers import registered, steps_for_nfe
    from diffkit.training.trainer import train

    recipe, plan = tier_recipe(recipe, tier)
    recipe["seed"] = seed
    task_dir = out / "tasks" / name
    run_dir = task_dir / "run"
    t0 = time.perf_counter()
    if (run_dir / "config.json").exists():
        cfg = read_config(run_dir)
        if cfg.get("step", 0) < recipe["train"]["steps"]:
            train(recipe, run_dir, device=device, resume=True, progress=progress)
    else:
        train(recipe, run_dir, device=device, progress=progress)
    train_seconds = time.perf_counter() - t0
    steps_done = int(read_config(run_dir).get("step", recipe["train"]["steps"]))  # fewer when a time budget stopped it
    log = [r for r in read_log(run_dir) if "items_per_second" in r]
    throughput = sum(r["items_per_second"] for r in log) / max(len(log), 1)
    run = load_run(run_dir, device=device)
    duration = getattr(run.data_space, "duration", None)  # seconds of signal per element, for spaces that have one (audio)
    reference_data = None
    rows = []
    jobs = [(s, nfe) for s in bench_samplers(plan["samplers"], run.diffusion) for nfe in plan["nfe"]]
    jobs.append(("ancestral", plan["ancestral_steps"]))
    several = len(plan["guidance"]) > 1
    jobs = [(sampler, nfe, w) for w in plan["guidance"] for sampler, nfe in jobs]
    installed = registered()
    for sampler, nfe, guidance in jobs:
        fn = installed[sampler]
        opts = plan["options"].get(sampler, {})
        steps = steps_for_nfe(fn, nfe, **opts)
        if progress:
            print(f"[bench {tier}] {name}: {sampler} at NFE {fn.nfe(steps, **opts)}" + (f", guidance {guidance:g}" if several else ""), file=sys.stderr, flush=True)
        if device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        items, labels, timing = generate(run, plan["n"], sampler=sampler, steps=steps, guidance=guidance, seed=seed, device=device, options=opts)
        sample_dir = task_dir / "samples" / (f"{sampler}-nfe{timing['nfe']}" + (f"-w{guidance:g}" if several else ""))
        if reference_data is None and recipe.get("eval", {}).get("metrics"):
            from diffkit.recipe import load_dataset

            reference_data = load_dataset(recipe, recipe.get("eval", {}).get("reference", "test"))
        metrics = evaluate(run, items, labels, out_dir=sample_dir, reference_data=reference_data) if reference_data is not None else {}
        write_kwargs = {"labels": labels}
        run.data_space.write(items[: min(len(items), 64)], sample_dir, **write_kwargs)
        nfe_per_sample = timing["nfe"]
        rows.append({
            "sampler": sampler, "steps": steps, "nfe": nfe_per_sample, "guidance": guidance, "n": plan["n"], "seconds": timing["seconds"],
            "samples_per_second": timing["samples_per_second"], "seconds_per_nfe": timing["seconds_per_evaluation"],
            "peak_memory_mb": _peak_memory_mb(device),
            **({"real_time_factor": timing["seconds"] / (plan["n"] * duration)} if duration else {}), "metrics": {k: v for k, v in metrics.items() if k != "errors"}, "metric_errors": metrics.get("errors", {}),
        })
    primary = plan["primary"] or _first_metric(rows)
    plot = _plot_task(name, rows, primary, task_dir / f"{name}-{primary}-vs-nfe.png") if primary else None
    return {"task": name, "recipe": recipe["name"], "tier": tier, "train": {"steps": steps_done, "steps_planned": recipe["train"]["steps"], "batch_size": recipe["train"]["batch_size"],
            "seconds": train_seconds, "items_per_second": throughput, **({"signal_seconds_per_second": throughput * duration} if duration else {})},
            **({"seconds_per_item": duration} if duration else {}), "primary": primary, "higher_is_better": plan["higher_is_better"],
            "rows": rows, "plot": None if plot is None else str(plot), "samples_dir": str(task_dir / "samples")}


def bench_samplers(listed: list[str], diffusion) -> list[str]:
    """The samplers a task is benchmarked with: those its ``[bench]`` table lists that are installed, then every
    sampler another distribution declares (plugins, and ``registry.register`` in this process) whose ``updates``
    family has a field in the task's diffusion, in name order. The declarations come from the registry."""
    from diffkit.registry import discover
    from diffkit.samplers import registered, spec_of

    installed = registered()
    chosen = [s for s in listed if s in installed]
    builtin = {name for (kind, name), comp in discover().items() if kind == "samplers" and comp.distribution == "diffkit"}
    for name, fn in sorted(installed.items()):
        spec = spec_of(fn)
        if name in chosen or name in builtin or spec is None:
            continue
        if diffusion.fields_of(spec.updates):
            chosen.append(name)
    return chosen


def _first_metric(rows: list[dict]) -> str | None:
    for row in rows:
        for key, value in row["metrics"].items():
            if isinstance(value, float):
                return key
    return None


def _plot_task(name: str, rows: list[dict], metric: str, path: Path) -> Path | None:
    from diffkit.plotting import curves_png

    series = {}
    several = len({row.get("guidance") for row in rows}) > 1
    for row in rows:
        value = row["metrics"].get(metric)
        if isinstance(value, float) and math.isfinite(value):
            label = row["sampler"] + (f", w = {row['guidance']:g}" if several and row.get("guidance") is not None else "")
            series.setdefault(label, ([], []))
            series[label][0].append(row["nfe"])
            series[label][1].append(value)
    if not series:
        return None
    positive = all(v > 0 for _, ys in series.values() for v in ys)
    return curves_png(series, path, "network evaluations (NFE)", metric, title=f"{name}: {metric} against NFE", logy=positive)


def render_markdown(report: dict) -> str:
    total = sum(t.get("seconds", 0.0) for t in report["tasks"].values())
    lines = [f"# diffkit bench: tier {report['tier']}", "", f"- date: {report['date']}", f"- wall-clock time of the tasks: {total:.0f} s", f"- machine: {report['machine']['processor']}, {report['machine']['cpus']} CPUs"
             + (f", {report['machine']['gpu']}" if "gpu" in report["machine"] else ""), f"- torch {report['machine']['torch']}, diffkit {report['machine']['diffkit']}, seed {report['seed']}", ""]
    for name, task in report["tasks"].items():
        if "error" in task:
            lines += [f"## {name}", "", f"failed: {task['error']}", ""]
            continue
        tr = task["train"]
        lines += [f"## {name}", "", (f"wall-clock time {task['seconds']:.0f} s (data, training, sampling, metrics); " if "seconds" in task else "") + f"training: {tr['steps']} steps of {tr['batch_size']} in {tr['seconds']:.1f} s ({tr['items_per_second']:.0f} items/s)"
                  + (f" = {tr['signal_seconds_per_second']:.1f} s of signal per second" if "signal_seconds_per_second" in tr else "")
                  + (f", stopped by its time budget ({tr['steps_planned']} planned)" if tr.get("steps_planned", tr["steps"]) > tr["steps"] else ""), ""]
        keys = sorted({k for r in task["rows"] for k, v in r["metrics"].items() if isinstance(v, (int, float))})
        best = {}
        for k in keys:
            vals = [r["metrics"].get(k) for r in task["rows"] if isinstance(r["metrics"].get(k), (int, float))]
            if vals and k == task["primary"]:
                best[k] = max(vals) if task["higher_is_better"] else min(vals)
        guided = any(r.get("guidance") is not None for r in task["rows"])
        timed = all("real_time_factor" in r for r in task["rows"])
        lines.append("| sampler | NFE | " + ("guidance | " if guided else "") + " | ".join(keys) + " | samples/s | s per NFE |" + (" RTF |" if timed else ""))
        lines.append("|---|---:|" + ("---:|" if guided else "") + "---:|" * len(keys) + "---:|---:|" + ("---:|" if timed else ""))
        for r in task["rows"]:
            cells = []
            for k in keys:
                v = r["metrics"].get(k)
                text = "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
                if k in best and v == best[k]:
                    text = f"**{text}**"
                cells.append(text)
            w = r.get("guidance")
            lines.append(f"| {r['sampler']} | {r['nfe']} | " + ((f"{w:g} | " if w is not None else "none | ") if guided else "") + " | ".join(cells) + f" | {r['samples_per_second']:.1f} | {r['seconds_per_nfe']:.4f} |"
                         + (f" {r['real_time_factor']:.3g} |" if timed else ""))
        if task.get("plot"):
            lines += ["", f"![{name}]({Path(task['plot']).relative_to(report['out']) if task['plot'].startswith(report['out']) else task['plot']})"]
        lines.append("")
    return "\n".join(lines)


def run_bench(tier: str = "quick", tasks: list[str] | None = None, device: str = "cpu", out: str | Path = "bench-out", progress: bool = True, seed: int = 0) -> dict:
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; use one of {TIERS}")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    available = discover_tasks()
    chosen = tasks or sorted(available)
    unknown = [t for t in chosen if t not in available]
    if unknown:
        raise ValueError(f"unknown bench task(s) {unknown}; installed tasks: {sorted(available)}")
    path = out / "report.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    if report.get("tier") != tier or report.get("seed") != seed:
        report = {"tier": tier, "seed": seed, "tasks": {}}
    report.update({"date": time.strftime("%Y-%m-%d"), "machine": machine(), "out": str(out), "device": device})
    for name in chosen:
        if name in report["tasks"] and "error" not in report["tasks"][name]:
            if progress:
                print(f"[bench {tier}] {name}: done in an earlier run, kept", file=sys.stderr)
            continue
        started = time.perf_counter()
        try:
            report["tasks"][name] = run_task(name, available[name], tier, out, device, progress, seed)
        except Exception as exc:  # noqa: BLE001 - one failing task is reported, the others run
            report["tasks"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        # the task's whole wall-clock time: data preparation, training, sampling, metrics (and any cache they fill)
        report["tasks"][name]["seconds"] = time.perf_counter() - started
        if progress:
            print(f"[bench {tier}] {name}: {report['tasks'][name]['seconds']:.0f} s", file=sys.stderr, flush=True)
        atomic_write_json(path, report)
        (out / "report.md").write_text(render_markdown(report))
    atomic_write_json(path, report)
    (out / "report.md").write_text(render_markdown(report))
    return report
