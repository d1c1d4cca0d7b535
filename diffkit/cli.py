"""The ``diffkit`` command line. A contract: commands, options and exit codes are kept stable.

Errors end the command with exit status 2 (bad input) or 1 (failure) and one line naming the
problem and the fix; ``--debug`` shows the traceback as well.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _eval_epilog() -> str:
    import textwrap

    from diffkit.evaluator import definitions_markdown

    body = definitions_markdown().split("\n", 4)[-1]  # without the page's title and intro
    out = []
    for line in body.splitlines():
        out.extend(textwrap.wrap(line, 100, subsequent_indent="    ") or [""])
    return "metric definitions (every installed metric):\n\n" + "\n".join(out)


def _sampler_names() -> list[str]:
    """Every installed sampler's name, from the registry (entry points only: nothing is imported)."""
    from diffkit.registry import names

    return names("samplers")


def _parser(with_definitions: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffkit", description="Diffusion generative models across modalities: train, sample, evaluate, benchmark.")
    p.add_argument("--debug", action="store_true", help="show the full traceback when a command fails")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--threads", type=int, default=None, help="CPU threads torch may use (default: torch's choice, usually one per core)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("plugins", help="list every discovered component with its distribution and status")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")

    s = sub.add_parser("train", help="train a recipe (a registered name or a TOML file)")
    s.add_argument("recipe", help="registered recipe name (see 'diffkit plugins') or path to a TOML recipe")
    s.add_argument("--out", default=None, help="run directory to write (default runs/RECIPE)")
    s.add_argument("--steps", type=int, default=None, help="training steps (overrides the recipe)")
    s.add_argument("--minutes", type=float, default=None, help="wall-clock budget: stop (checkpointed) at the first step past it")
    s.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    s.add_argument("--seed", type=int, default=None, help="random seed (overrides the recipe)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    s.add_argument("--init", default=None, metavar="MODEL", help="start from trained weights: 'pretrained' (the shipped model of this recipe), a shipped model's name or a run directory")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("refit-first-stage", help="fit a two-stage run's first stage again with changed options (e.g. a better vocoder), keeping its diffusion stage")
    s.add_argument("run_dir", metavar="RUN", help="a two-stage run directory or a shipped model's name")
    s.add_argument("--out", required=True, help="run directory to write (the source is left as it was)")
    s.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="a [representation] option to change (repeatable); VALUE is read as JSON where it can be (1, 2.5, true), else as text")

    s = sub.add_parser("tune-first-stage", help="train a two-stage run's decoder further on the diffusion's own reconstructions of the training data, keeping its diffusion stage")
    s.add_argument("run_dir", metavar="RUN", help="a two-stage run directory or a shipped model's name")
    s.add_argument("--out", required=True, help="run directory to write (the source is left as it was)")
    s.add_argument("--minutes", type=float, required=True, help="how long the decoder trains")
    s.add_argument("--share", type=float, default=0.8, help="the part of each batch decoded from the diffusion's codes (the rest: the data's own codes); default 0.8")
    s.add_argument("--last", type=int, nargs=2, default=[3, 5], metavar=("K_LO", "K_HI"),
                   help="each code is noised to one of the sampler's last K_LO..K_HI levels and sampled back from there; default 3 5")
    s.add_argument("--sampler", default=None, help="sampler of the reconstructions (default: the recipe's)")
    s.add_argument("--steps", type=int, default=None, help="the sampler's levels (default: the recipe's)")
    s.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the recipe's)")
    s.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("sample", help="draw samples from a trained run directory or a shipped model")
    s.add_argument("run_dir", metavar="RUN", help="directory written by 'diffkit train', or a shipped model's name ('diffkit pretrained')")
    s.add_argument("--n", type=int, default=None, help="number of samples (default: the recipe's)")
    s.add_argument("--sampler", default=None, help="sampler name (" + ", ".join(_sampler_names()) + ")")
    s.add_argument("--steps", type=int, default=None, help="number of noise levels")
    s.add_argument("--schedule", default=None, help="time-step schedule: uniform, logsnr or karras, or one of them with -trailing (the grid one level longer, without t_min: better at few steps); default: the sampler's own; or an explicit grid: a comma-separated list of "
                   "times (0.9,0.5,0.1), of noise levels sigma/alpha (sigma:14.6,2.0,0.03) or of log-SNR values (log-snr:-8,0,6), or a .json file "
                   "holding a list of times or {\"sigma\": [...]}; a grid sets the number of levels")
    s.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = conditional only)")
    s.add_argument("--guidance-interval", nargs="+", default=None, metavar="T",
                   help="T_LO T_HI: guide only at times T_LO < t <= T_HI (data at 0), conditioning plainly elsewhere; 'all': at every level; "
                        "default: the recipe's [sample] guidance_interval, else every level")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", default=None, help="output directory (default RUN/samples, or ./NAME-samples for a shipped model)")
    s.add_argument("--no-metrics", action="store_true", help="skip the recipe's metrics")
    s.add_argument("--reference", default=None, help="file of elements to condition on (e.g. molecules.smi for conformers); --n samples are drawn per element")
    s.add_argument("--constraint", default=None, help="a constraint of the run's space that the sampler keeps at every level (molecules: valence); "
                   "default: the recipe's [sample] constraint; '' turns it off")
    s.add_argument("--constraint-below", type=float, default=None, help="keep the constraint only on the levels from t <= this time (data at 0); default: every level")
    s.add_argument("--quiet", action="store_true")

    s = sub.add_parser("pretrained", help="list the trained models shipped with the installed distributions")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")

    s = sub.add_parser("wheelhouse", help="build the core and every plugin into one folder of wheels")
    s.add_argument("--out", default="wheelhouse", help="folder for the wheels")

    s = sub.add_parser("bench", help="run the cross-modality benchmark protocol")
    s.add_argument("--tier", default="quick", choices=["quick", "standard", "full"])
    s.add_argument("--task", action="append", default=None, help="task name (repeatable; default: every installed task)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", default="bench-out")
    s.add_argument("--quiet", action="store_true")

    s = sub.add_parser("eval", help="score a file or folder of samples against a task's reference set",
                       epilog=_eval_epilog() if with_definitions else "the metric definitions: diffkit eval --help", formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("samples", nargs="?", help="samples in the modality's natural format (a SMILES file, a folder of PNGs or of WAVs)")
    s.add_argument("--definitions", action="store_true", help="print every installed metric's definition as markdown and exit")
    s.add_argument("--task", default=None, help="task (recipe) whose reference set and metrics to use")
    s.add_argument("--reference", default=None, help="reference samples instead of the task's test split")
    s.add_argument("--json", dest="json_out", default=None, help="write the figures to this JSON file")

    s = sub.add_parser("new-plugin", help="scaffold a separately installable modality plugin")
    s.add_argument("name", help="plugin name, e.g. pointcloud (distribution diffkit-NAME)")
    s.add_argument("--dir", default=".", help="parent folder for the new distribution")
    return p


def _cmd_plugins(args) -> int:
    from diffkit.registry import components

    comps = components(check=True)
    if args.json:
        print(json.dumps([c.to_dict() for c in comps], indent=2))
        return 0
    rows = [("KIND", "NAME", "DISTRIBUTION", "VERSION", "STATUS")]
    for c in comps:
        status = c.status if c.status == "ok" else f"{c.status}: {c.error}"
        rows.append((c.to_dict()["kind"], c.name, c.distribution, c.version, status))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    broken = [c for c in comps if c.status != "ok"]
    if broken:
        print(f"\n{len(broken)} component(s) could not be loaded; the others work.", file=sys.stderr)
    return 0


def _check_device(device: str) -> None:
    """Refuse a GPU device torch cannot use here with one line that says what to pass instead (not torch's driver message)."""
    import torch

    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ValueError(f"--device {device}: torch {torch.__version__} ({build}) sees no usable CUDA GPU on this machine; use --device cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: this machine has no usable Apple GPU (MPS); use --device cpu")


def _cmd_refit_first_stage(args) -> int:
    from diffkit.pretrained import resolve
    from diffkit.runs import refit_first_stage

    options = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}; e.g. --set learned_kind=istft")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    if not options:
        raise ValueError("refit-first-stage needs at least one --set KEY=VALUE: with the same options the fit would be the one the run has")
    report = refit_first_stage(resolve(args.run_dir)[0], args.out, options)
    print(json.dumps({"out": args.out, "options": options, "report": report}, indent=2, default=str))
    return 0


def _cmd_tune_first_stage(args) -> int:
    from diffkit.pretrained import resolve
    from diffkit.runs import tune_first_stage

    report = tune_first_stage(resolve(args.run_dir)[0], args.out, minutes=args.minutes, share=args.share, last=tuple(args.last),
                              sampler=args.sampler, steps=args.steps, guidance=args.guidance, seed=args.seed)
    print(json.dumps({"out": args.out, "report": report}, indent=2, default=str))
    return 0


def _cmd_train(args) -> int:
    from diffkit.recipe import recipe_is_path
    from diffkit.training.trainer import train

    _check_device(args.device)
    name = Path(args.recipe).stem if recipe_is_path(args.recipe) else args.recipe.removeprefix("recipe:")
    out = args.out or str(Path("runs") / name)
    summary = train(args.recipe, out, steps=args.steps, device=args.device, seed=args.seed, resume=args.resume, progress=not args.quiet,
                    max_minutes=args.minutes, init=args.init)
    print(json.dumps(summary))
    print(f"wrote {out}/config.json (pointing at its last checkpoint in {out}/checkpoints/) and {out}/log.jsonl", file=sys.stderr)
    return 0


def _schedule_option(text: str | None, steps: int | None):
    """``--schedule``: a named schedule, or an explicit grid whose length is the number of levels (``--steps``, if given, must agree)."""
    from diffkit.samplers.schedules import SCHEDULES, Schedule

    if text is None or text in SCHEDULES:
        return text, steps
    grid = Schedule.parse(text)
    if steps is not None and steps != len(grid):
        raise ValueError(f"--steps {steps} disagrees with the {len(grid)} levels of --schedule {text}; drop --steps (a grid sets the number of levels)")
    return grid, len(grid)


def _guidance_interval_option(words: list[str] | None):
    """``--guidance-interval``: None (the recipe's), ``()`` for ``all`` (every level), or two times."""
    if words is None:
        return None
    if words == ["all"]:
        return ()
    try:
        lo, hi = (float(w) for w in words)
    except ValueError:
        raise ValueError(f"--guidance-interval takes two times T_LO T_HI or the word all, got {' '.join(words)!r}; e.g. --guidance-interval 0.5 0.9") from None
    return lo, hi


def _cmd_sample(args) -> int:
    from diffkit.runs import sample_run

    _check_device(args.device)
    schedule, steps = _schedule_option(args.schedule, args.steps)
    summary = sample_run(args.run_dir, n=args.n, sampler=args.sampler, steps=steps, guidance=args.guidance, seed=args.seed, out=args.out,
                         device=args.device, progress=not args.quiet, evaluate_metrics=not args.no_metrics, schedule=schedule, reference=args.reference,
                         constraint=args.constraint, constraint_below=args.constraint_below, guidance_interval=_guidance_interval_option(args.guidance_interval))
    read = summary.get("reference")
    if read and read["skipped"]:
        first = read["failures"][0]
        print(f"diffkit sample: skipped {read['skipped']} of {read['read'] + read['skipped']} reference elements (first: {first['item']}: {first['reason']})", file=sys.stderr)
    print(json.dumps(summary))
    return 0


def _cmd_pretrained(args) -> int:
    from diffkit.pretrained import card, names

    cards = []
    for name in names():
        try:  # one incomplete distribution is reported, the other shipped models are still listed
            cards.append(card(name))
        except Exception as exc:  # noqa: BLE001 - whatever a plugin's entry point raises
            print(f"diffkit pretrained: skipped {name!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(cards, indent=2))
        return 0
    if not cards:
        print("no shipped models installed; the plugins ship them: pip install 'diffkit[image]' (or [audio], [molecule])")
        return 0
    for c in cards:
        size = sum(c["bytes"].values())
        figures = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in c["figures"]["metrics"].items())
        print(f"{c['name']}: recipe {c['recipe']}, {c['steps']} steps, {size / 1e6:.2f} MB; {c['figures']['sampler']} {c['figures']['steps']} steps, "
              f"n={c['figures']['n']}: {figures}")
    return 0


def _cmd_wheelhouse(args) -> int:
    from diffkit.packaging import build_wheelhouse

    paths = build_wheelhouse(args.out)
    for p in paths:
        print(p)
    return 0


def _cmd_bench(args) -> int:
    from diffkit.bench import run_bench

    _check_device(args.device)
    report = run_bench(tier=args.tier, tasks=args.task, device=args.device, out=args.out, progress=not args.quiet)
    print(json.dumps({"out": args.out, "tasks": list(report.get("tasks", {}))}))
    return 0


def _cmd_eval(args) -> int:
    from diffkit.evaluator import definitions_markdown, evaluate_path

    if args.definitions:
        print(definitions_markdown())
        return 0
    if not args.task or not args.samples:
        raise ValueError("diffkit eval needs SAMPLES and --task NAME (a recipe with an [eval] table, see 'diffkit plugins'); or --definitions")
    result = evaluate_path(args.task, args.samples, reference=args.reference)
    text = json.dumps(result, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(text)
    return 0


def _cmd_new_plugin(args) -> int:
    from diffkit.scaffold import new_plugin

    path = new_plugin(args.name, args.dir)
    print(f"created {path}; next: pip install -e {path} && pytest {path}")
    return 0


COMMANDS = {"plugins": _cmd_plugins, "train": _cmd_train, "refit-first-stage": _cmd_refit_first_stage, "tune-first-stage": _cmd_tune_first_stage, "sample": _cmd_sample, "pretrained": _cmd_pretrained, "wheelhouse": _cmd_wheelhouse, "bench": _cmd_bench, "eval": _cmd_eval, "new-plugin": _cmd_new_plugin}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # OpenMP threads that spin while they wait starve each other when the cores are shared: a 2-D MLP
    # trained at under 2 steps/s on two busy cores with the default, 40-85 with passive waiting
    # (README.md, "Threads"). Set before torch is imported (nothing above imports it); the user's choice wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # the metric definitions load every metric's plugin, so only 'diffkit eval --help' builds them
    parser = _parser(with_definitions="eval" in argv and ("-h" in argv or "--help" in argv))
    args = parser.parse_args(argv)
    if args.version:
        from diffkit import __version__

        print(f"diffkit {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 0
    if args.threads is not None and args.threads < 1:
        print(f"diffkit: error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    from diffkit.cpu import flush_denormals

    flush_denormals()  # before torch starts its worker threads, which inherit the mode (diffkit/cpu.py)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("diffkit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI turns every failure into one line
        if args.debug:
            raise
        kind = 2 if isinstance(exc, (ValueError, LookupError, FileNotFoundError, FileExistsError)) else 1
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"diffkit {args.command}: error: {message}", file=sys.stderr)
        if kind == 1:
            print("(run with --debug for the traceback)", file=sys.stderr)
        return kind


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
