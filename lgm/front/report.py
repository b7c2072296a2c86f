"""Pictures and report files (front layer: matplotlib is imported here only, with the Agg backend).
Every picture is written atomically (to a temporary name, then renamed)."""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import numpy as np


def fresh_dir(path, say=print, created=None):
    """A new folder: ``path``, or the first of ``path-2``, ``path-3``, … that does not exist yet,
    made with an atomic mkdir (two runs started together never share one, and an earlier
    report, even an empty folder, is never written into); the user is told where this one goes."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        q = p if k == 1 else Path(f"{p}-{k}")
        try:
            q.mkdir()
        except FileExistsError:
            k += 1
            continue
        if created is not None:
            created.append(q)
        if k > 1:
            say(f"{p} already exists: keeping it, writing this report to {q}")
        return q


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


def _log_axis(ax, ticks=None):
    """A log x axis labelled in plain numbers (1.875, 3.75, 7.5 ...): at ``ticks`` if given, else
    (once the data are drawn) at 1, 2, 5 x 10^k when the drawn range spans at most 3 decades, so
    that an axis spanning a decade or so does not carry a single label; no minor labels
    (matplotlib's default labels every minor tick as 2x10^0, 3x10^0, ... and they overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    if ticks is not None:
        ax.set_xticks(list(ticks))
    else:
        lo, hi = ax.get_xlim()
        if math.log10(hi / lo) <= 3:
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def bands(series, path, title, ylabel, hline=None, finals=None):
    """Held-out curves of several strategies over seeds, on two axes side by side: training wall
    time and epochs (both log). ``series`` maps name -> list of (grid, epochs, values), one per
    seed, on one shared time grid; drawn as the mean over seeds with a band of ± one standard
    deviation (a single seed: the line alone). ``finals`` = ({name: [value per seed]}, label):
    the final scores by another estimator, drawn as a star with ± sd bars just after the last
    grid point."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    grid0 = None
    for k, (name, runs) in enumerate(series.items()):
        n = min(len(r[2]) for r in runs)
        if n == 0:
            continue
        grid = np.asarray(runs[0][0][:n], float)
        grid0 = grid if grid0 is None else grid0
        ep = np.mean([np.asarray(r[1][:n], float) for r in runs], axis=0)
        v = np.array([np.asarray(r[2][:n], float) for r in runs])
        m = v.mean(0)
        sd = v.std(0, ddof=1) if len(v) > 1 else None
        c = colors[k % len(colors)]
        for ax, x in zip(axes, (grid, ep)):
            ax.plot(x, m, "o-", color=c, ms=3, label=f"{name} ({len(v)} seed{'s' if len(v) > 1 else ''})")
            if sd is not None:
                ax.fill_between(x, m - sd, m + sd, color=c, alpha=0.2, lw=0)
            if finals is not None and name in finals[0]:
                f = np.asarray(finals[0][name], float)
                ax.errorbar([x[-1] * 1.12], [f.mean()], yerr=[f.std(ddof=1) if len(f) > 1 else 0.0],
                            fmt="*", color=c, ms=9, capsize=2)
    if finals is not None:
        axes[1].plot([], [], "*", color="gray", ms=9, label=finals[1])
    for ax, xl in zip(axes, ("training wall time (s), log scale",
                             "epochs (passes over the training set), log scale")):
        if hline is not None:
            ax.axhline(hline[0], color="k", ls="--", lw=1, label=hline[1] if ax is axes[1] else None)
        _log_axis(ax, grid0 if ax is axes[0] else None)
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[1].legend(fontsize=8, loc="best")  # where it hides the fewest lines and bands
    fig.suptitle("\n".join(textwrap.wrap(title, 120)), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def scaling(rows, truth, path, title):
    """What scales: per strategy, seconds per epoch (log-log), held-out log-likelihood after equal
    wall time (log N) and per-point state (log-log) against the number of rows N."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(r.strategy for r in rows))
    for k, name in enumerate(names):
        rs = sorted((r for r in rows if r.strategy == name), key=lambda r: r.N)
        N = [r.N for r in rs]
        c = colors[k % len(colors)]
        axes[0].plot(N, [r.seconds_per_epoch for r in rs], "o-", color=c, label=name)
        axes[1].plot(N, [r.heldout for r in rs], "o-", color=c, label=name)
        if any(r.state_bytes_per_point for r in rs):
            axes[2].plot(N, [r.state_bytes_per_point for r in rs], "o-", color=c, label=name)
    axes[1].axhline(truth, color="k", ls="--", lw=1, label="the teacher (data-generating decoder)")
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    Ns = sorted({r.N for r in rows})
    for ax in axes:
        _log_axis(ax, Ns)
        ax.set_xlabel("N (training rows), log scale")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("seconds per epoch, log scale")
    axes[1].set_ylabel("held-out log-likelihood by AIS (nats / row)")
    axes[2].set_ylabel("per-point state (bytes / row), log scale")
    axes[2].set_title("amortized and iwae keep none", fontsize=8)
    fig.suptitle("\n".join(textwrap.wrap(title, 140)), fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
