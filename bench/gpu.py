"""GPU self-check: the paper's model at its context in bf16 with compiled FlexAttention, on one GPU.

    make bench-gpu                              # the gpu tests, then this; writes bench/RESULTS.md
    .venv/bin/python bench/gpu.py --smoke       # CPU, tiny settings: checks the script itself (prints only)

Trains ``model=paper_470m train=paper`` (Muon, bf16, ``train.compile=true``, FlexAttention with the
document block mask: ``model.attention=auto`` on CUDA) at ``model.seq_len=2048`` with 8 sequences per
forward pass (the paper's 8 per GPU) through the tool's own ``Trainer.train_step``, and prints tokens/s,
achieved FLOP/s (6 N + attention per token, head included) and MFU against the card's bf16 dense peak
(from its name) and against a bf16 matmul measured here; the memory high-water mark of training; and
whether validation (``data.val_sequences`` windows) and the evaluation's ``val`` task
(``eval.val_windows``=128 windows of 2048 tokens) and probes fit, with their own high-water marks.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table  # noqa: E402
from peak import matmul  # noqa: E402
from results import write_section  # noqa: E402

from dualobj import config  # noqa: E402
from dualobj.budget import flops_per_token  # noqa: E402
from dualobj.runtime import cpu_capability  # noqa: E402
from dualobj.train import Trainer  # noqa: E402

# Dense bf16 tensor-core peaks (no sparsity) from the vendors' data sheets, FLOP/s; the first name that
# occurs in torch.cuda.get_device_name() wins, so the more specific names come first.
BF16_PEAK = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("GH200", 989e12), ("H100", 989e12), ("H800", 989e12),
             ("H200", 989e12), ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12),
             ("L4", 121e12), ("A10", 125e12), ("RTX 4090", 165e12)]
MFU_TARGET = 0.40  # what the best open training stacks reach on an H100
SECTION = "## GPU self-check (`make bench-gpu`)"
# 30% of the documents for validation, so that the val task has its 128 windows of 2048 tokens.
PAPER = ["model=paper_470m", "train=paper", "data.val_fraction=0.3"]
# CPU smoke: the same code path (train=paper: Muon) at a size that runs in seconds. FlexAttention has no
# CPU backward, so attention stays on the dense path there; compile is off to keep it short.
SMOKE = ["model=tiny", "train=paper", "model.vocab_size=512", "model.d_model=32", "model.n_layers=2",
         "model.n_heads=2", "model.d_ff=64", "train.compile=false", "train.precision=auto",
         "data.val_sequences=4", "eval.val_windows=8", "eval.probe_items=8"]


def spec_peak(name: str) -> float | None:
    return next((p for key, p in BF16_PEAK if key in name), None)


def measured_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Matmul FLOP/s in ``dtype`` (the run's: bf16 where native, else fp32) measured here (a large square
    matmul, median of a few): MFU is against the peak of the dtype the run computed in."""
    n = 8192 if device.type == "cuda" else 1024
    fn, flops = matmul(dtype, n, calls=4)
    return flops / statistics.median(_timed(fn, device) for _ in range(5))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


class HighWater:
    """Peak memory of one phase: CUDA allocator high-water (allocated, reserved) or this process's VmHWM."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.gib = torch.cuda.max_memory_allocated() / 2**30
            self.reserved = torch.cuda.max_memory_reserved() / 2**30
        else:  # the process-wide high-water mark: an upper bound for the phase
            self.gib = self.reserved = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        return False

    def text(self) -> str:
        if self.device.type != "cuda":
            return f"process peak RSS {self.gib:.2f} GiB"
        total = torch.cuda.get_device_properties(self.device).total_memory / 2**30
        return f"{self.gib:.1f} GiB allocated, {self.reserved:.1f} GiB reserved of {total:.0f} GiB"


def trainer(overrides: list[str], out: Path) -> Trainer:
    tr = Trainer(config.load(overrides), out=out)
    tr.setup()
    return tr


def train_steps(tr: Trainer, warmup: int, steps: int) -> tuple[list[float], HighWater]:
    """Seconds per optimizer step after ``warmup`` steps (compilation happens there)."""
    for s in range(warmup):
        tr.train_step(s)
    times = []
    with HighWater(tr.device) as hw:
        for s in range(warmup, warmup + steps):
            times.append(_timed(lambda s=s: tr.train_step(s), tr.device))
    return times, hw


def fits(fn, device: torch.device) -> tuple[str, HighWater, float]:
    """Run a phase; whether it fit in memory, its high-water mark and its seconds."""
    with HighWater(device) as hw:
        t0 = time.perf_counter()
        try:
            fn()
            ok = "fits"
        except torch.OutOfMemoryError as e:
            ok = f"OUT OF MEMORY: {str(e).splitlines()[0][:120]}"
            torch.cuda.empty_cache()
    return ok, hw, time.perf_counter() - t0


def evaluate(tr: Trainer, out: Path) -> dict:
    """The end-of-training evaluation's code path on the trained model: the val task and the probes."""
    from dualobj.evaluate.evaluator import Evaluator

    ev = Evaluator(out, tr.cfg.eval, tr.cfg, model=tr.model, corpus=tr.corpus, step=1)
    try:
        return ev.run(skip_missing=True, say=lambda *_: None, overwrite=True)["headline"]
    finally:
        tr.model.train()


