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

Two standard errors (see ``with_standard_errors`` and ``with_mc_standard_errors``): ``acc_se`` over the items
(binomial), and, in MD mode with the ``mc`` estimator, ``acc_mc_se`` over the mask draws with the items fixed.

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


ACCURACIES = (("acc", "score"), ("acc_norm", "score_norm"))  # each accuracy and its chance-normalised score


def with_standard_errors(res: dict[str, Any]) -> dict[str, Any]:
    """Add ``acc_se`` (and ``acc_norm_se``) = sqrt(acc (1 - acc) / n), and ``score_se`` (``score_norm_se``)
    in the chance-normalised units: 100 acc_se / (1 - chance).

    Binomial: the standard error of the accuracy over the population of items the n were drawn from, each
    item's outcome a Bernoulli draw. In MD mode that outcome is also random through the mask draws, and for
    independent items the binomial variance already contains that noise (law of total variance:
    Var(acc) = E[Var(acc | items)] + Var(E[acc | items]); the first term is ``acc_mc_se`` squared).
    """
    n, chance = res["n"], res["chance"]
    for acc, score in ACCURACIES:
        if acc in res:
            se = math.sqrt(res[acc] * (1 - res[acc]) / n) if n else float("nan")
            res[f"{acc}_se"], res[f"{score}_se"] = se, 100.0 * se / (1.0 - chance)
    return res


def with_mc_standard_errors(res: dict[str, Any], p_correct: dict[str, list[float]]) -> dict[str, Any]:
    """Add ``acc_mc_se`` (and ``acc_norm_mc_se``) = sqrt(sum_i p_i (1 - p_i)) / n and ``score_mc_se``
    (``score_norm_mc_se``) = 100 acc_mc_se / (1 - chance), from ``p_correct[acc]``: per item, the
    probability p_i that another draw of the MD masks would score it correct (see ``p_correct``).

    It estimates the standard deviation of the accuracy over evaluation seeds (``eval.md_samples`` mask
    draws each) with the items fixed: the Monte-Carlo noise of the estimator alone. ``acc_se`` (binomial)
    already includes it for independent items; sqrt(acc_se^2 - acc_mc_se^2) is the part due to which items
    were drawn, the error that would remain with infinitely many masks. Compare two evaluations of the
    same items (two seeds, K against K') with ``acc_mc_se``; a model's accuracy on the task with ``acc_se``.
    """
    n, chance = res["n"], res["chance"]
    for acc, score in ACCURACIES:
        if acc in p_correct:
            p = np.asarray(p_correct[acc], dtype=float)
            se = math.sqrt(float(np.sum(p * (1 - p)))) / n if n else float("nan")
            res[f"{acc}_mc_se"], res[f"{score}_mc_se"] = se, 100.0 * se / (1.0 - chance)
    return res


def p_correct(draws: list[tuple[float, ...]], gold: int, correct: bool, scale: list[float] | None = None) -> float:
    """The probability that another draw of the MD masks would decide an item the way that makes it correct.

    ``draws[j]``: choice j's K per-draw estimates (``Score.draws``), divided by ``scale[j]`` when given (the
    bytes, for acc_norm). The rival is the other choice with the highest mean; d_s = gold_s - rival_s over
    the draws s (paired: with common random numbers draw s of every choice of an item shares its masks, and
    without them the pairs are independent, so their spread is right either way). P = Phi(mean(d) / se(d)),
    se(d) = std(d) / sqrt(K): the normal approximation to another mean of K draws keeping its sign. When d
    does not vary (e.g. one-token continuations, scored exactly) P is 1 or 0 as ``correct`` (the item's
    decision) says; with one draw it is nan. With several close rivals it overstates P (only the strongest
    is counted).
    """
    v = np.asarray(draws, dtype=float) / (np.asarray(scale, dtype=float)[:, None] if scale is not None else 1.0)
    if v.shape[1] < 2:
        return float("nan")
    others = [j for j in range(len(v)) if j != gold]
    if not others:
        return float(correct)
    rival = others[int(np.argmax(v[others].mean(axis=1)))]
    d = v[gold] - v[rival]
    se = float(d.std(ddof=1)) / math.sqrt(len(d))
    if not se > 1e-12 * max(1.0, float(np.abs(d).max())):
        return float(correct)
    return 0.5 * math.erfc(-float(d.mean()) / se / math.sqrt(2))  # Phi(mean / se)


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


