"""Shared fixtures: one token cache per test session, and micro-model overrides."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench_module(name: str):
    """A script of bench/ imported as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# How long a test waits for a subprocess or a file before calling it hung: a guard against hangs only,
# never a speed requirement (on a 2-core machine under other load, a micro sweep can take 10 minutes).
HANG_S = 1800


def kill_group_when(proc, ready, what: str):
    """SIGKILL ``proc``'s process group (started with ``start_new_session=True``) at a moment ``ready()``
    is true, and return what it returned. The group is frozen (SIGSTOP) before the check that decides, so
    nothing can change in between however loaded the machine is: the test waits on files, not on time."""
    deadline = time.time() + HANG_S
    while True:
        assert proc.poll() is None and time.time() < deadline, f"{what} ended before it could be killed"
        if ready():
            os.killpg(proc.pid, signal.SIGSTOP)
            if got := ready():
                break
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, no clean-up
    proc.wait()
    return got

def group_alive(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    alive = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            state, _, pgrp = (d / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            alive.append(int(d.name))
    return alive


# A micro model that trains in about a second on CPU; every e2e test builds on it.
MICRO = [
    "model.vocab_size=512", "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.d_ff=64",
    "model.seq_len=32", "train.batch_size=8", "train.progress=false", "train.threads=1", "eval.at_end=false",
]


def pytest_configure(config):
    """Tests that call torch.compile themselves get the trainer's per-capability compile cache too, so a
    `make test-avx2` and a `make test` on one host never run each other's compiled code."""
    from dualobj.runtime import isolate_compile_cache

    isolate_compile_cache()


def pytest_collection_modifyitems(config, items):
    """The slow tests start first (the test marked ``longest`` before them), so that under pytest-xdist
    the long ones overlap the many short ones instead of running alone at the end; and tests marked
    ``gpu`` need CUDA: skip them, saying so, where there is none."""
    import torch

    def rank(item) -> int:
        return 0 if item.get_closest_marker("longest") else 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)  # stable: the collection order within each rank
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False); `make bench-gpu` on one")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """Tokenize the default corpus once per session (a sweep does the same: one cache for all R)."""
    return tmp_path_factory.mktemp("token_cache")


@pytest.fixture
def micro(cache_dir):
    """Overrides for a micro run on the default corpus with the session's token cache."""
    return [*MICRO, f"data.cache_dir={cache_dir}"]
