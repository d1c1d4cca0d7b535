"""``diffkit bench``: one protocol over every installed modality, each task by every method it has.

A task is a registered recipe that carries a ``[bench]`` table. Several recipes may give one task by different
methods (``[bench] task = "gmm"``, ``method = "flow-matching"``; the method defaults to ``diffusion``): the same
data, backbone and budget per tier, trained once per method, reported side by side. For each task, method and
tier the protocol trains with the tier's fixed budget and seed, samples with every applicable sampler at each NFE
of the tier (those the recipe lists, plus every installed plugin sampler that updates one of its process
families: :func:`bench_samplers`; plus the ancestral sampler at full length), scores the samples with the task's
metrics and times everything: training items/s, samples/s, seconds per network evaluation, peak memory; for
spaces whose elements last a time (``space.duration`` seconds, audio), also seconds of signal trained per second
and the sampling real-time factor, seconds of compute per second of signal (below 1: faster than real time).

Output in ``--out``: ``report.json`` (every figure, the machine, versions, seed, tier; per task its ``methods``
with their training, ``rows`` with each row's ``method``, and ``best_by_nfe``: each method's best row at each
NFE by the primary metric), ``report.md`` (per task the methods side by side, then each method's table), one PNG
per task of its primary metric against NFE per sampler (one panel per method, one y axis), and the samples in
their natural form under ``tasks/TASK/METHOD/``. ``report.json`` is rewritten after each task, so an interrupted
run resumes without redoing finished tasks.

A recipe's bench table::

    [bench]
    task = "gmm"                         # the task this recipe runs (default: the recipe's name)
    method = "flow-matching"             # default "diffusion"; one recipe per task and method
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
import re
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
DEFAULT_METHOD = "diffusion"
METHOD_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def method_of(recipe: dict) -> str:
    """The method a bench recipe trains its task by (``[bench] method``, default ``diffusion``): a lower-case
    word or hyphenated words, since it names a folder of the report."""
    method = recipe["bench"].get("method", DEFAULT_METHOD)
    if not isinstance(method, str) or not METHOD_NAME.fullmatch(method):
        raise ValueError(f"recipe {recipe.get('name')!r}: [bench] method must be lower-case words joined by hyphens "
                         f"(e.g. \"flow-matching\"), got {method!r}")
    return method


def method_label(method: str) -> str:
    """``flow-matching`` -> ``flow matching``, for tables and plots."""
    return method.replace("-", " ")


def discover_tasks() -> dict[str, dict[str, dict]]:
    """``{task: {method: recipe}}`` over every registered recipe with a ``[bench]`` table, ``diffusion`` first and
    the other methods in name order. Broken recipes, and a second recipe for a task and method already taken, are
    skipped and reported."""
    from diffkit.recipe import load_recipe
    from diffkit.registry import RegistryError, names

    tasks, skipped = {}, {}
    for name in names("recipes"):
        try:
            recipe = load_recipe(f"recipe:{name}")  # a registered name, whatever files lie here
            if "bench" not in recipe:
                continue
            method = method_of(recipe)
        except (RegistryError, ValueError) as exc:
            skipped[name] = str(exc)
            continue
        task = recipe["bench"].get("task", name)
        methods = tasks.setdefault(task, {})
        if method in methods:
            skipped[name] = (f"recipe {methods[method]['name']!r} already gives bench task {task!r} by method {method!r}; "
                             f"give this one another [bench] method or task")
            continue
        methods[method] = recipe
    for name, err in skipped.items():
        print(f"diffkit bench: skipping recipe {name!r}: {err}", file=sys.stderr)
    return {task: dict(sorted(methods.items(), key=lambda kv: (kv[0] != DEFAULT_METHOD, kv[0]))) for task, methods in tasks.items()}


def tier_recipe(recipe: dict, tier: str) -> tuple[dict, dict]:
    """Apply a tier's overrides; returns the recipe to train and the sampling plan."""
    import copy

    recipe = copy.deepcopy(recipe)
    bench = recipe["bench"]
    over = bench.get(tier, {})
    for section in ("train", "sample", "data", "model", "representation"):
        if section in over:
            if section in ("data", "representation") and "options" in over[section]:  # options merged key by key, other keys replaced
                recipe[section].setdefault("options", {}).update(over[section]["options"])
                recipe[section].update({k: v for k, v in over[section].items() if k != "options"})
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


