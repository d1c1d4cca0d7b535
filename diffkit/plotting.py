"""Small plotting helpers (matplotlib, Agg backend): scatter plots, image grids, metric curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scatter_png(xs: torch.Tensor, path: Path, reference: torch.Tensor | None = None, title: str = "") -> Path:
    """Scatter the first two coordinates of ``xs`` (blue) over ``reference`` (grey)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    if reference is not None and len(reference):
        r = torch.as_tensor(reference)
        ax.scatter(r[:, 0], r[:, 1], s=2, c="0.75", label="data", rasterized=True)
    x = torch.as_tensor(xs)
    if len(x):
        ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:blue", label="samples", rasterized=True)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def image_grid_png(images: Sequence[torch.Tensor], path: Path, labels: Sequence[int] | None = None, ncol: int | None = None) -> Path:
    """Tile C×H×W images with values in [0, 1] into one PNG (one row per class when labelled)."""
    plt = _plt()
    imgs = [torch.as_tensor(im).float().clamp(0, 1) for im in images]
    if labels is not None:
        order = sorted(range(len(imgs)), key=lambda i: (labels[i], i))
        imgs = [imgs[i] for i in order]
        classes = sorted(set(labels))
        ncol = ncol or max(1, max(list(labels).count(c) for c in classes))
    n = len(imgs)
    ncol = ncol or max(1, int(n**0.5 + 0.999))
    nrow = (n + ncol - 1) // ncol
    C, H, W = imgs[0].shape
    grid = torch.ones(C, nrow * (H + 1) + 1, ncol * (W + 1) + 1)
    for i, im in enumerate(imgs):
        r, c = divmod(i, ncol)
        grid[:, 1 + r * (H + 1): 1 + r * (H + 1) + H, 1 + c * (W + 1): 1 + c * (W + 1) + W] = im
    arr = grid.permute(1, 2, 0).numpy()
    if C == 1:
        plt.imsave(path, arr[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        plt.imsave(path, arr)
    return Path(path)


def curves_png(series: dict, path: Path, xlabel: str, ylabel: str, title: str = "", logx: bool = True, logy: bool = True, hline: float | None = None, hline_label: str = "") -> Path:
    """One line per ``name -> (xs, ys)``."""
    return panels_png({"": series}, path, xlabel, ylabel, title, logx, logy, hline, hline_label)


def panels_png(panels: dict, path: Path, xlabel: str, ylabel: str, title: str = "", logx: bool = True, logy: bool = True, hline: float | None = None, hline_label: str = "") -> Path:
    """Panels side by side on one y axis, one per ``panel title -> {name -> (xs, ys)}``, one line per name (a name
    keeps its colour in every panel)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 if len(panels) == 1 else 4.5 * len(panels), 4), dpi=120, sharey=True, squeeze=False)
    names = list(dict.fromkeys(name for series in panels.values() for name in series))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colour = {name: palette(i % palette.N) for i, name in enumerate(names)}
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", ms=3, label=name, color=colour[name])
        if hline is not None:
            ax.axhline(hline, color="k", ls="--", lw=1, label=hline_label)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        if panel:
            ax.set_title(panel, fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    if title and list(panels) == [""]:
        axes[0][0].set_title(title, fontsize=9)
    elif title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
