"""Results report over a sweep: tables with rows = data repetitions R and columns = AR weight α, plots,
and the paper's analysis (Table 2, the GP surface, checks F1–F4).

    from dualobj.report import write_report
    files = write_report("runs/smoke", metrics=None, formats=["md", "csv", "tex"], out_dir=None)
    print(files.markdown)          # the tables, for the terminal; `files` is the list of written paths

Modules, each with one job (none imports another's private names; no cycles):

    tables    pivot (mean/std/n per (R, α), best α, Δ vs pure AR / MD), to_markdown / to_latex / to_csv
    plots     plot_vs_alpha / plot_heatmap / plot_curves and the figure helpers
    analysis  the paper's targets, Table 2, over-fitting at the highest R, α schedules
    gp        the figure of the Gaussian-process surface (the fit is dualobj.stats.gp's)
    checks    the paper's findings F1–F4
    paper     the report's "Paper analysis" section
    write     write_report: every file and the report text

Runs are read by :mod:`dualobj.run.table` (load_runs, load_curves) from the folders :mod:`dualobj.run.status`
finds; the statistics shared with the adaptive search live in :mod:`dualobj.stats`. A run's state comes
from :func:`dualobj.run.run_info` only; α is written by :func:`dualobj.fmt.format_alpha`.
"""

from dualobj.report.analysis import (
    Target,
    applicable,
    find_targets,
    has_metric,
    overfit_summary,
    plot_overfit_curves,
    schedule_section,
    table2,
    table2_markdown,
)
from dualobj.report.checks import check_line, paper_checks
from dualobj.report.gp import plot_gp_surface
from dualobj.report.paper import paper_section
from dualobj.report.plots import plot_curves, plot_heatmap, plot_vs_alpha
from dualobj.report.tables import (
    Pivot,
    cells_frame,
    pivot,
    to_csv,
    to_latex,
    to_markdown,
)
from dualobj.report.write import ReportFiles, status_counts, status_line, write_report
from dualobj.run.status import find_run_dirs
from dualobj.run.table import load_curves, load_runs, load_sweep
from dualobj.stats.frame import default_lower_is_better, select_model
from dualobj.stats.gp import GPFit, fit_gp

__all__ = [
    "GPFit", "Pivot", "ReportFiles", "Target", "applicable", "cells_frame", "check_line",
    "default_lower_is_better", "find_run_dirs", "find_targets", "fit_gp", "has_metric", "load_curves",
    "load_runs", "load_sweep", "overfit_summary", "paper_checks", "paper_section", "pivot", "plot_curves",
    "plot_gp_surface", "plot_heatmap", "plot_overfit_curves", "plot_vs_alpha", "schedule_section",
    "select_model", "status_counts", "status_line", "table2", "table2_markdown", "to_csv", "to_latex",
    "to_markdown", "write_report",
]
