"""Pictures and report files (front layer: matplotlib is imported here only, with the Agg backend).
Every picture is written atomically (to a temporary name, then renamed)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("the report's pictures need matplotlib: pip install 'lgm[demo]'") from exc
    return plt


def _save(fig, path):
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    os.replace(tmp, path)
    return path.name


def image_grid(images, image_shape, path, title, ncols=8, cmap="gray", symmetric=False):
    """Rows of ``images`` (n, D) drawn as a grid of (H, W) pictures."""
    plt = _plt()
    H, W = image_shape[:2]
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 1.0, nrows * 1.0 + 0.4))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img in zip(axes, images):
        im = np.asarray(img, np.float64).reshape(H, W)
        if symmetric:
            v = np.abs(im).max() or 1.0
            ax.imshow(im, cmap="RdBu_r", vmin=-v, vmax=v)
        else:
            ax.imshow(im, cmap=cmap, vmin=0, vmax=1)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def latent_map(Z, labels, path, title):
    """2-D scatter of latent codes coloured by digit label."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    sc = ax.scatter(Z[:, 0], Z[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def curves(series, path, title, xlabel, ylabel, hline=None, logx=True):
    """One line per name: ``series`` maps name -> list of (x array, y array) (one per seed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, runs) in enumerate(series.items()):
        for j, (x, y) in enumerate(runs):
            ax.plot(x, y, "o-", color=colors[k % len(colors)], ms=3, alpha=0.9 if j == 0 else 0.45,
                    label=name if j == 0 else None)
    if hline is not None:
        ax.axhline(hline[0], color="k", ls="--", lw=1, label=hline[1])
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
