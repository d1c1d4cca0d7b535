"""Tables and a plot from the rows of ``benchmarks/qm9_settings.py`` in this folder.

    python benchmarks/results/qm9-flow-schedule-2026-12-04/summarise.py

Reads ``*.json`` here (each a list of rows; the model is the file name's first word: ``cosine``, ``linear`` or
``shipped``), prints one markdown row per (model, sampler, NFE, distortion, constraint) with the per-seed figures and
their means, writes ``table.md`` and ``fcd-validity.png`` (each seed's FCD against its strict validity for the settings in ``PLOTTED``, with the
issue's validity line and the shipped diffusion's mean FCD at 100 steps).
"""
from __future__ import annotations

import json
import statistics as st
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {"cosine": "flow, cosine schedule", "linear": "flow, linear schedule", "shipped": "shipped qm9-cpu (diffusion)"}


def load() -> dict:
    groups = defaultdict(dict)
    for path in sorted(HERE.glob("*.json")):
        model, rows = path.stem.split("-")[0], json.loads(path.read_text())
        if not isinstance(rows, list):  # training.json: the runs' steps and rates
            continue
        for r in rows:
            below = r.get("constraint_below")
            constraint = "none" if r.get("constraint", "none") == "none" else f"{r['constraint']} from t <= {below}" if below is not None else r["constraint"]
            key = (model, r["sampler"], r["steps"], r.get("distortion", "-"), constraint)
            groups[key][r["seed"]] = r
    return groups


def table(groups: dict) -> str:
    lines = ["| model | sampler, NFE | distortion | constraint | seeds | strict validity | valid & connected | novelty | FCD | FCD mean |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(groups, key=lambda k: (k[0], k[2], k[3], k[4])):
        rows = [groups[key][s] for s in sorted(groups[key])]
        seeds = sorted(groups[key])
        each = lambda name, d=3: " / ".join(f"{r[name]:.{d}f}" for r in rows)  # noqa: E731
        span = f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2 else ", ".join(map(str, seeds))
        lines.append(f"| {MODELS.get(key[0], key[0])} | {key[1]} {key[2]} | {key[3]} | {key[4]} | {span} | {each('validity')} | {each('valid_connected')} | "
                     f"{min(r['novelty'] for r in rows):.2f}-{max(r['novelty'] for r in rows):.2f} | {each('fcd', 2)} | {st.mean(r['fcd'] for r in rows):.3f} |")
    return "\n".join(lines) + "\n"


PLOTTED = [  # (model, NFE, distortion, constraint, colour, marker)
    ("shipped", 100, "-", "none", "black", "s"),
    ("linear", 50, "polydec", "none", "tab:pink", "o"),
    ("linear", 50, "polydec", "valence from t <= 0.35", "tab:pink", "^"),
    ("cosine", 50, "polydec", "none", "tab:green", "o"),
    ("cosine", 50, "polydec", "valence from t <= 0.35", "tab:green", "^"),
]


def plot(groups: dict, out: Path) -> None:
    """Each seed's FCD against its strict validity for the settings in PLOTTED; the mean of each as a large open marker."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    target = None
    for model, steps, distortion, constraint, colour, marker in PLOTTED:
        found = [v for k, v in groups.items() if k[0] == model and k[2] == steps and k[3] == distortion and k[4] == constraint]
        if not found:
            continue
        rows = list(found[0].values())
        fcd, valid = [r["fcd"] for r in rows], [r["validity"] for r in rows]
        sampler = "ancestral" if model == "shipped" else f"dfm-euler, {distortion}"
        label = f"{MODELS[model]}, {sampler} {steps} NFE" + ("" if constraint == "none" else f", {constraint}") + f" ({len(rows)} seeds)"
        ax.scatter(fcd, valid, color=colour, marker=marker, s=36, alpha=0.75, label=label)
        ax.scatter([st.mean(fcd)], [st.mean(valid)], facecolors="none", edgecolors=colour, marker=marker, s=260, linewidths=1.8)
        if model == "shipped":
            target = st.mean(fcd)
    ax.axhline(0.99, color="grey", lw=0.8, ls="--")
    if target is not None:
        ax.axvline(target, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("FCD against 10,000 test molecules (1,000 samples; lower is better)\n"
                  f"dotted: diffusion's mean at 100 steps ({target:.3f}); dashed: validity 0.99; open markers: means", fontsize=9)
    ax.set_ylabel("strict validity")
    ax.set_title("QM9 in one CPU hour: each point one seed of 1,000 molecules")
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    groups = load()
    text = table(groups)
    (HERE / "table.md").write_text(text)
    print(text)
    plot(groups, HERE / "fcd-validity.png")


if __name__ == "__main__":
    main()
