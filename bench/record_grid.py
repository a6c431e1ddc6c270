"""A finished grid folder as a compact record for `bench/search_replay.py`: per done cell its semantic config
(model, its non-embedding parameters, R, α, seed, objective.ar_loss_scale, the AR share) and its final metrics
(summary.json's val/* and eval/* values); no checkpoints, no curves.

    python bench/record_grid.py runs/mini > bench/data/mini_grid.json
    python bench/record_grid.py runs/mini runs/mini-seeds > bench/data/mini_grid_2seeds.json   # two seeds per cell
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from dualobj.budget import ar_share
from dualobj.run import run_info
from dualobj.run.table import load_runs

METRIC_PREFIXES = ("val/", "eval/")


def cell_record(row: dict) -> dict:
    """One done run as a record: its semantic config and its final metrics."""
    info = run_info(Path(row["path"]))
    scale = info.get("objective.ar_loss_scale")
    scale = float(scale) if isinstance(scale, (int, float)) else 1.0
    alpha = float(row["alpha"])
    metrics = {k: float(v) for k, v in row.items()
               if k.startswith(METRIC_PREFIXES) and isinstance(v, (int, float)) and math.isfinite(v)}
    return {"run_id": row["run_id"], "model": row["model"], "R": float(row["repetitions"]), "alpha": alpha,
            "seed": int(row["seed"]), "ar_loss_scale": scale, "ar_share": ar_share(alpha, scale),
            "alpha_schedule": info.get("objective.alpha_schedule") or "constant", "tokens": row["tokens"],
            "params_non_embedding": _count(row.get("params_non_embedding")),
            "metrics": dict(sorted(metrics.items()))}


def _count(x) -> int | None:
    return int(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def record(*folders: Path) -> dict:
    """Every done constant-α run under ``folders``, once per run id, sorted by (model, R, α, seed)."""
    cells: dict[str, dict] = {}
    not_done = 0
    for folder in folders:
        runs = load_runs(folder)
        done = runs[runs["state"] == "done"]
        for c in (cell_record(r) for r in done.to_dict("records")):
            if c["alpha_schedule"] == "constant":
                cells.setdefault(c["run_id"], c)
        not_done += int((runs["state"] != "done").sum())
    ordered = sorted(cells.values(), key=lambda c: (c["model"], c["R"], c["alpha"], c["seed"]))
    return {"source": " ".join(str(f) for f in folders), "written_by": "bench/record_grid.py",
            "cells_not_done": not_done, "cells": ordered}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, nargs="+",
                    help="finished sweep folders, e.g. runs/mini (a run in two counts once)")
    a = ap.parse_args()
    rec = record(*a.folder)
    if rec["cells_not_done"]:
        print(f"note: {rec['cells_not_done']} cell(s) not done are left out", file=sys.stderr)
    json.dump(rec, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
