"""Training-step throughput of the tool's own step (data + masking + forward/backward + optimizer).

    .venv/bin/python bench/train_throughput.py [--models tiny small] [--steps 8] [--precision auto]

Prints a table: tokens/s (median over timed steps) for AR-only, MD-only and alpha=0.5 steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console
from rich.table import Table

from dualobj import config
from dualobj.train import Trainer


def measure(model: str, alpha: float, precision: str, steps: int, warmup: int) -> tuple[float, str]:
    cfg = config.load([f"model={model}", f"objective.alpha={alpha}", f"train.precision={precision}",
                       "train.tokens=100000000", "data.repetitions=100", "train.progress=false"])
    tr = Trainer(cfg, out="/tmp/dualobj-bench-unused")
    tr.setup()
    tokens = cfg.train.batch_size * cfg.model.seq_len
    times = []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        tr.train_step(step)
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return tokens / statistics.median(times), "bf16" if tr.bf16 else "fp32"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["tiny", "small"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", default="auto")
    a = ap.parse_args()
    table = Table(title="dualobj training step throughput (median tokens/s)")
    for col in ("model", "precision", "AR (α=1)", "MD (α=0)", "α=0.5", "MD / AR step time"):
        table.add_column(col, justify="right")
    for model in a.models:
        res = {alpha: measure(model, alpha, a.precision, a.steps, a.warmup) for alpha in (1.0, 0.0, 0.5)}
        prec = res[1.0][1]
        table.add_row(model, prec, *(f"{res[x][0]:,.0f}" for x in (1.0, 0.0, 0.5)),
                      f"{res[1.0][0] / res[0.0][0]:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
