"""Likelihood of a continuation given a context, in three modes; one implementation used by everything.

Every request is tokenised as ``<s> context continuation`` (the document-start token every training
document begins with). Rows are batched, right-padded, and the padding is a separate "document",
so no row sees padding or another row.

* ``ar``: causal attention; exact log p(continuation | context) = sum of next-token log-probs.
* ``prefix``: the paper's prefix-LM inference: bidirectional attention over ``<s> context``, causal over
  the continuation; exact in the same sense as AR.
* ``md``: masked diffusion, context visible, continuation masked per the diffusion process.
  - ``mc`` (default): an unbiased Monte-Carlo estimate of the ELBO, a lower bound on
    log p(continuation | context): k uniform on {1..n} for a continuation of n tokens, k of them masked
    uniformly at random, each masked token scored at the previous position (MNTP), weighted by n/k (the
    estimator of LLaDA's evaluation). The K samples of an item take k from K strata of {1..n}
    (k_s = floor((s + u_s) n / K) + 1, which is uniform on {1..n} over the strata), which keeps the mean
    unbiased and lowers its variance; the reported standard error (sample std / sqrt K) ignores the
    stratification, so it is conservative. A one-token continuation is scored exactly.
    Given ``groups`` (the item of each request), the requests of one item share their mask draws (common
    random numbers, ``mask_draws``): the same strata, the same masks where lengths are equal, overlapping
    masks where not. Each request's estimate keeps its distribution; the differences between an item's
    answers, which decide its accuracy, lose most of the masks' noise.
    It is the default because it is the quantity the MD objective trains and a proper bound, so
    scores compare across models and with the AR likelihood.
  - ``pll``: pseudo-log-likelihood: each continuation token masked alone (n passes), deterministic,
    lower variance, but not a bound (it over-counts context shared between tokens).
  Greedy decoding for MD masks the whole continuation and takes each position's argmax.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from dualobj.errors import EvalStopped
from dualobj.evaluate.types import Score
from dualobj.metrics import stratified_k

MODES = ("ar", "md", "prefix")


class Read(NamedTuple):
    """What one forward pass tells about a request's continuation tokens."""

    logprob: torch.Tensor  # [n] log-prob of each continuation token
    argmax: torch.Tensor  # [n] the most likely token at each position


