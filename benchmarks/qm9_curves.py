"""QM9 quality against the number of network evaluations, one curve per method, from reports of ``benchmarks/qm9.py``.

    python benchmarks/qm9_curves.py RESULTS/qm9-cpu/qm9.json RESULTS/qm9-cpu-flow/qm9.json --out benchmarks/results/qm9-nfe-DATE

Each input is a report written by ``benchmarks/qm9.py --steps 5 10 20 50 100 500`` (one recipe, its categorical
sampler at each number of steps, one network evaluation per step). Writes OUT.png (strict validity,
valid-and-connected, uniqueness, V.U.N. and FCD with its floor against NFE, log axis) and OUT.md / OUT.json (the
table behind it, with each run's training figures and machine load), and checks the issue's targets: strict validity
>= 99 % and valid-and-connected >= 97 % at 50 NFE or fewer, and the flow's FCD at 50 NFE no worse than the
diffusion's at 100 (each flow against each diffusion among the reports).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PANELS = [("validity", "strict validity"), ("valid_connected", "valid and connected"), ("uniqueness", "uniqueness (strict)"), ("vun", "V.U.N. (train)"),
          ("fcd", "FCD (strict, lower is better)")]


def curves(report: dict) -> dict[int, dict]:
    return {int(r.get("nfe", r["steps"])): {**r["metrics"], "molecules_per_second": r["samples_per_second"], "n": r["n"], "sampler": r["sampler"]} for r in report["rows"]}


def targets(methods: dict[str, dict[int, dict]], diffusions: list[str], flows: list[str]) -> list[dict]:
    out = []
    for name, c in methods.items():
        few = {k: v for k, v in c.items() if k <= 50}
        best_valid = max(few.items(), key=lambda kv: kv[1].get("validity", 0.0)) if few else None
        best_vc = max(few.items(), key=lambda kv: kv[1].get("valid_connected", 0.0)) if few else None
        if best_valid:
            out.append({"method": name, "target": "strict validity >= 0.99 at <= 50 NFE", "value": best_valid[1]["validity"], "at_nfe": best_valid[0],
                        "met": best_valid[1]["validity"] >= 0.99})
        if best_vc:
            out.append({"method": name, "target": "valid-and-connected >= 0.97 at <= 50 NFE", "value": best_vc[1]["valid_connected"], "at_nfe": best_vc[0],
                        "met": best_vc[1]["valid_connected"] >= 0.97})
    for flow in flows:                 # every flow against every diffusion given
        for diffusion in diffusions:
            if 50 in methods[flow] and 100 in methods[diffusion]:
                f, d = methods[flow][50].get("fcd"), methods[diffusion][100].get("fcd")
                if f is not None and d is not None:
                    out.append({"method": flow, "target": f"FCD at 50 NFE <= {diffusion}'s at 100", "value": f, "at_nfe": 50, "compared_with": d, "met": f <= d})
    return out


def plot(methods: dict[str, dict[int, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6))
    for ax, (key, title) in zip(axes, PANELS):
        for name, c in methods.items():
            xs = sorted(k for k in c if c[k].get(key) is not None)
            ax.plot(xs, [c[k][key] for k in xs], marker="o", label=name)
            if key == "fcd":
                floors = [c[k].get("fcd_floor") for k in xs]
                if all(f is not None for f in floors):
                    ax.plot(xs, floors, ls=":", color=ax.lines[-1].get_color(), label=f"{name}: floor at the same size")
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if key in ("validity", "valid_connected"):
            ax.axhline({"validity": 0.99, "valid_connected": 0.97}[key], color="grey", ls="--", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(methods: dict, reports: dict, checks: list[dict]) -> str:
    lines = ["| method | sampler | NFE | n | strict validity | valid & connected | uniqueness | novelty | V.U.N. | FCD | FCD floor | molecules/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in methods.items():
        for k in sorted(c):
            m = c[k]
            cell = lambda key: "–" if m.get(key) is None else f"{m[key]:.3f}"  # noqa: E731
            lines.append(f"| {name} | {m['sampler']} | {k} | {m['n']} | {cell('validity')} | {cell('valid_connected')} | {cell('uniqueness')} | {cell('novelty')} | "
                         f"{cell('vun')} | {cell('fcd')} | {cell('fcd_floor')} | {m['molecules_per_second']:.1f} |")
    lines += ["", "Training:", ""]
    for name, r in reports.items():
        t = r["training"]
        lines.append(f"- {name}: {t['steps']} steps" + (f" in {t['wall_seconds'] / 60:.1f} min" if "wall_seconds" in t else "")
                     + f", {t['graphs_per_second']:.0f} graphs/s; torch threads {r['machine']['torch_threads']}, load average at the start {r['machine']['load_average']}")
    lines += ["", "| target | method | value | at NFE | met |", "|---|---|---|---|---|"]
    for t in checks:
        extra = f" (diffusion at 100: {t['compared_with']:.3f})" if "compared_with" in t else ""
        lines.append(f"| {t['target']} | {t['method']} | {t['value']:.3f}{extra} | {t['at_nfe']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="qm9.json files written by benchmarks/qm9.py")
    p.add_argument("--out", required=True, help="output path without suffix")
    args = p.parse_args(argv)
    reports = {}
    for path in args.reports:
        r = json.loads(Path(path).read_text())
        reports[r["recipe"]] = r
    methods = {name: curves(r) for name, r in reports.items()}
    flows = [n for n in methods if "flow" in n]
    checks = targets(methods, [n for n in methods if n not in flows], flows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(methods, out.with_suffix(".png"))
    text = f"# QM9: quality against NFE\n\n![curves]({out.with_suffix('.png').name})\n\n" + markdown(methods, reports, checks)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"methods": methods, "targets": checks, "inputs": args.reports}, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
