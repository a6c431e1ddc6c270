"""Does the best α transfer across model sizes, on a recorded grid of several sizes (bench/record_grid.py of
a `variants:` sweep such as sweeps/transfer.yaml): the report's section (dualobj/report/transfer.py) — the
best AR share per size and R with its seed noise, the fitted rule, leave one size out — printed as markdown
and written as a section of bench/RESULTS.md.

    python bench/transfer_fit.py bench/data/transfer_grid.json [--metric val/ar_bpb] [--out DIR] [--no-write]

``--out DIR`` also writes alpha_rule.csv, alpha_best.csv, alpha_loso.csv and alpha_rule.png there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from grid_stats import runs_frame  # noqa: E402
from results import write_section  # noqa: E402

from dualobj.report.transfer import transfer_section  # noqa: E402
from dualobj.stats.frame import default_lower_is_better  # noqa: E402


def report(path: Path, metric: str = "val/ar_bpb", out: Path | None = None) -> str:
    runs = runs_frame(path)
    with tempfile.TemporaryDirectory() as tmp:
        lower = default_lower_is_better(metric)
        lines, _ = transfer_section(runs, metric, lower, out or Path(tmp), plots=out is not None)
    if not lines:
        raise SystemExit(f"{path}: fewer than two model sizes with a GP each on {metric}; nothing to fit")
    head = [f"## Best α across model sizes: {path.name}", "",
            f"`python bench/transfer_fit.py {path}`: {len(runs)} runs of {runs['model'].nunique()} sizes.", ""]
    return "\n".join(head + [ln for ln in lines[2:] if not ln.startswith("![")]).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", type=Path)
    ap.add_argument("--metric", default="val/ar_bpb")
    ap.add_argument("--out", type=Path, default=None, help="also write the CSV files and the figure here")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    a = ap.parse_args()
    body = report(a.record, a.metric, a.out)
    print(body)
    if not a.no_write:
        write_section(Path(__file__).parent / "RESULTS.md", f"bench/transfer_fit.py: {a.record.stem}", body)


if __name__ == "__main__":
    main()
