"""Zero-shot tasks: how the scorer's answers to a task's requests become accuracies, and the recipe.

A task yields ``Item``s; each item is a list of ``Request``s (log p(continuation | context) queries) and the
index of the correct one. The scorer answers every request with a ``Score``; ``Task.score`` turns those into
accuracies (the three types live in ``dualobj.evaluate.types``). Four kinds:

- ``pairs`` (BLiMP): ``[Request("", good), Request("", bad)]``; correct when good's total log-likelihood is
  strictly higher. Reported overall, per ``field`` and per paradigm (``UID``).
- ``choice`` (PIQA, ARC, COPA, OpenBookQA, probe_mc): ``Request(query, " " + choice)`` per choice; ``acc`` is
  the argmax of the summed log-likelihood, ``acc_norm`` the argmax of log-likelihood per UTF-8 byte of the
  choice text (without the joining space). Ties go to the lowest index (``numpy.argmax``).
- ``cloze`` (LAMBADA, probe_cloze): one ``Request(context, " " + continuation)``; correct when every
  continuation token is the model's argmax (``Score.greedy``). Also the mean log-likelihood and the per-token
  perplexity of the continuation.
- ``partial`` (WinoGrande, WSC): ``Request(option, " " + continuation)`` per context option; the option under
  which the shared continuation is most likely wins.

Scores are chance-normalised: ``score = 100 * (acc - chance) / (1 - chance)`` (0 = chance, 100 = perfect,
negative = below chance).

Reading the benchmark files is ``dualobj.evaluate.benchmarks``; the built-in probes are
``dualobj.evaluate.probes``; which task names exist and how to build one is ``dualobj.evaluate.registry``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dualobj.errors import DataError
from dualobj.evaluate.types import Item, Request, Score


def chance_normalise(acc: float, chance: float) -> float:
    """100 * (acc - chance) / (1 - chance): 0 at chance, 100 when perfect, negative below chance."""
    if not 0.0 <= chance < 1.0:
        raise ValueError(f"chance={chance} must be in [0, 1)")
    return 100.0 * (acc - chance) / (1.0 - chance)


def with_standard_errors(res: dict[str, Any]) -> dict[str, Any]:
    """Add ``acc_se`` (and ``acc_norm_se``) = sqrt(acc (1 - acc) / n), and ``score_se`` (``score_norm_se``)
    in the chance-normalised units: 100 acc_se / (1 - chance). Binomial: items are independent draws."""
    n, chance = res["n"], res["chance"]
    for acc, score in (("acc", "score"), ("acc_norm", "score_norm")):
        if acc in res:
            se = math.sqrt(res[acc] * (1 - res[acc]) / n) if n else float("nan")
            res[f"{acc}_se"], res[f"{score}_se"] = se, 100.0 * se / (1.0 - chance)
    return res


def choice_bytes(request: Request) -> int:
    """UTF-8 byte length of a choice's text (the continuation without the joining space), at least 1."""
    return max(1, len(request.continuation.lstrip().encode("utf-8")))


def _check_scores(items: list[Item], scores: list[list[Score]]) -> None:
    if not items:
        raise ValueError("no items to score")
    if len(scores) != len(items):
        raise ValueError(f"{len(scores)} score lists for {len(items)} items")
    for i, (item, s) in enumerate(zip(items, scores, strict=True)):
        if len(s) != len(item.requests):
            raise ValueError(f"item {i}: {len(s)} scores for {len(item.requests)} requests")


