"""The whole report over a sweep: :func:`write_report` writes every table, plot and report.md, and
returns the written paths with the report text (status line, sign convention, tables, paper analysis,
α schedules, runs not done)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from dualobj.errors import DualObjError, RunDirError
from dualobj.fmt import format_alpha
from dualobj.report.analysis import schedule_section, target_metrics
from dualobj.report.items import paired_lines
from dualobj.report.paper import paper_section
from dualobj.report.plots import plot_curves, plot_heatmap, plot_title, plot_vs_alpha
from dualobj.report.search import search_folders, search_section
from dualobj.report.tables import SIGN_CONVENTION, cells_frame, legend, pivot, to_csv, to_latex, to_markdown
from dualobj.report.transfer import transfer_section
from dualobj.run.status import counts_line, state_counts
from dualobj.run.table import load_sweep

DEFAULT_METRICS = ["val/ar_nll", "val/md_elbo"]
OPTIONAL_METRICS = ["eval/avg/ar", "eval/avg/md"]
FORMATS = ("md", "csv", "tex")


# ----------------------------------------------------------------------------- status
def status_counts(df: pd.DataFrame) -> dict[str, int]:
    """Runs per state, as `dualobj status` counts them (:func:`dualobj.run.status.state_counts`): done,
    failed, running, pending always; the other :data:`dualobj.run.STATES` when present."""
    return state_counts(df["state"] if len(df) else [])


def status_line(df: pd.DataFrame) -> str:
    """E.g. ``12 runs: 9 done, 1 failed, 1 running, 1 pending, 1 dead`` (the line `dualobj status` prints)."""
    return counts_line(df["state"] if len(df) else [])


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
                 out_dir: str | Path | None = None, plots: bool = True, analysis: bool | None = None) -> ReportFiles:
    """Tables and plots for every model size × metric of the runs under ``path``.

    The runs are those `dualobj status` lists (:func:`dualobj.run.status.folder_runs`), pending cells
    of a sweep plan included. ``metrics`` defaults to val/ar_nll and val/md_elbo, plus eval/avg/ar and
    eval/avg/md when present. ``formats`` is any of md, csv, tex; md also writes ``report.md`` with every
    table and the status counts. Plots (PNG: metric vs α, heatmap, validation curves for val/* metrics)
    are written unless ``plots=False``. Files go to ``out_dir`` (default ``<path>/report/``). Returns the
    written paths as a list whose ``markdown`` attribute is the report text (status line, sign convention,
    tables, runs not done).

    Runs with an α schedule get no R×α table of their own: each is compared with the constant α runs of
    its model at the same R (:func:`dualobj.report.analysis.schedule_section`).

    The "Paper analysis" section (:func:`dualobj.report.paper.paper_section`: Table 2, the GP fit, checks
    F1–F4 and, with plots, ``gp_<target>.png`` and ``overfit_curves.png``, prefixed with the model name
    when the runs hold several model sizes) needs done runs at ≥ 2 R levels including α=0 and α=1. It is
    written for every target when ``analysis`` is True, never when False, and by default (None) for the
    targets among explicitly requested ``metrics`` (e.g. ``-m val/ar_bpb -m val/md_bpb``).
    """
    formats = _check_formats(formats)
    runs, curves = load_sweep(path)
    asked = metrics is not None
    metrics = _pick_metrics(runs, metrics)
    out = _out_folder(Path(out_dir) if out_dir is not None else Path(path) / "report")
    targets = _analysis_targets(analysis, metrics if asked else None)

    files = ReportFiles()
    text = [f"# dualobj report: {path}", "", status_line(runs), "", SIGN_CONVENTION, ""]
    labels = {m for m in runs["model"] if isinstance(m, str)}
    models = sorted(m for m in labels if "+" not in m) or ([] if labels else [None])  # "+": an α schedule
    several = len(models) > 1
    for model in models:
        sub = runs[runs["model"] == model] if model is not None else runs
        csub = curves[curves["model"] == model] if model is not None and len(curves) else curves
        for metric in metrics:
            lines, written = _metric_part(sub, csub, model, metric, formats, out, plots)
            text += lines
            files += written
        if targets is not False:
            lines, figs = _paper_analysis(sub, csub, out, model, plots, _slug(model) + "_" if several else "", targets)
            text += lines
            files += figs
    text += schedule_section(runs, metrics)
    for folder, label in search_folders(path):  # a search folder's trace (dualobj/sweep/search.py), or a variant's
        lines, figs = search_section(folder, out, plots, label)
        text += lines
        files += figs  # in place: files stays a ReportFiles
    lines, figs = _transfer(path, runs, out, plots)
    text += lines
    files += figs
    not_done = _not_done_lines(runs)
    if not_done:
        text += ["## Runs not done", "", *not_done, ""]
    files.markdown = "\n".join(text).rstrip() + "\n"
    if "md" in formats:
        files.insert(0, _write(out / "report.md", files.markdown))
    return files


def _transfer(path: str | Path, runs: pd.DataFrame, out: Path, plots: bool) -> tuple[list[str], list[Path]]:
    """:func:`transfer_section`; a failure becomes a note instead of a crash."""
    try:
        return transfer_section(runs, *_rule_metric(path, runs), out, plots)
    except Exception as e:  # noqa: BLE001 - the analysis must never break the report
        return ["## Does the best α transfer?", "", f"The rule fit failed: {type(e).__name__}: {e}", ""], []


def _rule_metric(path: str | Path, runs: pd.DataFrame) -> tuple[str | None, bool]:
    """The metric whose best α the transfer section fits: the searches' metric, else val/ar_bpb when the runs
    have it; and whether lower is better."""
    from dualobj.sweep.search import read_trace

    for folder, _ in search_folders(path):
        s = (read_trace(folder) or {}).get("settings") or {}
        if s.get("metric") in runs:
            return s["metric"], s.get("goal", "min") == "min"
    return ("val/ar_bpb", True) if "val/ar_bpb" in runs else (None, True)


def _analysis_targets(analysis: bool | None, asked: list[str] | None) -> list[str] | None | bool:
    """What the paper analysis is written for: False = nothing, None = every target found, else the
    target metrics among those asked for."""
    if analysis is not None:
        return None if analysis else False
    chosen = [m for m in asked or [] if m in target_metrics()]
    return chosen or False


def _out_folder(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise RunDirError(f"report folder {out} is a file; give --out a folder (it is created when missing)")
    out.mkdir(parents=True, exist_ok=True)
    return out


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
    text = [f"## {model + ' — ' if model else ''}{metric} ({better} is better)", "", md, "", legend(p), "",
            *paired_lines(runs, metric)]
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
                    prefix: str, metrics: list[str] | None) -> tuple[list[str], list[Path]]:
    """:func:`paper_section` for the targets among ``metrics`` (None: all); a failure becomes a note instead
    of a crash."""
    try:
        return paper_section(runs, curves, out, model, plots=plots, prefix=prefix, metrics=metrics)
    except Exception as e:  # noqa: BLE001 - the analysis must never break the report
        title = f"## Paper analysis{' — ' + model if model else ''}"
        return [title, "", f"Paper analysis failed: {type(e).__name__}: {e}", ""], []


def _slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(str(p) for p in parts if p is not None)).strip("_")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