def run(a: argparse.Namespace) -> tuple[str, dict]:
    mb, t = a.micro_batch, a.seq_len
    steps_total = a.warmup + a.steps
    common = [f"model.seq_len={t}", f"train.batch_size={mb}", f"train.micro_batch_size={mb}",
              f"train.tokens={steps_total * mb * t}", "data.repetitions=4", "train.progress=false",
              "eval.tasks=[val,probe_mc,probe_cloze]", "eval.modes=[ar,md,prefix]", f"eval.limit={a.eval_limit}"]
    base = SMOKE if a.smoke else PAPER
    out = Path(tempfile.mkdtemp(prefix="dualobj-bench-gpu-"))
    tr = trainer([*base, *common, *a.override], out)
    dev, m = tr.device, tr.cfg.model
    times, train_hw = train_steps(tr, a.warmup, a.steps)
    step_s = statistics.median(times)
    tps = mb * t / step_s
    achieved = tps * flops_per_token(m, tr.model.num_params(non_embedding=True))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    with tr.autocast or contextlib.nullcontext():  # the attention path the training steps took
        attention = tr.model._backend(torch.zeros(1, 1, dtype=torch.long, device=dev))
    dtype = "bf16" if tr.bf16 else "fp32"
    spec = spec_peak(name) if dev.type == "cuda" and tr.bf16 else None  # the card table holds bf16 peaks
    meas = measured_peak(dev, torch.bfloat16 if tr.bf16 else torch.float32)
    val_ok, val_hw, val_s = fits(tr.validate, dev)
    eval_ok, eval_hw, eval_s = fits(lambda: evaluate(tr, out), dev)
    mfu = achieved / spec if spec else None
    info = {"tokens_per_s": tps, "mfu_spec": mfu, "mfu_measured": achieved / meas, "device": name, "dtype": dtype,
            "val": val_ok, "eval": eval_ok, "train_gib": train_hw.gib}
    rows = [
        ["device", name if dev.type == "cuda" else f"CPU (capability {cpu_capability()})"],
        ["run", f"{m.name}, {tr.model.num_params():,} parameters, seq_len {t}, {mb} sequences per step, "
                f"{'bf16' if tr.bf16 else 'fp32'}, compile={tr.cfg.train.compile}, "
                f"attention {attention}, "
                f"optimizer {tr.cfg.train.optimizer}"],
        ["step time (median of steps after warm-up)", f"{step_s * 1e3:,.1f} ms ({a.steps} steps after {a.warmup})"],
        ["training tokens/s", f"{tps:,.0f}"],
        ["achieved FLOP/s (6 N + attention)", f"{achieved / 1e12:,.2f} TFLOP/s"],
        ["MFU vs the card's bf16 dense peak",
         f"{mfu:.1%} of {spec / 1e12:,.0f} TFLOP/s" if spec else "n/a (not a bf16 run on a card in the table)"],
        [f"MFU vs a {dtype} matmul measured here", f"{achieved / meas:.1%} of {meas / 1e12:,.2f} TFLOP/s"],
        ["memory high-water, training", train_hw.text()],
        [f"validation ({len(tr.val)} windows)", f"{val_ok}; {val_hw.text()}; {val_s:.1f} s"],
        ["evaluation (val task, probes; ar, md, prefix)", f"{eval_ok}; {eval_hw.text()}; {eval_s:.1f} s"],
    ]
    if mfu is not None:
        rows.append([f"target: at least {MFU_TARGET:.0%} MFU", "met" if mfu >= MFU_TARGET else "missed"])
    return md_table(["quantity", "measured"], rows), info


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny settings: check the script (prints only)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=8, help="sequences per step (one forward pass)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--eval-limit", type=int, default=64, help="items per probe in the evaluation")
    ap.add_argument("--override", action="append", default=[], help="extra config override")
    ap.add_argument("--out", type=Path, help="RESULTS.md to write into (default: bench/RESULTS.md, not with --smoke)")
    a = ap.parse_args(argv)
    if a.smoke:
        a.seq_len, a.micro_batch, a.warmup, a.steps, a.eval_limit = 64, 4, 1, 2, 8
    elif not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False); "
                         "use --smoke to check the script on CPU")
    table, info = run(a)
    print(table)
    out = a.out or (None if a.smoke else Path(__file__).parent / "RESULTS.md")
    if out:
        head = f"{SECTION}\n\n{time.strftime('%Y-%m-%d')}, torch {torch.__version__}."
        write_section(out, "bench/gpu.py", f"{head}\n\n{table}")
        print(f"wrote the GPU section of {out}")
    return info


if __name__ == "__main__":
    main()
