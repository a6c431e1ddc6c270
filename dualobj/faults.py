"""Fault injection for the reliability tests: die with SIGKILL at a named point of a run.

``DUALOBJ_FAULT=point[@step]`` kills the process the first time it reaches ``point`` (at training step
``step``, if given). Points: ``step`` (after a training step), ``checkpoint_write`` (a checkpoint's
files written, not yet renamed into place), ``eval`` (in the middle of the end-of-training evaluation),
``summary_write`` (summary.json written, status not yet done). Unset, it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("DUALOBJ_FAULT", "")


def maybe_die(point: str, step: int | None = None) -> None:
    if not _SPEC:
        return
    name, _, at = _SPEC.partition("@")
    if name == point and (not at or step is None or int(at) == step):
        os.kill(os.getpid(), signal.SIGKILL)