SUBSETS = ("random", "first")  # eval.subset: how `limit` items are taken


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

    def indices(self, limit: int | None = None, seed: int = 0, subset: str = "random") -> list[int]:
        """Which items are scored, as indices into the source's items (file order): all of them; with
        ``limit``, the first ``limit`` (``subset="first"``, what lm-eval's ``--limit`` takes) or a seeded
        subsample (``"random"``), kept in file order."""
        _check_limit(limit)
        if subset not in SUBSETS:
            raise ValueError(f"subset={subset!r} must be one of {', '.join(SUBSETS)}")
        if limit is None or limit >= len(self._items):
            return list(range(len(self._items)))
        return list(range(limit)) if subset == "first" else self._sample(limit, np.random.default_rng(seed))

    def items(self, limit: int | None = None, seed: int = 0, subset: str = "random") -> list[Item]:
        """The items ``indices`` names."""
        return self.take(self.indices(limit, seed, subset))

    def take(self, index: list[int]) -> list[Item]:
        """The items at these indices into the source's items."""
        return [self._items[i] for i in index]

    def _sample(self, limit: int, rng: np.random.Generator) -> list[int]:
        """A seeded subsample of ``limit`` items without replacement, in file order."""
        return _seeded_subset(len(self._items), limit, rng)

    def score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        """Accuracy (and the task's other numbers) of the scorer's answers, each accuracy with its binomial
        standard error ``<name>_se`` = sqrt(acc (1 - acc) / n) and the chance-normalised score's; when the
        scores carry Monte-Carlo draws (MD mode, ``mc``), also ``<name>_mc_se``, the part of the spread over
        evaluation seeds that the mask draws cause with the items fixed (``with_mc_standard_errors``)."""
        _check_scores(items, scores)
        res = with_standard_errors(self._score(items, scores))
        if any(x.draws for s in scores for x in s):
            res = with_mc_standard_errors(res, self._p_correct(items, scores))
        return res

    def outcomes(self, items: list[Item], scores: list[list[Score]]) -> list[dict[str, Any]]:
        """Per item, how it was decided: ``pred`` (the winning request; None for cloze) and ``correct`` (by
        ``acc``), and for multiple choice ``pred_norm`` and ``correct_norm`` (by ``acc_norm``)."""
        _check_scores(items, scores)
        return [self._outcome(it, s) for it, s in zip(items, scores, strict=True)]

    def _outcome(self, item: Item, s: list[Score]) -> dict[str, Any]:
        raise NotImplementedError

    def _score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        raise NotImplementedError

    def _p_correct(self, items: list[Item], scores: list[list[Score]]) -> dict[str, list[float]]:
        """Per accuracy name, per item: the probability that another mask draw scores it correct (none known
        here: a task kind that does not say reports no ``_mc_se``)."""
        return {}

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
            "limit": "subset=random: a seeded subsample (numpy default_rng(seed)) without replacement, kept in "
                     "file order; subset=first: the first limit items (lm-eval's --limit)",
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

    def _sample(self, limit: int, rng: np.random.Generator) -> list[int]:
        """Stratified over paradigms: limit // P items each (at least 1), the remainder to seeded paradigms.

        With limit below the number of paradigms P every paradigm still gets one item (P items in all).
        """
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(self._items):
            groups.setdefault(it.meta.get("uid", ""), []).append(i)
        names = list(groups)
        total = max(limit, len(names))
        quota = dict.fromkeys(names, total // len(names))
        for j in rng.choice(len(names), size=total % len(names), replace=False):
            quota[names[int(j)]] += 1
        chosen: list[int] = []
        for name in names:
            idx = groups[name]
            chosen += [idx[k] for k in _seeded_subset(len(idx), quota[name], rng)]
        return sorted(chosen)

    def recipe(self) -> dict[str, Any]:
        return {**super().recipe(), "limit": "subset=random: stratified, about limit/P items per paradigm (at "
                "least 1), seeded (numpy default_rng(seed)), kept in file order; subset=first: the first limit items"}

    def _outcome(self, item: Item, s: list[Score]) -> dict[str, Any]:
        ok = s[item.gold].logprob > s[1 - item.gold].logprob  # strictly: a tie is wrong
        return {"pred": item.gold if ok else 1 - item.gold, "correct": bool(ok)}

    def _score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        right = [o["correct"] for o in self.outcomes(items, scores)]
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

    def _p_correct(self, items: list[Item], scores: list[list[Score]]) -> dict[str, list[float]]:
        return {"acc": [p_correct([x.draws for x in s], it.gold, o["correct"])
                        for it, s, o in zip(items, scores, self.outcomes(items, scores), strict=True)]}


class ChoiceTask(Task):
    """Multiple choice: the gold continuation must be the most likely one."""

    kind = "choice"
    prompt = 'Request(query, " " + choice) per choice (query right-stripped, choice stripped)'
    scoring = ("acc = argmax of summed logprob (nats) over choices; acc_norm = argmax of logprob / UTF-8 bytes "
               "of the choice text; ties -> lowest index. score = chance-normalised acc, score_norm = "
               "chance-normalised acc_norm; chance = mean over items of 1/len(choices)")

    def _outcome(self, item: Item, s: list[Score]) -> dict[str, Any]:
        lp = np.array([x.logprob for x in s], dtype=float)
        nb = np.array([choice_bytes(r) for r in item.requests], dtype=float)
        pred, pred_norm = int(np.argmax(lp)), int(np.argmax(lp / nb))
        return {"pred": pred, "correct": pred == item.gold, "pred_norm": pred_norm,
                "correct_norm": pred_norm == item.gold}

    def _score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        out = self.outcomes(items, scores)
        right, right_norm = [o["correct"] for o in out], [o["correct_norm"] for o in out]
        acc, acc_norm, chance = float(np.mean(right)), float(np.mean(right_norm)), self.chance_of(items)
        return {
            "acc": acc,
            "acc_norm": acc_norm,
            "score": chance_normalise(acc, chance),
            "score_norm": chance_normalise(acc_norm, chance),
            "n": len(items),
            "chance": chance,
        }

    def _p_correct(self, items: list[Item], scores: list[list[Score]]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"acc": [], "acc_norm": []}
        for it, s, o in zip(items, scores, self.outcomes(items, scores), strict=True):
            draws, nb = [x.draws for x in s], [float(choice_bytes(r)) for r in it.requests]
            out["acc"].append(p_correct(draws, it.gold, o["correct"]))
            out["acc_norm"].append(p_correct(draws, it.gold, o["correct_norm"], nb))
        return out


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

    def _outcome(self, item: Item, s: list[Score]) -> dict[str, Any]:
        return {"pred": None, "correct": bool(s[item.gold].greedy)}

    def _p_correct(self, items: list[Item], scores: list[list[Score]]) -> dict[str, list[float]]:
        """Greedy exact match comes from one all-masked pass, which no mask draw changes: p is 0 or 1."""
        return {"acc": [float(bool(s[it.gold].greedy)) for it, s in zip(items, scores, strict=True)]}


class PartialTask(Task):
    """Partial scoring: the shared continuation must be most likely under the gold context option."""

    kind = "partial"
    prompt = 'Request(option, " " + continuation) per context option (option right-stripped, continuation stripped)'
    scoring = ("acc = argmax over options of the continuation's summed logprob (nats), ties -> lowest "
               "index; score = chance-normalised acc; chance = mean over items of 1/len(options)")

    def _outcome(self, item: Item, s: list[Score]) -> dict[str, Any]:
        pred = int(np.argmax([x.logprob for x in s]))
        return {"pred": pred, "correct": pred == item.gold}

    def _score(self, items: list[Item], scores: list[list[Score]]) -> dict[str, Any]:
        right = [o["correct"] for o in self.outcomes(items, scores)]
        acc, chance = float(np.mean(right)), self.chance_of(items)
        return {"acc": acc, "score": chance_normalise(acc, chance), "n": len(items), "chance": chance}

    def _p_correct(self, items: list[Item], scores: list[list[Score]]) -> dict[str, list[float]]:
        return {"acc": [p_correct([x.draws for x in s], it.gold, o["correct"])
                        for it, s, o in zip(items, scores, self.outcomes(items, scores), strict=True)]}


KINDS: dict[str, type[Task]] = {c.kind: c for c in (ChoiceTask, ClozeTask, PairsTask, PartialTask)}  # by `kind:`
