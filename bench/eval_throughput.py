"""Evaluation throughput per mode (items/s) on a tiny model, and data preparation tokens/s."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table  # noqa: E402

from dualobj import config  # noqa: E402
from dualobj.data.tokens import prepare_corpus  # noqa: E402
from dualobj.evaluate.evaluator import Evaluator  # noqa: E402
from dualobj.train import train  # noqa: E402


def eval_table(limit: int = 200) -> str:
    out = Path(tempfile.mkdtemp(prefix="dualobj-bench-eval-"))
    try:
        train(config.load(["model=tiny", "train.tokens=131072", "eval.at_end=false", "train.progress=false",
                           f"out={out}"]))
        ev = Evaluator(out)
        rows = []
        for task in ("blimp", "piqa", "probe_mc", "val"):
            ev.e.limit, ev.e.probe_items = limit, limit
            try:
                res = ev.run_task(task)
            except Exception as e:  # a missing benchmark folder: say so in the table
                rows.append([task, "-", f"skipped: {e}", "", ""])
                continue
            r = res["results"]
            rows.append([task, res["n_items"], *(f"{r[m]['items_per_s']:.1f}" if m in r else "-"
                                                 for m in ("ar", "md", "prefix"))])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return md_table(["task", "items", "AR items/s", f"MD items/s (mc, K={ev.e.md_samples})", "prefix items/s"], rows)


def data_table() -> str:
    cache = Path(tempfile.mkdtemp(prefix="dualobj-bench-cache-"))
    try:
        data = config.load([f"data.cache_dir={cache}"]).data
        t0 = time.perf_counter()
        c = prepare_corpus(data, 8192)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepare_corpus(data, 8192)
        warm = time.perf_counter() - t0
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    n = len(c.train) + len(c.val)
    return md_table(["corpus", "tokens", "cold (BPE + tokenise + write) s", "tokens/s cold", "cached load s"],
                    [["wiki (vocab 8192)", f"{n:,}", f"{cold:.2f}", f"{n / cold:,.0f}", f"{warm:.3f}"]])


if __name__ == "__main__":
    print(eval_table())
    print(data_table())
