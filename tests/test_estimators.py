"""The MD likelihood estimators against exact answers enumerated on a toy model with a known joint.

The toy model knows a joint distribution over a short continuation (or a window's targets) and predicts
each masked token from its exact conditional given the visible ones. The ELBO is then enumerable: every
mask subset M of the n tokens, k = |M| uniform on {1..n}, weight n/k. For n = 2 it equals the exact
log-likelihood. The estimators must match it within Monte-Carlo error; the rule used before (k =
max(1, floor(t n + u)), not uniform, with weight n/k) must not.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from dualobj.evaluate.scoring import Scorer
from dualobj.metrics import md_elbo, md_elbo_windows, stratified_k

MASK, BOS, V = 4, 1, 64
SPECIAL = torch.tensor([0, 1, 2, 3, 4])
ALPHABET = [10, 11, 12]  # the tokens the joint is over


def random_joint(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(len(ALPHABET) ** n, 0.3)).reshape([len(ALPHABET)] * n)
    return p + 1e-12


def conditional(joint: np.ndarray, i: int, known: dict[int, int]) -> np.ndarray:
    """p(x_i = . | x_j = known[j] for j in known), from the joint."""
    idx = tuple(known[d] if d in known and d != i else slice(None) for d in range(joint.ndim))
    sub = joint[idx]
    free = [d for d in range(joint.ndim) if not (d in known and d != i)]
    axis = free.index(i)
    marg = sub.sum(axis=tuple(a for a in range(sub.ndim) if a != axis))
    return marg / marg.sum()


class JointModel(nn.Module):
    """Predicts continuation token i (at position ctx_len + i) at the previous position from the joint,
    given the continuation tokens that are present in the input and not masked."""

    def __init__(self, joint: np.ndarray, ctx_len: int):
        super().__init__()
        self.joint, self.c, self.n = joint, ctx_len, joint.ndim
        self.p = nn.Parameter(torch.zeros(1))
        self.index = {t: a for a, t in enumerate(ALPHABET)}

    def forward(self, x, causal=True, doc_ids=None, prefix_len=None):
        b, t = x.shape
        out = torch.full((b, t, V), -1e4)
        for r in range(b):
            known = {i: self.index[int(x[r, self.c + i])] for i in range(self.n)
                     if self.c + i < t and int(x[r, self.c + i]) != MASK}
            for i in range(self.n):
                if self.c - 1 + i < t:
                    out[r, self.c - 1 + i, ALPHABET] = torch.tensor(np.log(conditional(self.joint, i, known)),
                                                                    dtype=torch.float32)
        return out + self.p


def exact_elbo(joint: np.ndarray, x: list[int], hidden: set[int] = frozenset()) -> float:
    """Σ_k 1/n Σ_{|M|=k} 1/C(n,k) (n/k) Σ_{i∈M} log p(x_i | x_{¬M}); tokens in ``hidden`` are never visible."""
    n, total = len(x), 0.0
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        for m in subsets:
            known = {j: x[j] for j in range(n) if j not in m and j not in hidden}
            value = sum(math.log(conditional(joint, i, known)[x[i]]) for i in m)
            total += (1 / n) * (1 / len(subsets)) * (n / k) * value
    return total


class _Tok:
    """A stand-in tokenizer: the scorer only needs encode_batch/encode of our fixed ids."""

    encode_special_tokens = False

    def __init__(self, ids: dict[str, list[int]]):
        self.ids = ids

    def encode_batch(self, texts, add_special_tokens=False):
        return [type("E", (), {"ids": self.ids.get(t, [])})() for t in texts]

    def encode(self, text, add_special_tokens=False):
        return type("E", (), {"ids": self.ids.get(text, [])})()


def scorer_for(joint: np.ndarray, cont: list[int]) -> Scorer:
    ctx = [20, 21]
    tok = _Tok({"ctx": ctx, "ctxcont": ctx + [ALPHABET[a] for a in cont], "cont": [ALPHABET[a] for a in cont]})
    return Scorer(JointModel(joint, 1 + len(ctx)), tok, bos_id=BOS, mask_id=MASK, seq_len=16)


def old_rule_estimate(s: Scorer, samples: int, seed: int) -> float:
    """The estimator used before: k = min(n, max(1, floor(t n + u))) with t stratified, weight n/k."""
    ctx, cont = s.encode("ctx", "cont")
    g = torch.Generator().manual_seed(seed)
    n, vals = len(cont), []
    for i in range(samples):
        t = (i + torch.rand((), generator=g).item()) / samples
        k = min(n, max(1, math.floor(t * n + torch.rand((), generator=g).item())))
        m = torch.randperm(n, generator=g)[:k].tolist()
        read = s._run_masked([(ctx, cont)], [(0, [j in m for j in range(n)])])[0]
        vals.append(sum(float(read.logprob[j]) for j in m) * n / k)
    return float(np.mean(vals))


def test_stratified_counts_are_uniform_over_their_strata():
    g = torch.Generator().manual_seed(0)
    n, samples = 5, 4
    counts = np.zeros(n + 1)
    for _ in range(5000):
        for k in stratified_k(torch.rand(1, samples, generator=g, dtype=torch.float64), torch.tensor([n]))[0].tolist():
            counts[k] += 1
    freq = counts[1:] / counts.sum()
    assert np.abs(freq - 1 / n).max() < 0.012  # uniform on {1..n}: 4 binomial SE of 20,000 draws
    u = torch.rand(10000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    k = stratified_k(u, torch.full((10000,), 7))
    assert k.min() == 1 and k.max() == 7
    assert np.abs(np.bincount(k.flatten().numpy(), minlength=8)[1:] / k.numel() - 1 / 7).max() < 0.008


def test_two_token_elbo_equals_the_log_likelihood():
    joint = random_joint(2, seed=1)
    x = [0, 2]
    assert exact_elbo(joint, x) == pytest.approx(math.log(joint[tuple(x)] / joint.sum()), abs=1e-9)


@pytest.mark.parametrize("cont", [[0, 2], [2, 1, 0]])
def test_scorer_md_estimate_matches_the_enumerated_elbo_and_the_old_rule_does_not(cont):
    joint = random_joint(len(cont), seed=len(cont))
    s = scorer_for(joint, cont)
    exact = exact_elbo(joint, cont)
    got = s.score([("ctx", "cont")], "md", samples=3000, seed=0)[0]
    assert abs(got.logprob - exact) < 4 * got.se, (got.logprob, exact, got.se)
    old = old_rule_estimate(s, 3000, seed=0)
    assert abs(old - exact) > 10 * got.se, (old, exact, got.se)  # the old rule's bias, far outside the error


def test_validation_elbo_matches_the_enumerated_elbo():
    joint = random_joint(3, seed=7)
    x = [1, 0, 2]
    window = torch.tensor([[30] + [ALPHABET[a] for a in x]])  # w0 = context; targets w1..w3
    model = JointModel(joint, ctx_len=1)
    exact = exact_elbo(joint, x, hidden={2})  # the last target lies past the input: never visible
    windows = window.repeat(800, 1)
    nats, tokens = md_elbo_windows(model, windows, bos_id=BOS, mask_id=MASK, special_ids=SPECIAL, samples=3, seed=0)
    assert (tokens == 3).all()
    est, se = float(nats.mean()), float(nats.std() / math.sqrt(len(nats)))
    assert abs(est + exact) < 4 * se, (est, -exact, se)  # nats are negative log-likelihoods
    per_token, per_token_se = md_elbo(model, windows, bos_id=BOS, mask_id=MASK, special_ids=SPECIAL, samples=3,
                                      seed=0, batch_size=64)
    assert per_token == pytest.approx(est / 3, rel=1e-9) and per_token_se == pytest.approx(se / 3, rel=1e-6)


def test_validation_masks_do_not_depend_on_the_batch_size():
    joint = random_joint(3, seed=2)
    windows = torch.tensor([[30] + [ALPHABET[a] for a in x] for x in itertools.product(range(3), repeat=3)])
    model = JointModel(joint, ctx_len=1)
    kw = dict(bos_id=BOS, mask_id=MASK, special_ids=SPECIAL, samples=2, seed=5)
    assert md_elbo(model, windows, batch_size=4, **kw) == md_elbo(model, windows, batch_size=27, **kw)


def test_bits_per_byte_divide_by_the_bytes_of_exactly_the_scored_targets(tmp_path):
    from types import SimpleNamespace

    from dualobj.data.tokenizer import train_bpe
    from dualobj.metrics import token_byte_lengths, validation_metrics

    texts = ["héllo wörld, a naïve café by the river", "the river flows — to the sea"] * 30
    tok = train_bpe(texts, 300)
    tok.save(str(tmp_path / "tok.json"))
    nbytes = token_byte_lengths(str(tmp_path / "tok.json"))
    for text in texts[:2]:  # byte-level BPE: exact, the space put before each document counting as one byte
        assert nbytes[tok.encode(text).ids].sum() == len((" " + text).encode("utf-8"))
    assert nbytes[:5].sum() == 0  # special tokens have no text
    ids = [BOS, *tok.encode(texts[0]).ids, BOS, *tok.encode(texts[1]).ids]
    windows = torch.tensor([ids[:13], ids[5:18]])
    corpus = SimpleNamespace(tokenizer_path=str(tmp_path / "tok.json"), bos_id=BOS, mask_id=MASK,
                             special_ids=[0, 1, 2, 3, 4])
    torch.manual_seed(0)
    model = FixedDist(300)
    got = validation_metrics(model, windows, corpus, batch_size=1, md_samples=4, seed=0)
    target_bytes = int(nbytes[windows[:, 1:].numpy()].sum())
    assert got["bytes"] == target_bytes
    nats = float(-torch.log_softmax(model.logits.detach(), -1)[windows[:, 1:]].sum())
    assert got["ar_bpb"] == pytest.approx(nats / math.log(2) / target_bytes, rel=1e-6)
    assert got["ar_nll"] == pytest.approx(nats / windows[:, 1:].numel(), rel=1e-6)


class FixedDist(nn.Module):
    """The same categorical distribution at every position (closed-form NLL)."""

    def __init__(self, v: int):
        super().__init__()
        self.logits = nn.Parameter(torch.randn(v))

    def forward(self, x, causal=True, doc_ids=None, prefix_len=None):
        return self.logits.expand(x.shape[0], x.shape[1], -1)
