"""Data parallelism through torch.distributed: the process group, and the few collectives a run needs.

A run is distributed when torchrun (or SLURM through submitit) sets WORLD_SIZE > 1. Rank 0 owns the
run directory; every rank reads its own rows of each global batch.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


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
