"""The side-by-side hour: table, differences and plot from the rows of ``benchmarks/qm9_settings.py`` in this folder.

    python benchmarks/results/qm9-flow-settle-2026-12-04/summarise.py

Reads ``flow-*.json`` (``qm9-cpu-flow``, dfm-euler) and ``diffusion-*.json`` (``qm9-cpu`` with the flow's training
settings, ancestral), each a list of rows of one seed of 1,000 molecules. Prints and writes ``table.md`` (per setting:
mean and range of each metric over the seeds, FCD mean ± standard error) and the flow-minus-diffusion difference of the
means with its standard error (flow 50 against diffusion 100, the issue's comparison, then at equal NFE 50 and 100) (unpaired: the seeds of two models share nothing), and draws ``fcd-validity.png`` (each seed's FCD against its validity) and ``by-nfe.png`` (seed 0 against NFE).
"""
from __future__ import annotations

import json
import math
import statistics as st
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = {"flow": "qm9-cpu-flow (discrete flow, cosine)", "diffusion": "qm9-cpu (diffusion), the same training"}
METRICS = ("validity", "valid_connected", "uniqueness", "novelty", "vun", "fcd")


def load() -> dict:
    groups = defaultdict(dict)
    for path in sorted(HERE.glob("*.json")):
        rows = json.loads(path.read_text())
        if not isinstance(rows, list):
            continue
        for r in rows:
            groups[(path.stem.split("-")[0], r["sampler"], r["steps"])][r["seed"]] = r
    return groups


def mean_se(values: list[float]) -> tuple[float, float]:
    return st.mean(values), (st.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan"))


def table(groups: dict) -> str:
    lines = ["| model | sampler, NFE | seeds | strict validity | valid & connected | uniqueness | novelty | V.U.N. | FCD mean ± s.e. (range) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(groups, key=lambda k: (k[0], k[2])):
        rows = list(groups[key].values())
        cell = lambda name: f"{st.mean(r[name] for r in rows):.3f} ({min(r[name] for r in rows):.3f}-{max(r[name] for r in rows):.3f})"  # noqa: E731
        fcd_mean, fcd_se = mean_se([r["fcd"] for r in rows])
        lines.append(f"| {NAMES.get(key[0], key[0])} | {key[1]} {key[2]} | {len(rows)} | {cell('validity')} | {cell('valid_connected')} | "
                     f"{st.mean(r['uniqueness'] for r in rows):.3f} | {st.mean(r['novelty'] for r in rows):.3f} | {st.mean(r['vun'] for r in rows):.3f} | "
                     f"{fcd_mean:.3f} ± {fcd_se:.3f} ({min(r['fcd'] for r in rows):.2f}-{max(r['fcd'] for r in rows):.2f}) |")
    return "\n".join(lines) + "\n"


def differences(groups: dict, flow_steps: int = 50, diffusion_steps: int = 100) -> str:
    flow, diffusion = groups.get(("flow", "dfm-euler", flow_steps)), groups.get(("diffusion", "ancestral", diffusion_steps))
    if not (flow and diffusion):
        return ""
    lines = [f"Flow at {flow_steps} NFE minus diffusion at {diffusion_steps} steps (difference of the means ± its standard error):", ""]
    for name in METRICS:
        (a, sa), (b, sb) = mean_se([r[name] for r in flow.values()]), mean_se([r[name] for r in diffusion.values()])
        lines.append(f"- {name}: {a - b:+.4f} ± {math.hypot(sa, sb):.4f}")
    return "\n".join(lines) + "\n"


def plot(groups: dict, out: Path, least_seeds: int = 4) -> None:
    """Each seed's FCD against its strict validity, for the settings with at least ``least_seeds`` seeds (colour: model;
    marker: NFE); the mean of each setting as a large open marker."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    colours, markers = {"flow": "tab:green", "diffusion": "black"}, {20: "v", 50: "o", 100: "^"}
    for key in sorted(groups, key=lambda k: (k[0], k[2])):
        rows = list(groups[key].values())
        if len(rows) < least_seeds:
            continue
        colour, marker = colours.get(key[0], "tab:blue"), markers.get(key[2], "s")
        fcd, valid = [r["fcd"] for r in rows], [r["validity"] for r in rows]
        ax.scatter(fcd, valid, color=colour, marker=marker, s=36, alpha=0.75, label=f"{NAMES.get(key[0], key[0])}, {key[1]} {key[2]} ({len(rows)} seeds)")
        ax.scatter([st.mean(fcd)], [st.mean(valid)], facecolors="none", edgecolors=colour, marker=marker, s=300, linewidths=1.8)
    ax.axhline(0.99, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("FCD against 10,000 test molecules (1,000 samples; lower is better)\ndashed: validity 0.99; open markers: means", fontsize=9)
    ax.set_ylabel("strict validity")
    ax.set_title("QM9, one CPU hour each, trained side by side: each point one seed of 1,000 molecules", fontsize=10)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def plot_by_nfe(groups: dict, out: Path, seed: int = 0) -> None:
    """Strict validity, valid-and-connected and FCD against NFE for one seed (the one every NFE has), both models."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    styles = {"flow": ("tab:green", "o"), "diffusion": ("black", "s")}
    for model, (colour, marker) in styles.items():
        points = sorted((k[2], v[seed]) for k, v in groups.items() if k[0] == model and seed in v)
        if not points:
            continue
        nfe = [p[0] for p in points]
        for ax, name in zip(axes, ("validity", "valid_connected", "fcd")):
            ax.plot(nfe, [p[1][name] for p in points], color=colour, marker=marker, label=NAMES[model])
    for ax, (name, line) in zip(axes, (("strict validity", 0.99), ("valid & connected", 0.97), ("FCD (lower is better)", None))):
        ax.set_xscale("log")
        ax.set_xlabel("NFE (sampler steps)")
        ax.set_title(name, fontsize=10)
        if line is not None:
            ax.axhline(line, color="grey", lw=0.8, ls="--")
            ax.set_ylim(0.75, 1.0)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"QM9, one CPU hour each, trained side by side: seed {seed}, 1,000 molecules per point", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    groups = load()
    text = table(groups) + "".join("\n" + differences(groups, f, d) for f, d in ((50, 100), (50, 50), (100, 100)))
    (HERE / "table.md").write_text(text)
    print(text)
    plot(groups, HERE / "fcd-validity.png")
    plot_by_nfe(groups, HERE / "by-nfe.png")


if __name__ == "__main__":
    main()
