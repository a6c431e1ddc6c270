"""The whole report over a sweep: :func:`write_report` writes every table, plot and report.md, and
returns the written paths with the report text (status line, tables, paper analysis, runs not done)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from dualobj.errors import DualObjError, RunDirError
from dualobj.fmt import format_alpha
from dualobj.report.analysis import schedule_section
from dualobj.report.load import load_sweep
from dualobj.report.paper import paper_section
from dualobj.report.plots import plot_curves, plot_heatmap, plot_title, plot_vs_alpha
from dualobj.report.tables import cells_frame, pivot, to_csv, to_latex, to_markdown
from dualobj.run import STATES

DEFAULT_METRICS = ["val/ar_nll", "val/md_elbo"]
OPTIONAL_METRICS = ["eval/avg/ar", "eval/avg/md"]
FORMATS = ("md", "csv", "tex")
_ALWAYS_COUNTED = ("done", "failed", "running", "pending")  # shown in the status line even when 0
_STATE_ORDER = _ALWAYS_COUNTED + tuple(s for s in STATES if s not in _ALWAYS_COUNTED)


# ----------------------------------------------------------------------------- status
def status_counts(df: pd.DataFrame) -> dict[str, int]:
    """Runs per state: done, failed, running, pending always; the other :data:`dualobj.run.STATES` (dead,
    damaged, interrupted) when present, in that order."""
    counts = df["state"].value_counts().to_dict() if len(df) else {}
    order = _STATE_ORDER + tuple(sorted(set(counts) - set(_STATE_ORDER)))
    return {s: int(counts.get(s, 0)) for s in order if s in _ALWAYS_COUNTED or counts.get(s)}


def status_line(df: pd.DataFrame) -> str:
    """E.g. ``12 runs: 9 done, 1 failed, 1 running, 1 pending, 1 dead``."""
    return f"{len(df)} runs: " + ", ".join(f"{n} {s}" for s, n in status_counts(df).items())


def _not_done_lines(runs: pd.DataFrame, limit: int = 20) -> list[str]:
    bad = runs[runs["state"] != "done"]
    lines = []
    for _, r in bad.head(limit).iterrows():
        what = r["error"] if isinstance(r["error"], str) and r["error"] else r["note"]
        alpha = "?" if pd.isna(r["alpha"]) else format_alpha(r["alpha"])
        reps = "?" if pd.isna(r["repetitions"]) else f"{r['repetitions']:g}"
        lines.append(f"- {r['state']}: {r['run_id']} ({r['model']}, R={reps}, α={alpha}, seed={r['seed']})"
                     + (f": {what}" if isinstance(what, str) and what else "") + f" — {r['path']}")
    if len(bad) > limit:
        lines.append(f"- ... and {len(bad) - limit} more")
    return lines


# ----------------------------------------------------------------------------- the report
class ReportFiles(list):
    """The files :func:`write_report` wrote (a plain list of Paths), plus ``markdown``: the report text."""

    markdown: str = ""


def write_report(path: str | Path, metrics: list[str] | None = None, formats: Iterable[str] = FORMATS,
                 out_dir: str | Path | None = None, plots: bool = True) -> ReportFiles:
    """Tables and plots for every model size × metric of the runs under ``path``.

    ``metrics`` defaults to val/ar_nll and val/md_elbo, plus eval/avg/ar and eval/avg/md when present.
    ``formats`` is any of md, csv, tex; md also writes ``report.md`` with every table and the status
    counts. Plots (PNG: metric vs α, heatmap, validation curves for val/* metrics) are written unless
    ``plots=False``. Files go to ``out_dir`` (default ``<path>/report/``). Returns the written paths as
    a list whose ``markdown`` attribute is the report text (status line, tables, runs not done).

    When a model's done runs span ≥ 2 R levels and include α=0 and α=1, the report adds a "Paper
    analysis" section (:func:`dualobj.report.paper.paper_section`): Table 2 for the AR- and MD-mode
    targets, the GP fit (R², optimum and P(α optimal) per R), checks F1–F4 and, with plots,
    ``gp_<target>.png`` and ``overfit_curves.png`` (prefixed with the model name when the runs hold
    several model sizes).
    """
    formats = _check_formats(formats)
    if not Path(path).exists():
        raise RunDirError(f"{path} does not exist; give a sweep folder or run directory such as runs/smoke")
    runs, curves = load_sweep(path)
    metrics = _pick_metrics(runs, metrics)
    out = Path(out_dir) if out_dir is not None else Path(path) / "report"
    out.mkdir(parents=True, exist_ok=True)

    files = ReportFiles()
    text = [f"# dualobj report: {path}", "", status_line(runs), ""]
    models = sorted({m for m in runs["model"] if isinstance(m, str)}) or [None]
    for model in models:
        sub = runs[runs["model"] == model] if model is not None else runs
        csub = curves[curves["model"] == model] if model is not None and len(curves) else curves
        for metric in metrics:
            lines, written = _metric_part(sub, csub, model, metric, formats, out, plots)
            text += lines
            files += written
        prefix = _slug(model) + "_" if len(models) > 1 else ""
        lines, figs = _paper_analysis(sub, csub, out, model, plots, prefix)
        text += lines
        files += figs
    text += schedule_section(runs)
    not_done = _not_done_lines(runs)
    if not_done:
        text += ["## Runs not done", "", *not_done, ""]
    files.markdown = "\n".join(text).rstrip() + "\n"
    if "md" in formats:
        files.insert(0, _write(out / "report.md", files.markdown))
    return files


def _check_formats(formats: Iterable[str]) -> list[str]:
    formats = [f.lower().lstrip(".") for f in formats]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise DualObjError(f"unknown report format {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    return formats


def _pick_metrics(runs: pd.DataFrame, metrics: list[str] | None) -> list[str]:
    if metrics is None:
        return DEFAULT_METRICS + [m for m in OPTIONAL_METRICS if m in runs]
    known = [c for c in runs.columns if "/" in c]
    if (runs["state"] == "done").any():
        unknown = [m for m in metrics if m not in runs]
        if unknown:
            raise DualObjError(f"no run has metric {', '.join(unknown)}; available: {', '.join(known) or 'none'}")
    return list(metrics)


def _metric_part(runs: pd.DataFrame, curves: pd.DataFrame, model: str | None, metric: str,
                 formats: list[str], out: Path, plots: bool) -> tuple[list[str], list[Path]]:
    """The report section of one model × metric, and its table and plot files."""
    p = pivot(runs, metric, model)
    stem = _slug(model, metric)
    md = to_markdown(p)
    better = "lower" if p.lower_is_better else "higher"
    text = [f"## {model + ' — ' if model else ''}{metric} ({better} is better)", "", md, ""]
    files: list[Path] = []
    if "md" in formats:
        files.append(_write(out / f"{stem}.md", f"# {plot_title(metric, model, p.lower_is_better)}\n\n{md}\n"))
    if "csv" in formats:
        files.append(to_csv(p, out / f"{stem}.csv"))
        cells = out / f"{stem}_cells.csv"
        cells_frame(p).to_csv(cells, index=False)
        files.append(cells)
    if "tex" in formats:
        files.append(_write(out / f"{stem}.tex", to_latex(p)))
    if plots:
        files.append(plot_vs_alpha(runs, out / f"{stem}_vs_alpha.png", metric, model))
        files.append(plot_heatmap(runs, out / f"{stem}_heatmap.png", metric, model))
        if metric.startswith("val/"):
            files.append(plot_curves(curves, out / f"{stem}_curves.png", metric, model))
    return text, files


def _paper_analysis(runs: pd.DataFrame, curves: pd.DataFrame, out: Path, model: str | None, plots: bool,
                    prefix: str) -> tuple[list[str], list[Path]]:
    """:func:`paper_section` when the runs span ≥ 2 R levels with α=0 and α=1; a failure becomes a note
    instead of a crash."""
    try:
        return paper_section(runs, curves, out, model, plots=plots, prefix=prefix)
    except Exception as e:  # noqa: BLE001 - the analysis must never break the report
        title = f"## Paper analysis{' — ' + model if model else ''}"
        return [title, "", f"Paper analysis failed: {type(e).__name__}: {e}", ""], []


def _slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(str(p) for p in parts if p is not None)).strip("_")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
