"""Built-in probes from the training corpus's validation documents: no downloads, never seen in training.

Both probes start from exactly the documents training holds out: ``read_documents(data.source, data.path,
data.text_field)`` -> ``order_documents(docs, data.order_seed)`` -> ``split_documents(docs, data.val_fraction)``,
and use ONLY the val part (duplicates removed, first occurrence kept). The split is by a hash of each
document's content, independent of R and the run seed, and the training data at any repetition R is a prefix
of the train part, so no probe document is ever trained on. As a second guard, an item is dropped when its
context's first or last 60 characters, its full text, or any of its choices occurs verbatim anywhere in the
train part (near-duplicate documents on both sides of the split).

Words are maximal runs of non-space characters. A sentence ends at a word ending in ``.``, ``!`` or ``?``
(optionally followed by closing quotes or brackets) that is not a known abbreviation, an initial (``J.``) or
a dotted acronym (``U.S.``), when the next word starts with a capital letter, a digit or an opening quote.

``probe_mc`` ("which continuation is the real one"; kind ``choice``, chance 0.25, scored like multiple
choice with ``acc`` and ``acc_norm``):
  - eligible documents have at least 40 words and a sentence start at word k with 15 <= k and at least 20
    words after it; the cut is the eligible sentence start nearest to min(n_words // 2, 60) (ties: the
    earlier one);
  - context = the document's text before word k, right-stripped (original spacing and newlines kept);
  - the real continuation = the next L words joined by single spaces, L drawn uniformly from 10..20 per item;
  - 3 distractors = L-word spans (joined the same way) that start at a sentence start (not the first word)
    of 3 other, distinct validation documents with at least 20 words from there; all 4 texts are distinct;
  - requests ``Request(context, " " + choice)``, the real one at a seeded random position (gold).
``probe_cloze`` (last word of a sentence, LAMBADA-like; kind ``cloze``, chance 0, acc = greedy exact match):
  - in each document, the first sentence whose last word is at word index >= 20 and whose last word,
    once trailing punctuation and closing quotes/brackets are stripped, is a plain word of at least 2
    letters (letters, with inner apostrophes or hyphens);
  - context = the document's text before that word, right-stripped; continuation = " " + the stripped word
    (the punctuation is left out).
Documents are visited in a seeded random order (``numpy.random.default_rng(seed)``) until ``n_items`` items
are built (fewer if the val split has fewer eligible documents); items are then kept in val-document order.
The same data config, n_items and seed always give the same items.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from dualobj.data.corpus import corpus_fingerprint, order_documents, read_documents, split_documents
from dualobj.errors import ConfigError, DataError
from dualobj.evaluate.tasks import ChoiceTask, ClozeTask, Task
from dualobj.evaluate.types import Item, Request

MC_MIN_WORDS = 40  # probe_mc: shortest eligible document
MC_MIN_CONTEXT = 15  # probe_mc: fewest context words
MC_MAX_CONTEXT = 60  # probe_mc: aim the cut at min(n_words // 2, this)
MC_SPAN = (10, 20)  # probe_mc: words per choice, drawn uniformly (inclusive)
MC_CHOICES = 4  # probe_mc: 1 real + 3 distractors
CLOZE_MIN_CONTEXT = 20  # probe_cloze: fewest words before the target word
OVERLAP_CHARS = 60  # train-overlap guard: context prefix/suffix length checked verbatim

_WORD = re.compile(r"\S+")
_CLOSERS = "\"')]}”’»"
_OPENERS = "\"'([{“‘«"
_ABBREV = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "no", "co", "inc", "ltd", "prof", "gen",
           "col", "lt", "sgt", "capt", "rev", "fig", "approx", "ca", "cf", "al", "mt", "ft", "vol", "op", "jan",
           "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "corp", "bros"}
_PLAIN_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


def _ends_sentence(word: str) -> bool:
    core = word.rstrip(_CLOSERS)
    if not core or core[-1] not in ".!?":
        return False
    if core[-1] == ".":
        stem = core[:-1].lstrip(_OPENERS)
        if len(stem) < 2 or "." in stem or stem.lower() in _ABBREV:
            return False
    return True


def _starts_sentence(word: str) -> bool:
    head = word.lstrip(_OPENERS)[:1] or word[:1]
    return head.isupper() or head.isdigit() or word[:1] in _OPENERS


def _words(doc: str) -> list[re.Match]:
    return list(_WORD.finditer(doc))


def _sentence_starts(words: list[re.Match]) -> list[int]:
    """Indices k >= 1 of words that begin a sentence."""
    return [k for k in range(1, len(words))
            if _ends_sentence(words[k - 1].group()) and _starts_sentence(words[k].group())]


def _span(words: list[re.Match], k: int, length: int) -> str:
    return " ".join(w.group() for w in words[k:k + length])


def validation_documents(data: Any) -> tuple[list[str], list[str]]:
    """(train, val) documents exactly as training splits them; val without duplicates."""
    docs = read_documents(data.source, data.path, data.text_field)
    train, val = split_documents(order_documents(docs, data.order_seed), data.val_fraction)
    return train, list(dict.fromkeys(val))


class _TrainText:
    """Verbatim-substring guard against the train part (documents joined by NUL, which no text contains)."""

    def __init__(self, train: list[str]):
        self.text = "\0".join(train)

    def overlaps(self, context: str, *spans: str) -> bool:
        pieces = [context[:OVERLAP_CHARS], context[-OVERLAP_CHARS:], *spans]
        return any(p.strip() and p in self.text for p in pieces)


def _mc_cut(words: list[re.Match]) -> int | None:
    n = len(words)
    if n < MC_MIN_WORDS:
        return None
    ok = [k for k in _sentence_starts(words) if k >= MC_MIN_CONTEXT and n - k >= MC_SPAN[1]]
    if not ok:
        return None
    target = min(n // 2, MC_MAX_CONTEXT)
    return min(ok, key=lambda k: (abs(k - target), k))


def _build_mc(val: list[str], guard: _TrainText, n_items: int, rng: np.random.Generator) -> list[Item]:
    parsed = [_words(d) for d in val]
    pool = [(d, k) for d, ws in enumerate(parsed) for k in _sentence_starts(ws) if len(ws) - k >= MC_SPAN[1]]
    cuts = {d: k for d, ws in enumerate(parsed) if (k := _mc_cut(ws)) is not None}
    eligible = sorted(cuts)
    built: list[tuple[int, Item]] = []
    for j in rng.permutation(len(eligible)):
        if len(built) >= n_items:
            break
        d = eligible[int(j)]
        words, k = parsed[d], cuts[d]
        length = int(rng.integers(MC_SPAN[0], MC_SPAN[1] + 1))
        context = val[d][: words[k].start()].rstrip()
        real = _span(words, k, length)
        if guard.overlaps(context, real, context + " " + real):
            continue
        texts, used_docs = [real], {d}
        for _ in range(200):  # draws; with hundreds of documents three fit at once nearly always
            if len(texts) == MC_CHOICES:
                break
            od, ok = pool[int(rng.integers(len(pool)))]
            text = _span(parsed[od], ok, length)
            if od in used_docs or text in texts or guard.overlaps("", text):
                continue
            texts.append(text)
            used_docs.add(od)
        if len(texts) < MC_CHOICES:
            continue
        gold = int(rng.integers(MC_CHOICES))
        distractors = texts[1:]
        choices = distractors[:gold] + [real] + distractors[gold:]
        requests = [Request(context, " " + c) for c in choices]
        built.append((d, Item(requests, gold, {"doc": d, "n_words": length, "context_words": k})))
    return [item for _, item in sorted(built, key=lambda x: x[0])]


def _cloze_target(words: list[re.Match]) -> tuple[int, str] | None:
    n = len(words)
    for j in range(CLOZE_MIN_CONTEXT, n):
        w = words[j].group()
        if not _ends_sentence(w) or (j + 1 < n and not _starts_sentence(words[j + 1].group())):
            continue
        core = w.rstrip(_CLOSERS + ".!?,;:")
        if len(core) >= 2 and _PLAIN_WORD.fullmatch(core):
            return j, core
    return None


def _build_cloze(val: list[str], guard: _TrainText, n_items: int, rng: np.random.Generator) -> list[Item]:
    built: list[tuple[int, Item]] = []
    for d in rng.permutation(len(val)):
        if len(built) >= n_items:
            break
        d = int(d)
        words = _words(val[d])
        target = _cloze_target(words)
        if target is None:
            continue
        j, word = target
        context = val[d][: words[j].start()].rstrip()
        if guard.overlaps(context, (context + " " + word)[-OVERLAP_CHARS:]):
            continue
        built.append((d, Item([Request(context, " " + word)], 0, {"doc": d, "context_words": j})))
    return [item for _, item in sorted(built, key=lambda x: x[0])]


class ProbeMC(ChoiceTask):
    prompt = ('Request(context, " " + choice): context = a validation document up to a sentence start near '
              'its middle; choices = the real next 10-20 words and 3 same-length spans of other validation '
              'documents (see dualobj.evaluate.probes)')


class ProbeCloze(ClozeTask):
    prompt = ('Request(context, " " + word): context = a validation document up to the last word of its first '
              'sentence ending at word >= 20; word = that word without trailing punctuation')


# The probes by name: how to build their items, and the task class that scores them.
PROBES: dict[str, tuple[Callable[[list[str], _TrainText, int, np.random.Generator], list[Item]], type[Task]]] = {
    "probe_mc": (_build_mc, ProbeMC),
    "probe_cloze": (_build_cloze, ProbeCloze),
}


def build_probe(name: str, data: Any, n_items: int, seed: int) -> Task:
    """Build ``probe_mc`` or ``probe_cloze`` (see the module docstring) from `data` (a DataConfig)."""
    if name not in PROBES:
        raise DataError(f"unknown probe {name!r}; known probes: {', '.join(PROBES)}")
    if isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 1:
        raise ConfigError(f"probe n_items={n_items!r} must be a positive integer")
    train, val = validation_documents(data)
    build, cls = PROBES[name]
    items = build(val, _TrainText(train), n_items, np.random.default_rng(seed))
    if not items:
        raise DataError(f"{name}: no validation document of data.source={data.source} is long enough for a probe "
                        f"item ({len(val)} val documents); raise data.val_fraction or use a larger corpus")
    source = {
        "source": f"validation documents of data.source={data.source}",
        "corpus": {"source": data.source, "path": data.path, "text_field": data.text_field,
                   "fingerprint": corpus_fingerprint(data.source, data.path)},
        "val_fraction": data.val_fraction,
        "order_seed": data.order_seed,
        "n_items": n_items,
        "n_built": len(items),
        "n_val_documents": len(val),
        "seed": seed,
        "construction": "see the docstring of dualobj.evaluate.probes",
    }
    return cls(name, items, source)
