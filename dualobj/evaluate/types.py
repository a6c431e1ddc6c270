"""The data that flows through evaluation: a task's ``Item``s of ``Request``s, and the scorer's ``Score``s.

A task yields ``Item``s; each item is a list of ``Request``s (log p(continuation | context) queries) and the
index of the correct one. The scorer (``dualobj.evaluate.scoring``) answers every request with a ``Score``;
the task (``dualobj.evaluate.tasks``) turns those into accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """One likelihood query: log p(continuation | context)."""

    context: str  # may be "" (the scorer always prepends the document-start token)
    continuation: str  # the scored part; for multiple choice this is " " + choice


@dataclass
class Item:
    """One benchmark question: its requests and which one is correct."""

    requests: list[Request]  # e.g. one per choice; BLiMP: [good, bad]
    gold: int  # index of the correct request (cloze: 0, a single request)
    meta: dict = field(default_factory=dict)  # e.g. {"field": ..., "uid": ...} for per-group accuracy


@dataclass
class Score:
    """The scorer's answer to one Request."""

    logprob: float  # summed log-likelihood of the continuation tokens (nats); MD: its estimate (see scoring)
    n_tokens: int  # number of continuation tokens
    greedy: bool | None  # every continuation token is the model's argmax (None: not asked for, MD mode)
    se: float = 0.0  # standard error of an MC estimate (0 for exact modes and PLL)
    draws: tuple[float, ...] = ()  # MD mc: the K per-draw estimates whose mean is logprob (() otherwise)
