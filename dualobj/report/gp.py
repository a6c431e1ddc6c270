"""The report's figure of a GP fit (:func:`dualobj.stats.gp.fit_gp`): the surface and P(α optimal | R)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dualobj.report.plots import new_figure, plot_title, save_figure
from dualobj.stats.gp import GPFit


def figure_title(gp: GPFit) -> str:
    """The surface figure's title: metric, direction, R² and leave-one-out R² side by side."""
    loo = "" if gp.r2_loo is None else f" (leave-one-out {gp.r2_loo:.3f})"
    return f"{plot_title(gp.metric, gp.model, gp.lower_is_better)}; GP R² = {gp.r2:.3f}{loo}"


def plot_gp_surface(gp: GPFit, path: str | Path) -> Path:
    """Top: the GP posterior mean over (log2 R, α) as filled contours, the runs as dots and the optimum
    per R as red stars. Bottom: P(α optimal | R) over the dense α grid, with the run α values' (coarse)
    probabilities written in. Returns ``path``."""
    from matplotlib import colormaps

    fig = new_figure(7.0, 7.6)
    top, bottom = fig.subplots(2, 1, height_ratios=[1.2, 1.0])
    lr = np.log2(np.array(gp.r_levels, float))
    lo, hi = (lr.min(), lr.max()) if lr.max() > lr.min() else (lr.min() - 0.5, lr.max() + 0.5)
    xs, ys = np.linspace(lo, hi, 60), np.linspace(0.0, 1.0, 61)
    XX, YY = np.meshgrid(xs, ys)
    Z = gp.predict(2.0 ** XX, YY)
    cmap = colormaps["viridis_r" if gp.lower_is_better else "viridis"]
    cs = top.contourf(XX, YY, Z, levels=20, cmap=cmap)
    fig.colorbar(cs, ax=top, label=gp.metric)
    pts = gp.observations.drop_duplicates(["R", "alpha"])
    top.scatter(np.log2(pts["R"]), pts["alpha"], s=14, c="white", edgecolors="black", linewidths=0.6,
                label="runs", zorder=3)
    top.plot(lr, gp.best_alpha_by_r.to_numpy(float), "-*", color="red", ms=12, markeredgecolor="black",
             label="GP optimum per R", zorder=4)
    top.set_xticks(lr, [str(r) for r in gp.r_levels])
    top.set_xlim(lo, hi)
    top.set_xlabel("repetitions R (log2 scale)")
    top.set_ylabel("α (AR weight)")
    top.legend(fontsize=7, loc="lower left")
    top.set_title(figure_title(gp), fontsize=9)

    n = len(gp.r_levels)
    im = bottom.imshow(gp.p_optimal_dense.to_numpy().T, origin="lower", aspect="auto", cmap="magma_r",
                       extent=(-0.5, n - 0.5, 0.0, 1.0), interpolation="nearest")
    fig.colorbar(im, ax=bottom, label="P(α optimal | R), per grid point")
    for i, r in enumerate(gp.r_levels):
        ran = set(gp.observations.loc[gp.observations["R"] == float(r), "alpha"])
        for a, p in gp.p_optimal[r].items():
            if p >= 0.05 and a in ran:
                bottom.text(i, a, f"{p:.2f}", ha="center", va="center", fontsize=7, color="tab:blue",
                            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "alpha": 0.6, "lw": 0})
    bottom.plot(range(n), gp.best_alpha_by_r.to_numpy(float), "*", color="red", ms=10, markeredgecolor="black")
    bottom.set_xticks(range(n), [str(r) for r in gp.r_levels])
    bottom.set_xlabel("repetitions R")
    bottom.set_ylabel("α (AR weight)")
    bottom.set_title(f"posterior probability of the optimal α ({gp.n_samples} samples; numbers: run α values)",
                     fontsize=9)
    return save_figure(fig, path)

