"""The report's "Does the best α transfer?" section, for a folder holding runs of several model sizes (a
sweep with ``variants:``, e.g. sweeps/transfer.yaml, or any folder of sweeps): the best AR share per size
and R with its seed noise, the fitted rule log2 s* = a + b·log2 R + c·log2(N/10^6) with 90% intervals,
its leave-one-size-out cost, a plain statement of what the data say, ``alpha_rule.csv`` (the coefficients),
``alpha_best.csv`` (the best shares), ``alpha_loso.csv`` and the figure ``alpha_rule.png``. The statistics
are :mod:`dualobj.stats.rule`'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dualobj.budget import ar_share
from dualobj.fmt import format_alpha, si
from dualobj.report.plots import new_figure, save_figure, series_colors
from dualobj.stats.rule import COEFFICIENTS, SizeBest, best_shares, leave_one_size_out, predict, rule_draws

PAPER_SCALE = 2.0  # the official code's AR loss factor: its α = 16/R is an AR share of 2α / (2α + 1 − α)
LEVEL = 0.9


def transfer_section(runs: pd.DataFrame, metric: str | None, lower: bool, out: Path,
                     plots: bool = True) -> tuple[list[str], list[Path]]:
    """The section's lines and files; nothing unless the done runs hold at least two model sizes with a GP
    each (4 runs, 2 R levels) on ``metric``."""
    sizes = size_bests(runs, metric, lower) if metric else []
    if len(sizes) < 2:
        return [], []
    fit, blind = rule_draws(sizes), rule_draws(sizes, size_term=False)
    loso, loso_blind = leave_one_size_out(sizes), leave_one_size_out(sizes, size_term=False)
    files = [_write_csv(out / "alpha_rule.csv", rule_frame(fit, blind)),
             _write_csv(out / "alpha_best.csv", best_frame(sizes)),
             _write_csv(out / "alpha_loso.csv", loso_frame(loso, loso_blind))]
    lines = ["## Does the best α transfer?", "",
             f"Best AR share (the share of the gradient weight on the AR loss; α itself when the AR loss is not "
             f"scaled) for {metric} ({'lower' if lower else 'higher'} is better) per model size N (non-embedding "
             f"parameters) and R: the tried value with the best GP posterior mean, and the {LEVEL:.0%} interval "
             "of the best over joint posterior draws (the seed noise the GP measured); (runs) counts seeds.", "",
             *best_table(sizes), "",
             f"Rule fitted to them: log2 s* = a + b·log2 R + c·log2(N / 10^6), s* capped at 1. A best share of 1 "
             "or 0 enters as censored (the rule must predict above the midpoint to the next tried share, or below "
             f"half the smallest positive one); intervals: the rule re-fitted to {len(fit.draws)} joint posterior "
             f"draws (5th-95th percentile). {fit.n_points} (size, R) answers from {fit.n_sizes} sizes.", "",
             *rule_table(fit, blind), "", *loso_table(loso, loso_blind), "", verdict(fit, sizes),
             "", transfer_line(loso, loso_blind), ""]
    if plots:
        files.append(plot_rule(sizes, fit, out / "alpha_rule.png", metric))
        lines += [f"![best α per size]({files[-1].name})", ""]
    return lines, files


def size_bests(runs: pd.DataFrame, metric: str, lower: bool) -> list[SizeBest]:
    """:func:`best_shares` of every model size with a constant α, 4 done runs and 2 R levels, smallest first."""
    need = {"params_non_embedding", "ar_share", metric}
    if not need <= set(runs.columns):
        return []
    done = runs[(runs["state"] == "done") & runs["model"].map(lambda m: isinstance(m, str) and "+" not in m)]
    done = done[np.isfinite(pd.to_numeric(done[metric], errors="coerce"))
                & pd.to_numeric(done["params_non_embedding"], errors="coerce").notna()]
    out = []
    for _, g in done.groupby("model"):
        if len(g) >= 4 and g["repetitions"].nunique() >= 2 and g[metric].nunique() > 1:
            out.append(best_shares(g.astype({metric: float, "params_non_embedding": float}), metric, lower))
    return sorted(out, key=lambda sb: sb.params)


def best_frame(sizes: list[SizeBest]) -> pd.DataFrame:
    rows = []
    for sb in sizes:
        lo, hi = sb.interval(LEVEL)
        for i, r in enumerate(sb.levels):
            rows.append({"model": sb.model, "params_non_embedding": sb.params, "R": r, "best_ar_share": sb.best[i],
                         "lo": lo[i], "hi": hi[i], "runs": int(sb.runs[i])})
    return pd.DataFrame(rows)


def best_table(sizes: list[SizeBest]) -> list[str]:
    levels = sorted({float(r) for sb in sizes for r in sb.levels})
    rows = ["| model | N | " + " | ".join(f"R={r:g}" for r in levels) + " |", "|---|---:|" + "---:|" * len(levels)]
    for sb in sizes:
        lo, hi = sb.interval(LEVEL)
        at = {float(r): i for i, r in enumerate(sb.levels)}
        cells = [f"{format_alpha(sb.best[at[r]])} [{format_alpha(lo[at[r]])}, {format_alpha(hi[at[r]])}] "
                 f"({sb.runs[at[r]]})" if r in at else "—" for r in levels]
        rows.append(f"| {sb.model} | {si(sb.params)} | " + " | ".join(cells) + " |")
    return rows


def rule_frame(fit, blind) -> pd.DataFrame:
    rows = []
    for form, f in (("with size", fit), ("size-blind", blind)):
        lo, hi = f.interval(LEVEL)
        for k, name in enumerate(COEFFICIENTS):
            if form == "size-blind" and name == "c":
                continue
            rows.append({"form": form, "coefficient": name, "estimate": f.median[k], "lo": lo[k], "hi": hi[k],
                         "fit_to_recommended": f.theta[k],
                         "identified": f.identified, "identified_share": f.identified_share,
                         "n_draws": len(f.draws), "n_points": f.n_points, "n_sizes": f.n_sizes})
    return pd.DataFrame(rows)


MEANING = {"a": "log2 of the best share at R = 1, N = 10^6", "b": "per doubling of R (the paper's α·R = const: −1)",
           "c": "per doubling of N (0: the best share does not depend on size)"}


def rule_table(fit, blind) -> list[str]:
    rows = ["| rule | coefficient | median over draws | 90% interval | fit to the recommendations | meaning |",
            "|---|---|---:|---|---:|---|"]
    for form, f in (("with size", fit), ("size-blind", blind)):
        lo, hi = f.interval(LEVEL)
        for k, name in enumerate(COEFFICIENTS[:3 if form == "with size" else 2]):
            rows.append(f"| {form} | {name} | {f.median[k]:+.3f} | [{lo[k]:+.3f}, {hi[k]:+.3f}] | {f.theta[k]:+.3f} | "
                        f"{MEANING[name]} |")
    note = (f"Identified by the interior answers in {fit.identified_share:.0%} of the draws (with size) and "
            f"{blind.identified_share:.0%} (size-blind)" + ("" if fit.identified else
                                                             "; the recommendations alone do not identify it"))
    return [*rows, "", note + "."]


def loso_frame(loso: list[dict], blind: list[dict]) -> pd.DataFrame:
    rows = []
    for row, b in zip(loso, blind, strict=True):
        rows.append({"left_out": row["model"], "params_non_embedding": row["params"],
                     "predicted": " ".join(f"{v:.4f}" for v in row["predicted"]),
                     "best": " ".join(f"{v:.4f}" for v in row["best"]), "mean_cost": row["mean_cost"],
                     "max_cost": row["max_cost"], "size_blind_mean_cost": b["mean_cost"],
                     "size_blind_max_cost": b["max_cost"], "identified": row["identified"]})
    return pd.DataFrame(rows)


def loso_table(loso: list[dict], blind: list[dict]) -> list[str]:
    rows = ["Leave one size out: the rule fitted to the other sizes predicts the left-out size's best share at "
            "each R; cost = the left-out size's posterior mean at the prediction (nearest tried share) minus its "
            "best (metric units, mean and largest over R).", "",
            "| left out | N | predicted shares (per R) | its own best | cost: mean / max | size-blind rule: mean / "
            "max |", "|---|---:|---|---|---:|---:|"]
    for row, b in zip(loso, blind, strict=True):
        rows.append(f"| {row['model']} | {si(row['params'])} | {', '.join(f'{v:.3f}' for v in row['predicted'])} | "
                    f"{', '.join(format_alpha(v) for v in row['best'])} | {row['mean_cost']:.4f} / "
                    f"{row['max_cost']:.4f} | {b['mean_cost']:.4f} / {b['max_cost']:.4f} |")
    return rows


def verdict(fit, sizes: list[SizeBest]) -> str:
    """What the data say about c, in one paragraph, with what it rests on."""
    lo, hi = fit.interval(LEVEL)
    span = f"N = {si(sizes[0].params)} to {si(sizes[-1].params)} ({sizes[-1].params / sizes[0].params:.1f}x)"
    base = (f"Rests on {len(sizes)} sizes, {sum(int(sb.runs.sum()) for sb in sizes)} runs and the seed noise their "
            "GPs measured.")
    if fit.identified_share < 0.5:
        return (f"**The data do not identify the rule**: in {1 - fit.identified_share:.0%} of the posterior draws "
                "the interior best shares (neither 0 nor 1) cannot fix a, b and c; more R levels between the last "
                f"R where pure AR wins and the first where pure MD does would. {base}")
    m = fit.median
    if lo[2] <= 0 <= hi[2]:
        return (f"**c is within seed noise of 0** ({m[2]:+.2f}, 90% interval [{lo[2]:+.2f}, {hi[2]:+.2f}]): "
                f"over {span} the best AR share does not measurably depend on model size; the rule's R term "
                f"is b = {m[1]:+.2f} [{lo[1]:+.2f}, {hi[1]:+.2f}]. {base}")
    return (f"**The best AR share depends on size**: c = {m[2]:+.2f} (90% interval [{lo[2]:+.2f}, {hi[2]:+.2f}]), "
            f"i.e. where the rule is below 1 the best share is {2 ** (3 * m[2]):.2f}x as large for an 8x larger "
            f"model at the same R (over {span}); b = {m[1]:+.2f} [{lo[1]:+.2f}, {hi[1]:+.2f}]. {base}")


def transfer_line(loso: list[dict], blind: list[dict]) -> str:
    """Whether the size term helps predict a size the fit has not seen (the sum over left-out sizes of the
    mean cost over R)."""
    with_c, without = sum(r["mean_cost"] for r in loso), sum(r["mean_cost"] for r in blind)
    if with_c < without:
        return (f"Leaving one size out, the rule with the size term costs less than the size-blind one (summed mean "
                f"cost {with_c:.4f} against {without:.4f}): the size term carries over to a size it has not seen.")
    return (f"Leaving one size out, the size-blind rule costs no more than the rule with the size term (summed mean "
            f"cost {without:.4f} against {with_c:.4f}): whatever the size dependence is, the log-linear size term "
            "does not predict a size it has not seen; read the table per size before using c.")


def plot_rule(sizes: list[SizeBest], fit, path: Path, metric: str) -> Path:
    """The best AR share against R per size (interval bars), the fitted rule per size, and the paper's
    α·R = 16 on the AR-share axis (its α with the AR loss doubled)."""
    fig = new_figure(5.6, 3.8)
    ax = fig.subplots()
    colors = series_colors([sb.model for sb in sizes])
    r_all = np.array(sorted({float(r) for sb in sizes for r in sb.levels}))
    grid = np.exp2(np.linspace(np.log2(r_all.min()), np.log2(r_all.max()), 200))
    for k, sb in enumerate(sizes):
        lo, hi = sb.interval(LEVEL)
        shift = 2 ** (0.06 * (k - (len(sizes) - 1) / 2))  # side by side at each R
        ax.errorbar(sb.levels * shift, sb.best, yerr=[sb.best - lo, hi - sb.best], fmt="o", color=colors[sb.model],
                    capsize=3, ms=5, label=f"{sb.model} (N = {si(sb.params)})")
        ax.plot(grid, predict(fit.median, grid, sb.params), color=colors[sb.model], lw=1.2, alpha=0.8)
    paper = [ar_share(min(1.0, 16 / r), PAPER_SCALE) for r in grid]
    ax.plot(grid, paper, "k--", lw=1, label="paper: α·R = 16 (AR loss ×2)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(r_all, [f"{r:g}" for r in r_all])
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("R (repetitions of the unique data)")
    ax.set_ylabel("best AR share")
    ax.set_title(f"best AR share per size ({metric}); bars: {LEVEL:.0%} of posterior draws; lines: the median rule",
                 fontsize=8)
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)


def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    from dualobj.run import atomic_write

    atomic_write(path, frame.to_csv(index=False))
    return path

