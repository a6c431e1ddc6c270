"""The report's "Paper analysis" section for one model size: Table 2 per target, the GP surface per target,
the checks F1–F4 and over-fitting at the highest R, with their figures (:func:`paper_section`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dualobj.fmt import format_alpha, format_number
from dualobj.report.analysis import (
    Target,
    applicable,
    find_targets,
    overfit_summary,
    plot_overfit_curves,
    table2,
    table2_markdown,
)
from dualobj.report.checks import NO_SIGNAL, UNKNOWN_SIGNIFICANCE, check_line, checks_frame, paper_checks
from dualobj.report.gp import plot_gp_surface
from dualobj.run.files import atomic_write
from dualobj.stats.frame import select_model
from dualobj.stats.gp import fit_gp
from dualobj.stats.seeds import BEST_COLUMNS, MAX_SEEDS, SeedGrid


def paper_section(runs: pd.DataFrame, curves: pd.DataFrame | None, out_dir: str | Path | None,
                  model: str | None = None, plots: bool = True, prefix: str = "",
                  n_samples: int = 2000, metrics: list[str] | None = None) -> tuple[list[str], list[Path]]:
    """The "Paper analysis" markdown lines for one model and the figures written to ``out_dir``
    (``{prefix}gp_<target>.png`` per target, ``{prefix}overfit_curves.png``; none when ``plots`` is False
    or ``out_dir`` is None), for the targets among ``metrics`` (all targets found when None). Returns
    ([], []) when :func:`applicable` is False or no target is left. A GP that cannot be fitted (fewer
    than 4 done runs, constant values, a target with no signal, or an error) becomes a one-line note."""
    sub, model = select_model(runs, model)
    targets = find_targets(sub, model, metrics) if applicable(sub, model) else []
    if not targets:
        return [], []
    out = Path(out_dir) if out_dir is not None and plots else None
    text = [f"## Paper analysis{' — ' + model if model else ''}", "",
            "Table 2 per target: the best mix 0<α<1 per R against pure AR (α=1) and pure MD (α=0); "
            "gains are positive when the mix is better, ± their standard error over seeds (paired by seed); "
            "`beyond noise`: both gains positive beyond their noise (holds), one negative beyond it (fails), "
            "or neither (unresolved).", ""]
    for t in targets:
        text += [f"### Table 2 — {t.label}", "", *_signal_note(t),
                 table2_markdown(sub, t.metric, model, t.lower_is_better), ""]
    lines, best = _best_alpha_part(sub, targets, model)
    text += lines
    files: list[Path] = []
    for t in targets:
        lines, figs = _gp_part(sub, t, model, n_samples, out, prefix)
        text += lines
        files += figs
    checks = paper_checks(sub, model, metrics=[t.metric for t in targets])
    text += ["### Checks of the paper's findings", "", CHECKS_NOTE, "", *[check_line(c) for c in checks], ""]
    if out_dir is not None:
        files += _write_csv(best, Path(out_dir) / f"{prefix}best_alpha.csv")
        files += _write_csv(checks_frame(checks), Path(out_dir) / f"{prefix}checks.csv")
    if curves is not None and len(curves):
        lines, figs = _overfit_part(sub, curves, targets, model, out, prefix)
        text += lines
        files += figs
    return text, files


CHECKS_NOTE = ("A verdict is **holds** or **fails** only when the differences it rests on exceed their seed noise "
               "(two-sided tests at 95%, Bonferroni over a check's comparisons; the best α per R as above); "
               "otherwise **unresolved**, with about how many seeds per cell would resolve it. What the means "
               "alone say is given where it differs.")
BEST_NOTE = ("Per R: the best α by its mean over seeds (adjusted for seed effects where cells have different seeds) "
             "± its standard error, and the α whose difference from it, paired by seed, is not significant (two-"
             "sided t tests at 95%, Holm's correction over the comparisons at that R). **resolved**: no α is "
             "within noise of the best. Cells with one seed are compared with the grid's pooled seed noise.")


def _noise_line(g: SeedGrid) -> str:
    n = g.noise
    if not n.known:
        return ("Seed noise unknown: no cell has two seeds, so nothing can be resolved (add `seeds: 2` to the "
                "sweep file, or a second seed of some cells).")
    pair = (f"; a difference of two α at one R, paired by seed: residual sd {format_number(n.pair_sd)} on "
            f"{n.pair_df} df" if n.pair_df else "; no α pair shares seeds: differences are unpaired")
    return f"Seed noise: one run's sd {format_number(n.run_sd)} on {n.run_df} df (pooled over cells with several " \
           f"seeds){pair}."


def _best_alpha_part(runs: pd.DataFrame, targets: list[Target], model: str | None) -> tuple[list[str], pd.DataFrame]:
    """The best α per R with what is within noise of it, per target (not for targets with no signal), and
    the rows of best_alpha.csv."""
    text, frames = ["### Best α per R, with what is within noise", "", BEST_NOTE, ""], []
    for t in targets:
        if t.signal is False:
            continue
        g = SeedGrid(runs, t.metric, model, t.lower_is_better)
        tab = g.best_table()
        frames.append(tab)
        text += [f"{t.label}. {_noise_line(g)}", "", best_markdown(tab, g.noise.known), ""]
    return text, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=BEST_COLUMNS)


def best_markdown(tab: pd.DataFrame, noise_known: bool = True) -> str:
    """A :meth:`dualobj.stats.seeds.SeedGrid.best_table` as markdown."""
    head = ["R", "best α", "mean ± se", "seeds", "within noise", "resolved", "seeds per cell to resolve"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    for _, row in tab.iterrows():
        need = row["seeds_to_resolve"]
        need = "" if need == "" or not noise_known else (f"> {MAX_SEEDS}" if int(need) > MAX_SEEDS else f"~{need}")
        se = "" if pd.isna(row["se"]) else f" ± {format_number(row['se'])}"
        lines.append("| " + " | ".join([str(row["R"]), format_alpha(row["best_alpha"]), format_number(row["mean"]) + se,
                                        str(row["n_seeds"]), row["within_noise"] or "—",
                                        "yes" if row["resolved"] else "no", need]) + " |")
    return "\n".join(lines)


def _write_csv(frame: pd.DataFrame, path: Path) -> list[Path]:
    """``frame`` as CSV at ``path``, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, frame.to_csv(index=False))
    return [path]


