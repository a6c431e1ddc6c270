"""User-facing errors: each carries one line that names the problem and the fix.

The CLI prints these without a traceback (``--debug`` shows it); anything else is a bug.
"""


class DualObjError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""


class ConfigError(DualObjError):
    """A config value or override is invalid."""


class DataError(DualObjError):
    """A corpus, tokenizer or data cache cannot be used."""


class RunDirError(DualObjError):
    """A run directory is unusable (not writable, damaged, from another version)."""


class EvalStopped(DualObjError):
    """A stop was requested (SIGTERM, Ctrl-C) during an evaluation; raised between tasks or between batches.
    The tasks finished before it are on disk; ``done`` names them."""

    def __init__(self, done: list[str] | None = None):
        self.done = list(done or [])
        super().__init__(f"evaluation stopped after {len(self.done)} task(s)")