def run_method(recipe: dict, tier: str, method_dir: Path, device: str = "cpu", progress: bool = True, seed: int = 0, label: str = "") -> dict:
    """Train one recipe at a tier's budget (or resume its run in ``method_dir/run``) and sample it with every sampler
    at every NFE of the tier; returns its training figures and its rows."""
    from diffkit.runs import evaluate, generate, load_run, read_log
    from diffkit.samplers import registered, steps_for_nfe
    from diffkit.training.trainer import train

    recipe, plan = tier_recipe(recipe, tier)
    recipe["seed"] = seed
    run_dir = method_dir / "run"
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
            print(f"[bench {tier}] {label}: {sampler} at NFE {fn.nfe(steps, **opts)}" + (f", guidance {guidance:g}" if several else ""), file=sys.stderr, flush=True)
        if device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        items, labels, timing = generate(run, plan["n"], sampler=sampler, steps=steps, guidance=guidance, seed=seed, device=device, options=opts)
        sample_dir = method_dir / "samples" / (f"{sampler}-nfe{timing['nfe']}" + (f"-w{guidance:g}" if several else ""))
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
    return {"recipe": recipe["name"], "train": {"steps": steps_done, "steps_planned": recipe["train"]["steps"], "batch_size": recipe["train"]["batch_size"],
            "seconds": train_seconds, "items_per_second": throughput, **({"signal_seconds_per_second": throughput * duration} if duration else {})},
            **({"seconds_per_item": duration} if duration else {}), "primary": plan["primary"], "higher_is_better": plan["higher_is_better"],
            "samples_dir": str(method_dir / "samples"), "rows": rows}


def run_task(name: str, methods: dict[str, dict], tier: str, out: Path, device: str = "cpu", progress: bool = True, seed: int = 0) -> dict:
    """Every method of a task (``{method: recipe}``, :func:`discover_tasks`) at one tier, each in
    ``out/tasks/NAME/METHOD``; a method that fails is reported with its error and the others still run.
    The task's rows are the methods' rows, each marked with its ``method``."""
    task_dir = out / "tasks" / name
    task = {"task": name, "tier": tier, "methods": {}, "rows": []}
    for method, recipe in methods.items():
        label = name if len(methods) == 1 else f"{name} ({method_label(method)})"
        started = time.perf_counter()
        try:
            result = run_method(recipe, tier, task_dir / method, device, progress, seed, label)
        except Exception as exc:  # noqa: BLE001 - one failing method is reported, the others run
            task["methods"][method] = {"recipe": recipe.get("name"), "error": f"{type(exc).__name__}: {exc}"}
            continue
        result["seconds"] = time.perf_counter() - started  # this method's training, sampling and metrics
        rows = result.pop("rows")
        task["rows"] += [{"method": method, **row} for row in rows]
        for key in ("primary", "higher_is_better", "seconds_per_item"):
            if key in result:
                value = result.pop(key)
                task.setdefault(key, value)
        task["methods"][method] = result
    if not task["rows"]:
        errors = "; ".join(f"{m}: {info['error']}" for m, info in task["methods"].items())
        return {**task, "error": errors}
    task["primary"] = task.get("primary") or _first_metric(task["rows"])
    task["higher_is_better"] = bool(task.get("higher_is_better", False))
    task["best_by_nfe"] = best_by_nfe(task["rows"], task["primary"], task["higher_is_better"]) if task["primary"] else []
    plot = _plot_task(name, task["rows"], task["primary"], task_dir / f"{name}-{task['primary']}-vs-nfe.png") if task["primary"] else None
    task["plot"] = None if plot is None else str(plot)
    return task