def _gp_part(runs: pd.DataFrame, t: Target, model: str | None, n_samples: int, out: Path | None,
             prefix: str) -> tuple[list[str], list[Path]]:
    """The GP surface of target ``t``: summary, table, optimiser notes and (when ``out``) its figure."""
    text = [f"### GP surface — {t.label}", ""]
    if t.signal is False:
        return text + [f"GP fit skipped for {t.metric}: {NO_SIGNAL}.", ""], []
    try:
        gp = fit_gp(runs, t.metric, model, t.lower_is_better, n_samples=n_samples)
    except Exception as e:  # noqa: BLE001 - a failed fit is reported, never fatal to the report
        return text + [f"GP fit skipped for {t.metric}: {type(e).__name__}: {e}", ""], []
    text += [gp.markdown(), ""]
    if gp.notes:
        text += ["Optimiser notes: " + "; ".join(gp.notes), ""]
    if out is None:
        return text, []
    f = plot_gp_surface(gp, out / f"{prefix}gp_{t.name}.png")
    return text + [f"![GP surface, {t.metric}]({f.name})", ""], [f]


def _signal_note(t: Target) -> list[str]:
    if t.signal is False:
        return [f"**{NO_SIGNAL[0].upper() + NO_SIGNAL[1:]}**: these differences are noise.", ""]
    if t.signal is None:
        return [f"Scores of chance-normalised tasks, {UNKNOWN_SIGNIFICANCE}.", ""]
    return []


def _overfit_metric(curves: pd.DataFrame, ar_target: Target | None) -> str | None:
    """The AR-mode metric logged during training: the ar target's, else val/ar_bpb, else val/ar_nll."""
    candidates = ((ar_target.metric,) if ar_target else ()) + ("val/ar_bpb", "val/ar_nll")
    return next((m for m in candidates
                 if m in curves and pd.to_numeric(curves[m], errors="coerce").notna().any()), None)


def _overfit_part(runs: pd.DataFrame, curves: pd.DataFrame, targets: list[Target], model: str | None,
                  out: Path | None, prefix: str) -> tuple[list[str], list[Path]]:
    """Over-fitting at the highest R: per run best, final and rise; the curves figure when ``out``."""
    csub, _ = select_model(curves, model)
    ar_t = next((t for t in targets if t.name == "ar"), None)
    metric = _overfit_metric(csub, ar_t)
    if metric is None:
        return [], []
    text: list[str] = []
    summ = overfit_summary(csub, metric, model)
    if len(summ):
        lines = [f"- α={format_alpha(row['alpha'])} (seed {row['seed']}): best {format_number(row['min'])}, "
                 f"final {format_number(row['final'])}, rise after the best {format_number(row['rise'], 4, True)}"
                 for _, row in summ.sort_values(["alpha", "seed"], ascending=[False, True]).iterrows()]
        text += [f"### Over-fitting at R={summ.attrs['repetitions']} ({metric} during training)", "", *lines, ""]
    if out is None:
        return text, []
    best = None
    if ar_t is not None and ar_t.metric == metric:
        tab = table2(runs, metric, model)
        r_hi = summ.attrs.get("repetitions") if len(summ) else None
        if r_hi in tab.index and not pd.isna(tab.loc[r_hi, "best α"]):
            best = float(tab.loc[r_hi, "best α"])
    f = plot_overfit_curves(csub, out / f"{prefix}overfit_curves.png", metric, model, best_alpha=best)
    return text + [f"![validation curves]({f.name})", ""], [f]
