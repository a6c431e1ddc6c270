"""Fault injection and handshakes for the reliability tests.

``DUALOBJ_FAULT=point[@step]`` kills the process the first time it reaches ``point`` (at training step
``step``, if given). Points: ``step`` (after a training step), ``checkpoint_write`` (a checkpoint's
files written, not yet renamed into place), ``eval`` (in the middle of the end-of-training evaluation),
``summary_write`` (summary.json written, status not yet done). Unset, it costs one dict lookup.

``DUALOBJ_HOLD=point[@step]`` with ``DUALOBJ_HOLD_DIR=DIR`` makes a run pause at ``point`` (``step``:
before training step ``step``) until a test lets it go: the run writes ``DIR/<run id>.<point>.held``, then
waits until ``DIR/release`` exists or it is asked to stop. A test that signals held runs knows where
each one is, however slow or busy the machine: it waits on files, never on the clock. With
``DUALOBJ_HOLD_DEAF=1`` the pause ignores stop requests too: a run that will not stop, for the sweep's grace.
Points: ``step`` (before training step ``step``), ``eval`` (before evaluation task ``step``, counted from 0).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

_SPEC = os.environ.get("DUALOBJ_FAULT", "")
_HOLD = os.environ.get("DUALOBJ_HOLD", "")
_HOLD_DIR = os.environ.get("DUALOBJ_HOLD_DIR", "")
_DEAF = os.environ.get("DUALOBJ_HOLD_DEAF", "") == "1"


def maybe_die(point: str, step: int | None = None) -> None:
    if not _SPEC:
        return
    name, _, at = _SPEC.partition("@")
    if name == point and (not at or step is None or int(at) == step):
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_hold(point: str, name: str, step: int | None = None, stopping: Callable[[], bool] = lambda: False) -> None:
    """Pause at ``point`` (see the module doc) until ``DIR/release`` exists or ``stopping()`` is true."""
    if not _HOLD:
        return
    want, _, at = _HOLD.partition("@")
    if want != point or (at and step is not None and int(at) != step):
        return
    folder = Path(_HOLD_DIR or ".")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.{point}.held").write_text(str(os.getpid()))
    while not (folder / "release").exists() and (_DEAF or not stopping()):
        time.sleep(0.02)  # a signal handler runs here and sets what stopping() reads
