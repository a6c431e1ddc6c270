"""Peak matmul FLOP/s of this machine per dtype (the denominator of MFU), measured in the same run."""

from __future__ import annotations

import torch
from common import median_time


def matmul(dtype: torch.dtype, n: int = 2048, calls: int = 3):
    """A function doing ``calls`` n x n matmuls, and the FLOPs it does."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)

    def mm():
        for _ in range(calls):
            a @ b
        if dev == "cuda":
            torch.cuda.synchronize()

    return mm, 2 * n**3 * calls


def matmul_peak(dtype: torch.dtype, n: int = 2048, steps: int = 7) -> float:
    fn, flops = matmul(dtype, n, calls=1)
    return flops / median_time(fn, steps, warmup=3)


if __name__ == "__main__":
    for dt in (torch.float32, torch.bfloat16):
        print(dt, f"{matmul_peak(dt) / 1e9:.0f} GFLOP/s")
