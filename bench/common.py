"""Shared helpers for the benchmarks: timing, the machine description, markdown tables."""

from __future__ import annotations

import os
import platform
import statistics
import time

import torch


def median_time(fn, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} CPUs, CPU capability {capability()}, {gpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, allocator {os.environ.get('DUALOBJ_MALLOC', 'default')}")


def capability() -> str:
    """The CPU's vector ISA as torch reports it, with what decides bf16's speed: native bf16 dot products
    (AVX512_BF16) and AMX tiles, read from /proc/cpuinfo's flags. E.g. "AVX2" or "AVX512, AVX512-BF16"; a flag
    the CPU has but oneDNN is told not to use (``ONEDNN_MAX_CPU_ISA=AVX2``, docs/avx2.md) is marked "unused"."""
    from dualobj.runtime import cpu_capability, native_bf16

    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    extra = [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX")) if flag in flags]
    if not native_bf16(torch.device("cpu")):
        extra = [f"{name} unused" for name in extra]
    return ", ".join([cpu_capability(), *extra])


def md_table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def bench_trainer(overrides: list[str]):
    """A set-up dualobj Trainer for timing steps: a long budget over repeated data, no progress bar, nothing
    written (its run directory is never created)."""
    from dualobj import config
    from dualobj.train import Trainer

    cfg = config.load(["train.tokens=100000000", "data.repetitions=100", "train.progress=false", *overrides])
    tr = Trainer(cfg, out="/tmp/dualobj-bench-unused")
    tr.setup()
    return tr


def tool_step(tr):
    """dualobj's optimizer step: data, masking, the dual loss, backward, clipping, optimizer."""
    steps = iter(range(10**6))
    return lambda: tr.train_step(next(steps))
