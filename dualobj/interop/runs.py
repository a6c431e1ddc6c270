"""What lm-eval and the Hugging Face export accept: a finished run and one of the scorer's modes."""

from __future__ import annotations

from pathlib import Path

from dualobj.errors import ConfigError, RunDirError
from dualobj.evaluate.scoring import MODES
from dualobj.run import run_info


def check_mode(mode: str) -> str:
    """``mode`` itself, or a one-line ConfigError naming the modes there are."""
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r} is not one of {', '.join(MODES)}; pick one of them")
    return mode


def done_run(run_dir: str | Path) -> Path:
    """The run directory of a finished run, or a one-line RunDirError saying what it is and what to do."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist; give one written by `dualobj train`")
    info = run_info(path)
    if not info.config:
        raise RunDirError(f"{path} has no readable config.yaml: not a run directory; "
                          "give one written by `dualobj train`")
    if info.state != "done":
        why = f" ({info.reason})" if info.reason else ""
        raise RunDirError(f"run {path} is {info.state}{why}, not done; finish it first (re-run its "
                          f"`dualobj train ... out={path}`)")
    return path


def require_extra(module: str, extra: str, what: str) -> None:
    """A one-line ConfigError when an optional dependency is missing, naming the extra that installs it."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} is not installed; install it with pip install 'dualobj[{extra}]'")
