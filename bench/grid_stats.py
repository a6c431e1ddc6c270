"""The noise-aware analysis of a recorded grid (bench/record_grid.py): every R×α table ± its standard error,
the best α per R with what is within noise of it, Table 2, the checks F1–F4 with their verdicts, and the
GP's leave-one-cell-out calibration. Printed as markdown and written as a section of bench/RESULTS.md.

    python bench/grid_stats.py bench/data/mini_grid_2seeds.json [--out DIR] [--no-write]

``--out DIR`` also writes best_alpha.csv and checks.csv there, as `dualobj report` does for run folders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section  # noqa: E402

from dualobj.report.paper import paper_section  # noqa: E402
from dualobj.report.tables import legend, pivot, to_markdown  # noqa: E402
from dualobj.stats.gp import loo_cell_coverage  # noqa: E402

METRICS = ["val/ar_bpb", "val/md_bpb"]


def runs_frame(path: Path) -> pd.DataFrame:
    """A record's cells as the runs table `dualobj report` builds from run folders (done runs only)."""
    cells = json.loads(Path(path).read_text())["cells"]
    return pd.DataFrame([{"state": "done", "model": c["model"], "repetitions": c["R"], "alpha": c["alpha"],
                          "seed": c["seed"], "run_id": c["run_id"], "ar_share": c.get("ar_share"),
                          "params_non_embedding": c.get("params_non_embedding"), **c["metrics"]} for c in cells])


def calibration_lines(runs: pd.DataFrame) -> list[str]:
    lines = ["### GP calibration (leave one cell out, 90% intervals)", "",
             "| metric | cells | seeds per cell | share of cells inside their interval | median half-width |",
             "|---|---:|---:|---:|---:|"]
    for m in METRICS:
        cov = loo_cell_coverage(runs, m)
        lo, hi = cov["n_seeds"].min(), cov["n_seeds"].max()
        lines.append(f"| `{m}` | {len(cov)} | {lo if lo == hi else f'{lo}-{hi}'} | {cov.attrs['coverage']:.2f} "
                     f"| {cov['half_width'].median():.4f} |")
    return lines + [""]


def report(path: Path, out: Path | None) -> str:
    runs = runs_frame(path)
    n_seeds = runs.groupby(["repetitions", "alpha"]).size()
    lo, hi = n_seeds.min(), n_seeds.max()
    head = [f"## Noise-aware analysis of {path.name}", "",
            f"`python bench/grid_stats.py {path}`: {len(runs)} runs, {len(n_seeds)} cells, "
            f"{lo if lo == hi else f'{lo}-{hi}'} seed(s) per cell.", ""]
    tables = []
    for m in METRICS:
        p = pivot(runs, m)
        tables += [f"### `{m}` (lower is better)", "", to_markdown(p), "", legend(p), ""]
    text, _ = paper_section(runs, None, out, plots=False, metrics=METRICS, n_samples=1000)
    return "\n".join(head + tables + text[1:] + calibration_lines(runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="also write best_alpha.csv and checks.csv here")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    a = ap.parse_args()
    body = report(a.record, a.out)
    print(body)
    if not a.no_write:
        write_section(Path(__file__).parent / "RESULTS.md", f"bench/grid_stats.py: {a.record.stem}", body)


if __name__ == "__main__":
    main()
