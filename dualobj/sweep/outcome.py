"""How a sweep's cells ended, typed: one :class:`CellOutcome` per launched cell, a sweep's
:class:`SweepResult`, and the exit code a sweep (grid or adaptive search) returns for them
(:func:`exit_code`), decided here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Outcome(str, Enum):
    """How one cell's launch ended."""

    DONE = "done"  # trained (or found done) and evaluated
    FAILED = "failed"  # an error, recorded in the run's status.json; a re-run retries it
    GAVE_UP = "gave up"  # failed as often as the sweep's retries allow; not tried again
    INTERRUPTED = "interrupted"  # stopped by a signal after a checkpoint; a re-run resumes it
    SKIPPED = "running elsewhere"  # another process holds the run's lock


@dataclass
class CellOutcome:
    """One launched cell: its run id, how it ended and, unless done, why."""

    run_id: str
    outcome: Outcome
    error: str | None = None

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "outcome": self.outcome.value, "error": self.error}

    @classmethod
    def from_json(cls, d: dict) -> CellOutcome:
        return cls(str(d.get("run_id", "")), Outcome(d["outcome"]), d.get("error"))


def exit_code(outcomes: list[CellOutcome] | None, left: int) -> int:
    """0 when no cell is left to do; 130 when the sweep was stopped (``outcomes`` None) or a cell was
    interrupted; else 1 (cells failed or are held elsewhere: a re-run continues)."""
    if outcomes is None or any(o.outcome is Outcome.INTERRUPTED for o in outcomes):
        return 130
    return 1 if left else 0


def stuck(outcomes: list[CellOutcome]) -> list[CellOutcome]:
    """The cells a search cannot go on without: not done and not given up on."""
    return [o for o in outcomes if o.outcome not in (Outcome.DONE, Outcome.GAVE_UP)]


@dataclass
class SweepResult:
    """What a sweep did: the launched cells' outcomes (None when it was stopped) and the cells left."""

    outcomes: list[CellOutcome] | None = field(default_factory=list)
    left: int = 0  # planned cells not done
    est_s: float = 0.0  # a search's dry run: the longest its whole budget can take (seconds)

    @property
    def exit_code(self) -> int:
        return exit_code(self.outcomes, self.left)
