"""Training throughput: the tool's step vs a bare reference loop, tokens/s, achieved FLOP/s and MFU.

    python bench/train_throughput.py [--models tiny small base] [--steps 4]

The tool's step is Trainer.train_step (data, masking, the dual loss, backward, clipping, optimizer).
The bare loop is model + cross-entropy + AdamW on a pre-made batch, nothing else. MFU = achieved
FLOP/s (6 N + attention per token, head included) / measured peak matmul FLOP/s of the same dtype.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table, median_time  # noqa: E402
from peak import matmul_peak  # noqa: E402

from dualobj import config  # noqa: E402
from dualobj.model import Transformer, document_ids, flops_per_token  # noqa: E402
from dualobj.train import Trainer  # noqa: E402

BATCH = {"tiny": 32, "small": 16, "base": 8}


def tool_step(model: str, alpha: float, precision: str, steps: int, warmup: int) -> tuple[float, Trainer]:
    cfg = config.load([f"model={model}", f"objective.alpha={alpha}", f"train.precision={precision}",
                       f"train.batch_size={BATCH[model]}", "train.tokens=100000000", "data.repetitions=100",
                       "train.progress=false"])
    tr = Trainer(cfg, out="/tmp/dualobj-bench-unused")
    tr.setup()
    step = iter(range(10**6))
    dt = median_time(lambda: tr.train_step(next(step)), steps, warmup)
    return cfg.train.batch_size * cfg.model.seq_len / dt, tr


def bare_step(tr: Trainer, steps: int, warmup: int) -> float:
    """model + loss + optimizer only: the same model call (same per-row document mask, made once) on a
    pre-made batch, plain cross-entropy, AdamW; no data pipeline, masking, loss weighting or clipping."""
    m, cfg = tr.model, tr.cfg
    b, t = cfg.train.batch_size, cfg.model.seq_len
    x = torch.from_numpy(tr.stream.get(np.arange(b)))
    doc = document_ids(x[:, :-1], tr.corpus.bos_id)
    causal = torch.arange(b) < b // 2
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

    def step():
        with tr.autocast or torch.autocast("cpu", enabled=False):
            logits = m(x[:, :-1], causal, doc)
        F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return b * t / median_time(step, steps, warmup)


def run(models: list[str], steps: int = 6, warmup: int = 3) -> str:
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    for model in models:
        for precision in ("fp32", "bf16"):
            res = {}
            for alpha in (1.0, 0.0, 0.5):
                res[alpha], tr = tool_step(model, alpha, precision, steps, warmup)
            bare = bare_step(tr, steps, warmup)
            fpt = flops_per_token(tr.cfg.model, Transformer.num_params(tr.model, non_embedding=True))
            achieved = res[0.5] * fpt
            rows.append([model, precision, f"{res[1.0]:,.0f}", f"{res[0.0]:,.0f}", f"{res[0.5]:,.0f}",
                         f"{res[1.0] / res[0.0]:.3f}", f"{bare:,.0f}", f"{bare / res[1.0] - 1:+.1%}",
                         f"{achieved / 1e9:.0f}", f"{peaks[precision] / 1e9:.0f}", f"{achieved / peaks[precision]:.0%}"])
    return md_table(["model", "dtype", "AR tok/s", "MD tok/s", "α=0.5 tok/s", "MD step / AR step",
                     "bare loop tok/s", "tool overhead", "GFLOP/s (α=0.5)", "peak GFLOP/s", "MFU"], rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["tiny", "small", "base"])
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    print(run(a.models, a.steps))