def _seeded_subset(n: int, limit: int | None, rng: np.random.Generator) -> list[int]:
    """Indices of `limit` of n items, without replacement, in their original order (all when limit >= n)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(int(i) for i in rng.choice(n, size=limit, replace=False))


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} must be a positive number of items, or None for all of them")


class Task:
    """A zero-shot task: its items, how to score the scorer's answers, and the recipe that defines it."""

    name: str
    kind: str  # "pairs" | "choice" | "cloze" | "partial"
    prompt: str = ""  # how requests are built (for the recipe)
    scoring: str = ""  # how the answers become accuracies (for the recipe)
    exact_match = False  # its accuracy needs Score.greedy (in MD mode, one more forward pass per request)

    def __init__(self, name: str, all_items: list[Item], source: dict[str, Any], chance: float | None = None):
        if not all_items:
            raise DataError(f"task {name} has no items ({source.get('source')}); give a non-empty benchmark file")
        self.name = name
        self._items = all_items
        self.source = source  # where the items came from (file + sha256, or corpus settings)
        self.fixed_chance = chance  # a declared chance level; None = from the items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def chance(self) -> float:
        return self.chance_of(self._items)

    def chance_of(self, items: list[Item]) -> float:
        """The accuracy of guessing on ``items`` (the declared chance level when there is one)."""
        return self._chance(items) if self.fixed_chance is None else float(self.fixed_chance)

    def _chance(self, items: list[Item]) -> float:
        return float(np.mean([1.0 / len(it.requests) for it in items]))

    def items(self, limit: int | None = None, seed: int = 0) -> list[Item]:
        """All items, or a seeded subsample of `limit` of them without replacement, kept in file order."""
        _check_limit(limit)
        idx = _seeded_subset(len(self._items), limit, np.random.default_rng(seed))
        return [self._items[i] for i in idx]

    def score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        """Accuracy (and the task's other numbers) of the scorer's answers, each accuracy with its binomial
        standard error ``<name>_se`` = sqrt(acc (1 - acc) / n) and the chance-normalised score's."""
        _check_scores(items, scores)
        return with_standard_errors(self._score(items, scores))

    def _score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        raise NotImplementedError

    def recipe(self) -> dict[str, Any]:
        """Everything that defines the numbers: prompt format, scoring, normalisation, chance, source."""
        return {
            "task": self.name,
            "kind": self.kind,
            "n_items": len(self._items),
            "prompt": self.prompt,
            "scoring": self.scoring,
            "normalisation": "score = 100 * (acc - chance) / (1 - chance): 0 = chance, 100 = perfect",
            "chance": self.chance,
            "limit": "a seeded subsample (numpy default_rng(seed)) without replacement, kept in file order",
            **self.source,
        }


