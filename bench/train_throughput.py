"""Training throughput: the tool's step vs a bare reference loop, tokens/s, achieved FLOP/s and MFU.

    python bench/train_throughput.py [--models tiny small base] [--steps 4]

The tool's step is Trainer.train_step (data, masking, the dual loss, backward, clipping, optimizer).
The bare loop is model + cross-entropy + AdamW on a pre-made batch, nothing else. MFU = achieved
FLOP/s (6 N + attention per token, head included) / measured peak matmul FLOP/s of the same dtype.
Each model runs in fp32 and bf16 autocast, eager and with ``train.compile=true``; all variants of a
model and the peak matmuls are timed round-robin in the same rounds (this machine is shared and noisy).
Where bf16 is emulated (no AVX512-BF16/AMX: about 100x slower than fp32) the bf16 variants are left out
and only the bf16 matmul peak is measured, on a smaller matrix, so the table still names both peaks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_trainer, md_table, tool_step  # noqa: E402
from peak import matmul  # noqa: E402

from dualobj.budget import flops_per_token  # noqa: E402
from dualobj.model import Transformer, document_ids  # noqa: E402
from dualobj.runtime import native_bf16  # noqa: E402
from dualobj.train import Trainer  # noqa: E402

BATCH = {"tiny": 32, "small": 32, "base": 8}  # tiny/small: the default batch; base: a quarter, to keep it short
# (precision, compile); fp32 + compile is skipped for base, where it only costs time.
VARIANTS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def tool_trainer(model: str, alpha: float, precision: str, compile: bool) -> Trainer:
    return bench_trainer([f"model={model}", f"objective.alpha={alpha}", f"train.precision={precision}",
                          f"train.compile={compile}", f"train.batch_size={BATCH[model]}"])


def bare_step(tr: Trainer):
    """model + loss + optimizer only: the same model call (same per-row document mask, made once) on a
    pre-made batch, plain cross-entropy, fused AdamW, compiled like the tool's step when it is;
    no data pipeline, masking, loss weighting, z-loss or clipping."""
    m, cfg = tr.model, tr.cfg
    b = cfg.train.batch_size
    x = torch.from_numpy(tr.stream.get(np.arange(b)))
    doc = document_ids(x[:, :-1], tr.corpus.bos_id)
    causal = torch.arange(b) < b // 2
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)

    def ce(logits, y):
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    ce = torch.compile(ce) if cfg.train.compile else ce

    def step():
        with tr.autocast or torch.autocast("cpu", enabled=False):
            logits = tr.forward_eval(x[:, :-1], causal, doc)
        ce(logits, x[:, 1:]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def interleaved(fns: dict, rounds: int, warmup: int) -> dict:
    """Median seconds per call of each function, timed round-robin (one call of each per round), so a
    slow spell of this shared machine hits every variant alike and their ratios stay fair."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run(models: list[str], steps: int = 6, warmup: int = 3) -> tuple[str, dict]:
    """The table, and {"peaks": {model: {dtype: FLOP/s}}, "runs": {(model, precision, compile):
    {alpha: tok/s, "bare": tok/s, "mfu": ratio}}}. Per model, every variant and the peak matmuls are
    timed in the same rounds."""
    rows, data, peaks = [], {}, {}
    for model in models:
        bf16 = native_bf16(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        variants = [(p, c) for p, c in VARIANTS
                    if not (c and p == "fp32" and model == "base") and (bf16 or p == "fp32")]
        torch._dynamo.reset()  # every model's compiled graphs share one code object and its recompile limit
        fns, trainers, mm_flops = {}, {}, {}
        for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            fns["peak", name], mm_flops[name] = matmul(dtype, 2048 if bf16 or name == "fp32" else 512)
        for precision, compile in variants:
            for alpha in (1.0, 0.0, 0.5):
                trainers[precision, compile, alpha] = tr = tool_trainer(model, alpha, precision, compile)
                fns[precision, compile, alpha] = tool_step(tr)
            fns[precision, compile, "bare"] = bare_step(tr)
        sec = interleaved(fns, steps, warmup)
        peaks[model] = {name: mm_flops[name] / sec["peak", name] for name in ("fp32", "bf16")}
        for precision, compile in variants:
            tr = trainers[precision, compile, 0.5]
            tokens = tr.cfg.train.batch_size * tr.cfg.model.seq_len
            res = {k: tokens / sec[precision, compile, k] for k in (1.0, 0.0, 0.5, "bare")}
            fpt = flops_per_token(tr.cfg.model, Transformer.num_params(tr.model, non_embedding=True))
            achieved = res[0.5] * fpt
            peak = peaks[model][precision]
            res["mfu"] = achieved / peak
            data[model, precision, compile] = res
            vs_fp32 = res[0.5] / data[model, "fp32", False][0.5]
            rows.append([model, precision + (" + compile" if compile else ""), f"{res[1.0]:,.0f}",
                         f"{res[0.0]:,.0f}", f"{res[0.5]:,.0f}", f"{vs_fp32:.2f}x", f"{res[1.0] / res[0.0]:.3f}",
                         f"{res['bare']:,.0f}", f"{res['bare'] / res[0.5] - 1:+.1%}", f"{achieved / 1e9:.0f}",
                         f"{peak / 1e9:.0f}", f"{res['mfu']:.0%}"])
            print(" | ".join(rows[-1]), flush=True)
        del trainers, fns
    table = md_table(["model", "dtype", "AR tok/s", "MD tok/s", "α=0.5 tok/s", "α=0.5 vs fp32 eager",
                      "MD step / AR step", "bare loop tok/s", "tool overhead", "GFLOP/s (α=0.5)", "peak GFLOP/s",
                      "MFU"], rows)
    return table, {"peaks": peaks, "runs": data}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["tiny", "small", "base"])
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    print(run(a.models, a.steps)[0])