def best_by_nfe(rows: list[dict], metric: str, higher_is_better: bool) -> list[dict]:
    """For each NFE some row reached, each method's best row there by ``metric``:
    ``[{"nfe": 10, "diffusion": {"sampler", "guidance", "value"} or None, "flow-matching": ...}, ...]``."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    table = []
    for nfe in sorted({r["nfe"] for r in rows}):
        line = {"nfe": nfe}
        for method in methods:
            scored = [r for r in rows if r["method"] == method and r["nfe"] == nfe and _finite(r["metrics"].get(metric))]
            if not scored:
                line[method] = None
                continue
            pick = (max if higher_is_better else min)(scored, key=lambda r: r["metrics"][metric])
            line[method] = {"sampler": pick["sampler"], "guidance": pick.get("guidance"), "value": pick["metrics"][metric]}
        table.append(line)
    return table


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
    """The primary metric against NFE, one line per sampler (and guidance scale), one panel per method."""
    from diffkit.plotting import panels_png

    panels = {}
    several = len({row.get("guidance") for row in rows}) > 1
    methods = list(dict.fromkeys(row["method"] for row in rows))
    for row in rows:
        value = row["metrics"].get(metric)
        if _finite(value):
            label = row["sampler"] + (f", w = {row['guidance']:g}" if several and row.get("guidance") is not None else "")
            panel = panels.setdefault(method_label(row["method"]) if len(methods) > 1 else "", {})
            panel.setdefault(label, ([], []))
            panel[label][0].append(row["nfe"])
            panel[label][1].append(value)
    if not panels:
        return None
    positive = all(v > 0 for series in panels.values() for _, ys in series.values() for v in ys)
    return panels_png(panels, path, "network evaluations (NFE)", metric, title=f"{name}: {metric} against NFE", logy=positive)


def _number(value) -> str:
    return "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def _training_line(tr: dict) -> str:
    return (f"training: {tr['steps']} steps of {tr['batch_size']} in {tr['seconds']:.1f} s ({tr['items_per_second']:.0f} items/s)"
            + (f" = {tr['signal_seconds_per_second']:.1f} s of signal per second" if "signal_seconds_per_second" in tr else "")
            + (f", stopped by its time budget ({tr['steps_planned']} planned)" if tr.get("steps_planned", tr["steps"]) > tr["steps"] else ""))


def _side_by_side(task: dict) -> list[str]:
    """The methods in columns: recipe, training, and at each NFE each method's best row by the primary metric
    (the better of the methods in bold)."""
    methods = list(task["methods"])
    primary, higher = task["primary"], task["higher_is_better"]
    lines = ["| | " + " | ".join(method_label(m) for m in methods) + " |", "|---|" + "---|" * len(methods)]
    lines.append("| recipe | " + " | ".join(f"`{task['methods'][m].get('recipe')}`" for m in methods) + " |")
    lines.append("| training | " + " | ".join(
        f"failed: {info['error']}" if "error" in info else f"{info['train']['steps']} steps of {info['train']['batch_size']} in {info['train']['seconds']:.1f} s; {info['seconds']:.0f} s in all"
        for info in task["methods"].values()) + " |")
    for line in task.get("best_by_nfe", []):
        values = [line.get(m)["value"] for m in methods if line.get(m)]
        best = (max if higher else min)(values) if len(values) > 1 else None
        cells = []
        for m in methods:
            pick = line.get(m)
            if not pick:
                cells.append("")
                continue
            text = _number(pick["value"])
            cells.append((f"**{text}**" if pick["value"] == best else text) + f" ({pick['sampler']}" + (f", w {pick['guidance']:g}" if pick.get("guidance") is not None else "") + ")")
        lines.append(f"| NFE {line['nfe']}: best {primary} | " + " | ".join(cells) + " |")
    return lines


def _rows_table(task: dict, rows: list[dict]) -> list[str]:
    keys = sorted({k for r in rows for k, v in r["metrics"].items() if isinstance(v, (int, float))})
    best = {}
    vals = [r["metrics"].get(task["primary"]) for r in rows if isinstance(r["metrics"].get(task["primary"]), (int, float))]
    if vals:
        best[task["primary"]] = max(vals) if task["higher_is_better"] else min(vals)
    guided = any(r.get("guidance") is not None for r in rows)
    timed = all("real_time_factor" in r for r in rows)
    lines = ["| sampler | NFE | " + ("guidance | " if guided else "") + " | ".join(keys) + " | samples/s | s per NFE |" + (" RTF |" if timed else ""),
             "|---|---:|" + ("---:|" if guided else "") + "---:|" * len(keys) + "---:|---:|" + ("---:|" if timed else "")]
    for r in rows:
        cells = []
        for k in keys:
            v = r["metrics"].get(k)
            text = _number(v)
            cells.append(f"**{text}**" if k in best and v == best[k] else text)
        w = r.get("guidance")
        lines.append(f"| {r['sampler']} | {r['nfe']} | " + ((f"{w:g} | " if w is not None else "none | ") if guided else "") + " | ".join(cells) + f" | {r['samples_per_second']:.1f} | {r['seconds_per_nfe']:.4f} |"
                     + (f" {r['real_time_factor']:.3g} |" if timed else ""))
    return lines


def render_markdown(report: dict) -> str:
    total = sum(t.get("seconds", 0.0) for t in report["tasks"].values())
    lines = [f"# diffkit bench: tier {report['tier']}", "", f"- date: {report['date']}", f"- wall-clock time of the tasks: {total:.0f} s", f"- machine: {report['machine']['processor']}, {report['machine']['cpus']} CPUs"
             + (f", {report['machine']['gpu']}" if "gpu" in report["machine"] else ""), f"- torch {report['machine']['torch']}, diffkit {report['machine']['diffkit']}, seed {report['seed']}", ""]
    for name, task in report["tasks"].items():
        lines += [f"## {name}", ""]
        if "error" in task:
            lines += [f"failed: {task['error']}", ""]
            continue
        if "seconds" in task:
            lines += [f"wall-clock time {task['seconds']:.0f} s (data, training, sampling, metrics)", ""]
        methods = task["methods"]
        if len(methods) > 1:
            lines += _side_by_side(task) + [""]
        for method, info in methods.items():
            if len(methods) > 1:
                lines += [f"### {method_label(method)} (recipe `{info.get('recipe')}`)", ""]
            if "error" in info:
                lines += [f"failed: {info['error']}", ""]
                continue
            lines += [_training_line(info["train"]), ""]
            lines += _rows_table(task, [r for r in task["rows"] if r["method"] == method]) + [""]
        if task.get("plot"):
            lines += [f"![{name}]({Path(task['plot']).relative_to(report['out']) if task['plot'].startswith(report['out']) else task['plot']})", ""]
    return "\n".join(lines)


def _finished(task: dict | None, methods: dict) -> bool:
    """Whether an earlier run's entry for a task holds every method the task has now, none of them failed."""
    done = (task or {}).get("methods", {})
    return bool(task) and "error" not in task and set(done) == set(methods) and not any("error" in m for m in done.values())


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
        if _finished(report["tasks"].get(name), available[name]):
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