class PairsTask(Task):
    """Minimal pairs (BLiMP): the good sentence must be more likely than the bad one."""

    kind = "pairs"
    prompt = 'Request("", sentence_good) and Request("", sentence_bad): whole sentences after the document-start token'
    scoring = ("correct when logprob(good) > logprob(bad) (strictly; summed nats); acc overall, per field "
               "and per paradigm (UID); score = chance-normalised acc")

    def _chance(self, items: list[Item]) -> float:
        return 0.5

    def items(self, limit: int | None = None, seed: int = 0) -> list[Item]:
        """Stratified over paradigms: limit // P items each (at least 1), the remainder to seeded paradigms.

        With limit below the number of paradigms P every paradigm still gets one item (P items in all).
        """
        _check_limit(limit)
        if limit is None or limit >= len(self._items):
            return list(self._items)
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(self._items):
            groups.setdefault(it.meta.get("uid", ""), []).append(i)
        names = list(groups)
        rng = np.random.default_rng(seed)
        total = max(limit, len(names))
        quota = dict.fromkeys(names, total // len(names))
        for j in rng.choice(len(names), size=total % len(names), replace=False):
            quota[names[int(j)]] += 1
        chosen: list[int] = []
        for name in names:
            idx = groups[name]
            chosen += [idx[k] for k in _seeded_subset(len(idx), quota[name], rng)]
        return [self._items[i] for i in sorted(chosen)]

    def recipe(self) -> dict[str, Any]:
        return {**super().recipe(), "limit": "stratified: about limit/P items per paradigm (at least 1), "
                "seeded (numpy default_rng(seed)), kept in file order"}

    def _score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        right = [s[it.gold].logprob > s[1 - it.gold].logprob for it, s in zip(items, scores, strict=True)]
        by_field: dict[str, list[bool]] = {}
        by_uid: dict[str, list[bool]] = {}
        for it, ok in zip(items, right, strict=True):
            by_field.setdefault(str(it.meta.get("field", "unknown")), []).append(ok)
            by_uid.setdefault(str(it.meta.get("uid", "unknown")), []).append(ok)
        acc = float(np.mean(right))
        return {
            "acc": acc,
            "score": chance_normalise(acc, self.chance_of(items)),
            "n": len(items),
            "chance": self.chance_of(items),
            "per_field": {k: float(np.mean(v)) for k, v in sorted(by_field.items())},
            "per_paradigm": {k: float(np.mean(v)) for k, v in sorted(by_uid.items())},
            "n_per_field": {k: len(v) for k, v in sorted(by_field.items())},
        }


class ChoiceTask(Task):
    """Multiple choice: the gold continuation must be the most likely one."""

    kind = "choice"
    prompt = 'Request(query, " " + choice) per choice (query right-stripped, choice stripped)'
    scoring = ("acc = argmax of summed logprob (nats) over choices; acc_norm = argmax of logprob / UTF-8 bytes "
               "of the choice text; ties -> lowest index. score = chance-normalised acc, score_norm = "
               "chance-normalised acc_norm; chance = mean over items of 1/len(choices)")

    def _score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        right, right_norm = [], []
        for it, s in zip(items, scores, strict=True):
            lp = np.array([x.logprob for x in s], dtype=float)
            nb = np.array([choice_bytes(r) for r in it.requests], dtype=float)
            right.append(int(np.argmax(lp)) == it.gold)
            right_norm.append(int(np.argmax(lp / nb)) == it.gold)
        acc, acc_norm, chance = float(np.mean(right)), float(np.mean(right_norm)), self.chance_of(items)
        return {
            "acc": acc,
            "acc_norm": acc_norm,
            "score": chance_normalise(acc, chance),
            "score_norm": chance_normalise(acc_norm, chance),
            "n": len(items),
            "chance": chance,
        }


class ClozeTask(Task):
    """Cloze: the continuation must be the model's greedy (argmax) prediction, token by token."""

    kind = "cloze"
    exact_match = True
    prompt = 'Request(context, " " + continuation): context right-stripped, continuation stripped'
    scoring = ("acc = fraction of items whose every continuation token is the argmax (greedy exact match); "
               "logprob = mean summed logprob per item (nats); ppl = exp(-sum logprob / sum tokens); "
               "chance 0, so score = 100 * acc")

    def _chance(self, items: list[Item]) -> float:
        return 0.0

    def _score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        first = [s[it.gold] for it, s in zip(items, scores, strict=True)]
        acc = float(np.mean([x.greedy for x in first]))
        total_lp = float(sum(x.logprob for x in first))
        total_tok = int(sum(x.n_tokens for x in first))
        return {
            "acc": acc,
            "score": chance_normalise(acc, self.chance_of(items)),
            "n": len(items),
            "chance": self.chance_of(items),
            "logprob": total_lp / len(items),
            "ppl": math.exp(-total_lp / total_tok) if total_tok else float("nan"),
            "n_tokens": total_tok,
        }


class PartialTask(Task):
    """Partial scoring: the shared continuation must be most likely under the gold context option."""

    kind = "partial"
    prompt = 'Request(option, " " + continuation) per context option (option right-stripped, continuation stripped)'
    scoring = ("acc = argmax over options of the continuation's summed logprob (nats), ties -> lowest "
               "index; score = chance-normalised acc; chance = mean over items of 1/len(options)")

    def _score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        right = [int(np.argmax([x.logprob for x in s])) == it.gold for it, s in zip(items, scores, strict=True)]
        acc, chance = float(np.mean(right)), self.chance_of(items)
        return {"acc": acc, "score": chance_normalise(acc, chance), "n": len(items), "chance": chance}


KINDS: dict[str, type[Task]] = {c.kind: c for c in (ChoiceTask, ClozeTask, PairsTask, PartialTask)}  # by `kind:`
