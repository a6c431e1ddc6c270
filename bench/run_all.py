"""`make bench`: every benchmark table, printed and written to bench/RESULTS.md with the machine description.

Numbers are medians; compare ratios measured in one run (these machines are noisy).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from dualobj.cli import _tune_malloc  # noqa: E402

_tune_malloc()  # re-exec once with the same fast allocator `dualobj` uses, before torch loads
sys.path.insert(0, str(Path(__file__).parent))
import eval_throughput  # noqa: E402
import run_overhead  # noqa: E402
import sweep_throughput  # noqa: E402
import train_throughput  # noqa: E402
from common import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["tiny", "small", "base"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "RESULTS.md"))
    ap.add_argument("--quick", action="store_true", help="tiny only, fewer steps, no sweep timing")
    a = ap.parse_args()
    models = ["tiny"] if a.quick else a.models
    sections = [f"# Benchmark results\n\n{datetime.date.today()}, {machine()}\n"]
    for title, fn in [
        ("Training step throughput and MFU", lambda: train_throughput.run(models, 2 if a.quick else 6)),
        ("A whole run at default settings (tiny, 1M tokens)", lambda: run_overhead.run()[0]),
        ("Evaluation throughput per mode", eval_throughput.eval_table),
        ("Data preparation", eval_throughput.data_table),
        *([] if a.quick else [("Sweep throughput, joblib launcher", sweep_throughput.run)]),
    ]:
        print(f"## {title}", flush=True)
        table = fn()
        print(table, flush=True)
        sections.append(f"## {title}\n\n{table}\n")
    Path(a.out).write_text("\n".join(sections))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