class Scorer:
    def __init__(self, model, tokenizer, *, bos_id: int, mask_id: int, seq_len: int, autocast=None,
                 batch_size: int = 64, max_tokens: int | None = None):
        self.model, self.tok = model, tokenizer
        self.tok.encode_special_tokens = True  # "<s>" typed in a text is text, not a document start
        self.bos, self.mask_id, self.seq_len = bos_id, mask_id, seq_len
        self.autocast, self.batch_size = autocast, batch_size
        self.max_tokens = max_tokens or batch_size * 128  # tokens per forward pass: bounds the logits
        self.device = next(model.parameters()).device
        self.stopping: Callable[[], bool] = lambda: False  # checked before every batch (EvalStopped)

    # ----------------------------------------------------------------- tokenisation
    def encode(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of (<s> + context, continuation), split where the joint encoding splits.

        Encoding the joint text keeps merges across the boundary as in training; when the context's
        own encoding is not a prefix of the joint one, the two are encoded apart.
        """
        enc = self.tok.encode_batch([context + continuation, context], add_special_tokens=False)
        whole, ctx = enc[0].ids, enc[1].ids if context else []
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            cont = whole[len(ctx):]
        else:
            cont = self.tok.encode(continuation, add_special_tokens=False).ids
        ctx = [self.bos, *ctx]
        if not cont:
            cont = [self.bos]  # an empty continuation: score the end of the text
        over = len(ctx) + len(cont) - self.seq_len
        if over > 0:  # keep the continuation, drop the oldest context (and <s> if need be)
            ctx = ctx[over:] if over < len(ctx) else ctx[-1:]
            cont = cont[-(self.seq_len - len(ctx)):]
        return ctx, cont

    # ----------------------------------------------------------------- batching
    def _forward(self, rows: list[list[int]], causal: bool, spans: list[tuple[int, int]],
                 targets: list[list[int]], prefix: list[int] | None = None) -> list[Read]:
        """For each right-padded row: the log-prob of ``targets[b]`` and the argmax at positions [start, end).

        Padding is isolated as its own document; only the needed positions are normalised, and only the
        targets' log-probs are kept (a [n, V] row per request would hold gigabytes over a task's K samples).
        """
        t = max(len(r) for r in rows)
        x = torch.full((len(rows), t), self.bos, dtype=torch.long)
        lengths = torch.tensor([len(r) for r in rows])
        for i, r in enumerate(rows):
            x[i, : len(r)] = torch.tensor(r)
        doc = (torch.arange(t)[None, :] >= lengths[:, None]).long()
        plen = torch.tensor(prefix) if prefix is not None else None
        with torch.no_grad(), (self.autocast or contextlib.nullcontext()):
            logits = self.model(x.to(self.device), causal, doc.to(self.device),
                                plen.to(self.device) if plen is not None else None)
        out = []
        for b, (a, e) in enumerate(spans):
            lp = F.log_softmax(logits[b, a:e].detach().float(), dim=-1)
            tgt = torch.tensor(targets[b], device=lp.device)
            out.append(Read(lp.gather(1, tgt[:, None])[:, 0].cpu(), lp.argmax(-1).cpu()))
        return out

    def _batches(self, lengths: list[int], order: list[int]):
        """Batches of at most batch_size rows and max_tokens padded tokens (bounds the logits' memory)."""
        budget, batch, longest = self.max_tokens, [], 0
        for i in order:  # order is sorted by length, so the last one added is the longest
            longest = max(longest, lengths[i])
            if batch and (len(batch) >= self.batch_size or (len(batch) + 1) * longest > budget):
                yield self._unless_stopping(batch)
                batch, longest = [], lengths[i]
            batch.append(i)
        if batch:
            yield self._unless_stopping(batch)

    def _unless_stopping(self, batch: list[int]) -> list[int]:
        if self.stopping():
            raise EvalStopped()
        return batch

    # ----------------------------------------------------------------- modes
    def score(self, pairs: list[tuple[str, str]], mode: str = "ar", estimator: str = "mc", samples: int = 8,
              seed: int = 0, greedy: bool = True, groups: list[int] | None = None) -> list[Score]:
        """Score (context, continuation) pairs; returns one Score per pair, in order. ``greedy=False``: MD mode
        leaves Score.greedy None instead of running the extra all-masked pass that decides it.

        ``groups`` (MD ``mc`` only; ignored otherwise): the item each pair belongs to, e.g. its question's
        index. The pairs of one item share their mask draws (see ``mask_draws``). None: every pair draws its
        masks alone, exactly as a group of its own would.
        """
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        if groups is not None and len(groups) != len(pairs):
            raise ValueError(f"{len(groups)} groups for {len(pairs)} pairs; give one item index per pair")
        enc = [self.encode(c, x) for c, x in pairs]
        if mode in ("ar", "prefix"):
            return self._exact(enc, prefix=mode == "prefix")
        if estimator == "pll":
            return self._pll(enc, greedy)
        return self._mc(enc, samples, seed, greedy, groups)

    def _exact(self, enc, prefix: bool) -> list[Score]:
        out: list[Score | None] = [None] * len(enc)
        lengths = [len(c) + len(x) for c, x in enc]
        order = sorted(range(len(enc)), key=lengths.__getitem__)
        for idx in self._batches(lengths, order):
            rows = [enc[i][0] + enc[i][1] for i in idx]
            spans = [(len(enc[i][0]) - 1, len(enc[i][0]) + len(enc[i][1]) - 1) for i in idx]
            reads = self._forward(rows, True, spans, [enc[i][1] for i in idx],
                                  [len(enc[i][0]) for i in idx] if prefix else None)
            for b, i in enumerate(idx):
                tgt = torch.tensor(enc[i][1])
                out[i] = Score(float(reads[b].logprob.sum()), len(tgt), bool((reads[b].argmax == tgt).all()))
        return out  # type: ignore[return-value]

    def _masked_rows(self, enc, masks: list[tuple[int, list[bool]]]):
        """Rows for (request index, which continuation tokens to mask)."""
        rows = []
        for i, m in masks:
            ctx, cont = enc[i]
            rows.append(ctx + [self.mask_id if mk else tok for tok, mk in zip(cont, m, strict=True)])
        return rows

    def _run_masked(self, enc, jobs: list[tuple[int, list[bool]]]) -> list[Read]:
        """For each job: log-probs of the continuation tokens [n] and the argmax there, read at the previous
        position (MNTP)."""
        res: list[Read | None] = [None] * len(jobs)
        lengths = [len(enc[i][0]) + len(enc[i][1]) for i, _ in jobs]
        order = sorted(range(len(jobs)), key=lengths.__getitem__)
        for idx in self._batches(lengths, order):
            spans = [(len(enc[jobs[j][0]][0]) - 1, lengths[j] - 1) for j in idx]
            reads = self._forward(self._masked_rows(enc, [jobs[j] for j in idx]), False, spans,
                                  [enc[jobs[j][0]][1] for j in idx])
            for b, j in enumerate(idx):
                res[j] = reads[b]
        return res  # type: ignore[return-value]

    def _greedy_md(self, enc) -> list[bool]:
        jobs = [(i, [True] * len(enc[i][1])) for i in range(len(enc))]
        return [bool((r.argmax == torch.tensor(enc[i][1])).all())
                for (i, _), r in zip(jobs, self._run_masked(enc, jobs), strict=True)]

    def _mc(self, enc, samples: int, seed: int, want_greedy: bool = True,
            groups: list[int] | None = None) -> list[Score]:
        """The unbiased MC ELBO estimate of each request, its standard error and its K per-draw values."""
        jobs, weights = [], []
        for i, masks in enumerate(mask_draws([len(cont) for _, cont in enc], samples, seed, groups)):
            for m in masks:
                jobs.append((i, m))
                weights.append(len(m) / sum(m))  # n / k
        reads = self._run_masked(enc, jobs)
        greedy = self._greedy_md(enc) if want_greedy else [None] * len(enc)
        per_item: list[list[float]] = [[] for _ in enc]
        for (i, m), w, r in zip(jobs, weights, reads, strict=True):
            per_item[i].append(float(r.logprob[torch.tensor(m)].sum()) * w)
        out = []
        for i, vals in enumerate(per_item):
            v = torch.tensor(vals, dtype=torch.float64)
            se = float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
            out.append(Score(float(v.mean()), len(enc[i][1]), greedy[i], se, tuple(vals)))
        return out

    def _pll(self, enc, want_greedy: bool = True) -> list[Score]:
        jobs = [(i, [j == k for j in range(len(cont))]) for i, (_, cont) in enumerate(enc) for k in range(len(cont))]
        total = [0.0] * len(enc)
        for (i, m), r in zip(jobs, self._run_masked(enc, jobs), strict=True):
            total[i] += float(r.logprob[m.index(True)])
        greedy = self._greedy_md(enc) if want_greedy else [None] * len(enc)
        return [Score(total[i], len(enc[i][1]), greedy[i]) for i in range(len(enc))]


def mask_draws(lengths: list[int], samples: int, seed: int, groups: list[int] | None = None) -> list[list[list[bool]]]:
    """Per request (continuation of ``lengths[i]`` tokens): its K = ``samples`` masks, True = masked.

    Requests are drawn group by group from one generator seeded with ``seed``, each group when its first
    request comes (None: every request is a group of its own). A group draws K stratum offsets u_s, shared
    by its requests, and each request takes k_s = floor((s + u_s) n / K) + 1 from its own length n
    (``stratified_k``). Then, per draw s:

    * a group of one request masks ``randperm(n)[:k_s]``: the draws of scoring without groups, seed for seed;
    * a larger group draws one uniform rank per position of its longest continuation, and each request
      masks its k_s lowest-ranked positions among its own n. Requests of equal length get identical masks
      (the same positions), shorter ones the best overlap the ranks allow (common random numbers).

    Either way each request's k is uniform on {1..n} over the strata and, given k, its masked positions are
    a uniform k-subset: each request's estimator is the one it has alone (unbiased); only the dependence
    between the requests of a group changes.
    """
    g = torch.Generator().manual_seed(seed)
    members: dict[int, list[int]] = {}
    for i, group in enumerate(range(len(lengths)) if groups is None else groups):
        members.setdefault(group, []).append(i)
    out: list[list[list[bool]]] = [[] for _ in lengths]
    for idx in members.values():
        u = torch.rand(1, samples, generator=g, dtype=torch.float64)
        ks = {i: stratified_k(u, torch.tensor([lengths[i]]))[0].tolist() for i in idx}
        for s in range(samples):
            if len(idx) == 1:
                picked = {idx[0]: torch.randperm(lengths[idx[0]], generator=g)[:ks[idx[0]][s]]}
            else:
                rank = torch.rand(max(lengths[i] for i in idx), generator=g, dtype=torch.float64)
                picked = {i: torch.argsort(rank[:lengths[i]])[:ks[i][s]] for i in idx}
            for i, positions in picked.items():
                mask = [False] * lengths[i]
                for c in positions.tolist():
                    mask[c] = True
                out[i].append(mask)
    return out
