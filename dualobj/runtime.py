"""Where a run executes: the device, the precision (bf16 autocast or fp32) and data parallelism.

A run is distributed when torchrun (or SLURM through submitit) sets WORLD_SIZE > 1. Rank 0 owns the
run directory; every rank reads its own rows of each global batch.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta

import torch
import torch.distributed as dist


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_capability() -> str:
    """torch's name for this CPU's vector ISA (AVX2, AVX512, ...): what decides which kernels run."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return "unknown"


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively on ``device``: CUDA cards that support bf16, CPUs with
    AVX512-BF16 or AMX (oneDNN's kernels). Elsewhere bf16 is emulated, about 100x slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``train.precision`` (auto | bf16 | fp32) means bf16 autocast on ``device``: auto is bf16
    where it is native, fp32 elsewhere; bf16 and fp32 are kept as asked."""
    if precision == "auto":
        return native_bf16(device)
    return precision == "bf16"


def precision_note(precision: str, device: torch.device) -> str | None:
    """One line for the user when the precision is not what a GPU user would expect, else None:
    ``auto`` falling back to fp32, or ``bf16`` asked for where it is emulated (with the measured slowdown)."""
    if native_bf16(device):
        return None
    where = f"this {device.type} has no native bf16 (torch {torch.__version__}, CPU capability {cpu_capability()})"
    if precision == "auto":
        return f"precision: fp32, since {where}; bf16 would be emulated"
    if precision == "bf16":
        fp32, bf16 = matmul_gflops(torch.float32, device), matmul_gflops(torch.bfloat16, device)
        return (f"warning: train.precision=bf16 kept, but {where}: a bf16 matmul runs {fp32 / bf16:,.0f}x slower "
                f"than fp32 here ({bf16:,.1f} vs {fp32:,.1f} GFLOP/s measured); train.precision=auto picks fp32")
    return None


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int = 256, calls: int = 3) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` (best of ``calls``; a rough, quick probe, not a benchmark)."""
    import time

    a = torch.randn(n, n, device=device).to(dtype)
    a @ a  # warm-up
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        a @ a
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / max(best, 1e-9) / 1e9


def isolate_compile_cache() -> str:
    """Give torch.compile's cache a folder of this CPU capability's own (``<dir>/cpu-AVX2`` etc., under
    ``TORCHINDUCTOR_CACHE_DIR`` or torch's default) and return it. torch 2.13 keys its cached CPU code
    without the vector ISA: code made under ``ATEN_CPU_CAPABILITY=avx2`` (``make test-avx2``), or on another
    host sharing the folder, is reused and compiled for this CPU's wider vectors, and then writes past its
    buffers (NaN losses, aborts; bench/compile_cache_repro.py). Idempotent; child processes inherit it
    through the environment."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    base = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir()
    leaf = f"cpu-{cpu_capability()}"
    if os.path.basename(os.path.normpath(base)) != leaf:
        base = os.path.join(base, leaf)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = base
    return base


def where(device: torch.device) -> str:
    """The torch version, device and (on CPU) vector ISA: what a kernel's numbers depend on."""
    return f"torch {torch.__version__}, {device.type}" + (f", CPU capability {cpu_capability()}"
                                                           if device.type == "cpu" else "")


@torch.no_grad()
def _nonzero_weights(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Give every all-zero weight matrix (zero-initialised output projections, which hide whatever feeds
    them) random values of its fan-in's scale; returns (parameter, saved copy) pairs to restore."""
    g = torch.Generator().manual_seed(0)
    saved = []
    for p in model.parameters():
        if p.dim() == 2 and not p.any():
            saved.append((p, p.detach().clone()))
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    return saved


def compile_problem(model: torch.nn.Module, compiled, args: tuple, autocast_ctx=None) -> str | None:
    """None if ``compiled`` (``torch.compile(model)``) gives the eager model's logits on ``args``, else what
    is wrong, in a few words. Run with grad enabled at the training batch's shape, so it compiles exactly
    the graph training will use (no extra compile); zero weights are given values for the probe, so that
    attention reaches the logits, and restored bit for bit. Tolerance: 1e-3 of the logits' scale in fp32,
    3e-2 under bf16 autocast (fusion rounds bf16 differently). Backward and validation graphs are not probed."""
    saved = _nonzero_weights(model)
    try:
        with autocast_ctx or contextlib.nullcontext():
            with torch.no_grad():  # the same numbers, without holding a second set of activations
                eager = model(*args).float()
            comp = compiled(*args).detach().float()
    finally:
        with torch.no_grad():
            for p, v in saved:
                p.copy_(v)
    if not torch.isfinite(comp).all() and torch.isfinite(eager).all():
        bad = int((~torch.isfinite(comp)).sum())
        return f"gives non-finite logits ({bad:,} of {comp.numel():,}) where eager's are finite"
    rel = float((comp - eager).abs().max()) / max(float(eager.abs().max()), 1e-6)
    tol = 3e-2 if autocast_ctx is not None else 1e-3
    return None if rel <= tol else f"differs from eager by up to {rel:.2g} of the logits' scale (allowed {tol:g})"


def autocast(bf16: bool, device: torch.device):
    """A fresh bf16 autocast context for ``device``, or a no-op one (use it in a ``with``)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


class Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        self.started = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return torch.device("cpu")

    def start(self) -> None:
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(self.device())
            dist.init_process_group(backend, timeout=timedelta(minutes=30))
            self.started = True

    def barrier(self) -> None:
        """Wait for every rank (no-op on one process): ranks leave a finished run together, so none tears
        the process group down while another still talks to it."""
        if self.enabled and dist.is_initialized():
            dist.barrier()

    def stop(self) -> None:
        if self.started and dist.is_initialized():
            dist.destroy_process_group()
            self.started = False

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum over ranks (identity on one process)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def agree(self, ok: bool, device: torch.device) -> bool:
        """True only if every rank says ok (used so that no rank waits forever on one that gave up)."""
        return self.sum([0.0 if ok else 1.0], device)[0] == 0.0
