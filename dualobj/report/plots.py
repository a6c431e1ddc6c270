"""Figures over the (R, α) grid: :func:`plot_vs_alpha`, :func:`plot_heatmap`, :func:`plot_curves`, and the
figure helpers every report figure uses (:func:`new_figure`, :func:`save_figure`, :func:`plot_title`).

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from dualobj.fmt import format_alpha, format_number, si
from dualobj.report.tables import pivot
from dualobj.stats.frame import default_lower_is_better, select_model


# ----------------------------------------------------------------------------- helpers
def new_figure(w: float, h: float):
    """A matplotlib Figure of ``w`` × ``h`` inches (110 dpi, constrained layout), not registered with pyplot."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (creating its folder). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def count_axis(axis) -> None:
    """Large counts (tokens seen) on a matplotlib axis as 25k, 1.5M with at most five ticks, so that even a
    narrow panel stays readable."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=5, min_n_ticks=3))
    axis.set_major_formatter(FuncFormatter(lambda v, _: si(v)))


def series_colors(keys: list, cmap: str = "viridis") -> dict:
    """One colour per key from a dark-to-light colour map, stopping before its palest part (every line
    stays visible on white)."""
    from matplotlib import colormaps

    cm = colormaps[cmap]
    return {k: cm(0.85 * i / max(len(keys) - 1, 1)) for i, k in enumerate(keys)}


def plot_title(metric: str, model: str | None, lower: bool | None = None) -> str:
    """E.g. ``tiny: val/ar_nll (lower is better)``; the direction only when ``lower`` is given."""
    better = "" if lower is None else f" ({'lower' if lower else 'higher'} is better)"
    return f"{model + ': ' if model else ''}{metric}{better}"


# ----------------------------------------------------------------------------- plots
def plot_vs_alpha(df: pd.DataFrame, path: str | Path, metric: str = "val/ar_nll", model: str | None = None) -> Path:
    """``metric`` against α (categorical axis, so 0, 1/256, ..., 1 are evenly spaced), one line per R;
    error bars are the std over seeds, a star marks each row's best α. Returns ``path``."""
    p = pivot(df, metric, model)
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    x = np.arange(len(p.alphas))
    colors = series_colors(list(p.mean.index))
    for r in p.mean.index:
        color = colors[r]
        y, e = p.mean.loc[r].to_numpy(float), p.std.loc[r].to_numpy(float)
        ok = ~np.isnan(y)
        ax.errorbar(x[ok], y[ok], yerr=np.nan_to_num(e[ok]), marker="o", ms=4, capsize=2, color=color, label=f"R={r}")
        b = p.best.loc[r, "best α"]
        if not pd.isna(b):
            j = p.alphas.index(float(b))
            ax.plot([x[j]], [y[j]], marker="*", ms=14, color=color, markeredgecolor="black", zorder=5)
    ax.set_xticks(x, [format_alpha(a) for a in p.alphas])
    ax.set_xlabel("α (AR weight: 0 = masked diffusion, 1 = autoregressive)")
    ax.set_ylabel(metric)
    ax.set_title(plot_title(metric, p.model, p.lower_is_better), fontsize=10)
    if len(p.mean.index):
        ax.legend(fontsize=8, title="repetitions", title_fontsize=8)
    if not p.n.to_numpy().any():
        ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center", va="center")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_heatmap(df: pd.DataFrame, path: str | Path, metric: str = "val/ar_nll", model: str | None = None) -> Path:
    """Heatmap of ``metric`` over (R, α) with values written in; the best cell per row is boxed and bold,
    cells without a value show the state of their runs (failed, running, ...). Returns ``path``."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    p = pivot(df, metric, model)
    n_r, n_a = p.mean.shape
    fig = new_figure(max(4.0, 1.0 + 0.9 * n_a), max(2.5, 1.2 + 0.55 * n_r))
    ax = fig.add_subplot()
    cmap = colormaps["viridis_r" if p.lower_is_better else "viridis"].with_extremes(bad="#dddddd")
    data = np.ma.masked_invalid(p.mean.to_numpy(float)) if p.mean.size else np.ma.zeros((1, 1))
    im = ax.imshow(data, cmap=cmap, aspect="auto")
    if p.mean.size and data.count():
        fig.colorbar(im, ax=ax, label=metric)
        lo, hi = float(data.min()), float(data.max())
        mid = (lo + hi) / 2
    for i, r in enumerate(p.mean.index):
        for j, a in enumerate(p.mean.columns):
            m = p.mean.iloc[i, j]
            if pd.isna(m):
                st = p.states.get((r, float(a)))
                ax.text(j, i, ", ".join(st) if st else "—", ha="center", va="center", fontsize=7, color="#555555")
                continue
            best = p.is_best(r, a)
            dark = (m > mid) == p.lower_is_better if hi > lo else False
            ax.text(j, i, format_number(m, 3), ha="center", va="center", fontsize=8,
                    fontweight="bold" if best else "normal", color="white" if dark else "black")
            if best:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(n_a), [format_alpha(a) for a in p.mean.columns])
    ax.set_yticks(range(n_r), [str(r) for r in p.mean.index])
    ax.set_xlabel("α (AR weight)")
    ax.set_ylabel("repetitions R")
    ax.set_title(plot_title(metric, p.model, p.lower_is_better), fontsize=10)
    return save_figure(fig, path)


def plot_curves(curves: pd.DataFrame, path: str | Path, metric: str = "val/ar_nll",
                model: str | None = None) -> Path:
    """Validation ``metric`` against tokens seen from :func:`load_curves`: one panel per R, one line per
    run coloured by α; a dot marks each run's minimum, so over-fitting shows as the rise after it."""
    sub, model = select_model(curves, model)
    if metric in sub:
        sub = sub[pd.to_numeric(sub[metric], errors="coerce").notna() & sub["repetitions"].notna()]
    else:
        sub = sub.iloc[0:0]
    reps = sorted(sub["repetitions"].unique()) if len(sub) else []
    ncols = min(max(len(reps), 1), 4)
    nrows = max(1, math.ceil(len(reps) / ncols))
    fig = new_figure(3.4 * ncols + 0.8, 2.8 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=True)).ravel()
    alphas = sorted(sub["alpha"].dropna().unique()) if len(sub) else []
    colors = series_colors(alphas, "plasma")
    for ax, r in zip(axes, reps, strict=False):
        seen = set()
        for _, run in sub[sub["repetitions"] == r].groupby("run_id", sort=False):
            run = run.sort_values("step")
            a = run["alpha"].iloc[0]
            x = pd.to_numeric(run["tokens_seen"], errors="coerce").to_numpy(float)
            y = pd.to_numeric(run[metric], errors="coerce").to_numpy(float)
            label = None if a in seen else f"α={format_alpha(a)}" if not pd.isna(a) else "α=?"
            seen.add(a)
            color = colors.get(a, "gray")
            ax.plot(x, y, marker=".", ms=3, lw=1.2, color=color, label=label)
            k = int(np.nanargmin(y) if default_lower_is_better(metric) else np.nanargmax(y))
            ax.plot([x[k]], [y[k]], "o", ms=6, color=color, markeredgecolor="black")
        ax.set_title(f"R={int(r) if float(r).is_integer() else r}", fontsize=9)
        ax.set_xlabel("tokens seen")
        count_axis(ax.xaxis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(reps):]:
        ax.set_axis_off()
        if not reps:
            ax.text(0.5, 0.5, f"no validation points for {metric}", ha="center", va="center")
    axes[0].set_ylabel(metric)
    fig.suptitle(plot_title(metric, model), fontsize=10)
    return save_figure(fig, path)

