"""Sweep throughput with the joblib launcher: (jobs x threads) = (1 x 2) against (2 x 1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CELL_TOKENS = 131072


def run(cells: int = 4) -> str:
    rows = []
    for jobs, threads in ((1, 2), (2, 1)):
        out = Path(tempfile.mkdtemp(prefix="dualobj-bench-sweep-"))
        spec = out / "bench.yaml"
        spec.write_text(f"name: bench\nfixed: [model=tiny, train.tokens={CELL_TOKENS}, eval.at_end=false]\n"
                        f"axes:\n  seed: {list(range(cells))}\nlauncher: {{name: joblib, jobs: {jobs}}}\n")
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "dualobj.cli", "sweep", str(spec), "--out", str(out / "runs"),
                              f"train.threads={threads}"], capture_output=True, text=True, env=os.environ)
        wall = time.perf_counter() - t0
        shutil.rmtree(out, ignore_errors=True)
        ok = "ok" if res.returncode == 0 else f"failed: {res.stderr[-200:]}"
        rows.append([f"{jobs} x {threads}", cells, f"{wall:.1f}", f"{cells * CELL_TOKENS / wall:,.0f}", ok])
    return md_table(["jobs x threads", "cells", "wall s", "total tokens/s (incl. start-up)", "status"], rows)


if __name__ == "__main__":
    print(run())
