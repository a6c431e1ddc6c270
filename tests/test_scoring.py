"""The likelihood scorer: exact AR/prefix log-likelihoods, the MD estimator's bias and error, batching."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dualobj.config import ModelConfig
from dualobj.data.tokenizer import train_bpe
from dualobj.evaluate.scoring import Scorer
from dualobj.model import Transformer

TEXTS = ["the river flows to the sea and the sea is wide", "a small boat sails on the river at night",
         "birds sing in the morning over the quiet town", "the town has a bridge over the river"] * 20
PAIRS = [("the river", " flows to the sea"), ("", "a small boat sails"), ("birds sing in the", " morning"),
         ("the town has a bridge over the", " river and the sea is wide")]


@pytest.fixture(scope="module")
def tok():
    return train_bpe(TEXTS, 300)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    m = Transformer(ModelConfig(name="t", vocab_size=300, d_model=32, n_layers=2, n_heads=2, d_ff=64, seq_len=32))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m.eval()


def scorer(model, tok, **kw):
    return Scorer(model, tok, bos_id=1, mask_id=4, seq_len=32, **kw)


def test_ar_loglik_equals_a_direct_computation(model, tok):
    s = scorer(model, tok)
    got = s.score(PAIRS, "ar")
    for (ctx, cont), sc in zip(PAIRS, got, strict=True):
        c, x = s.encode(ctx, cont)
        ids = torch.tensor([c + x])
        with torch.no_grad():
            lp = F.log_softmax(model(ids, True), -1)[0]
        direct = sum(float(lp[len(c) - 1 + j, t]) for j, t in enumerate(x))
        assert sc.logprob == pytest.approx(direct, abs=1e-4)
        assert sc.n_tokens == len(x)


def test_scores_do_not_depend_on_batching(model, tok):
    for mode in ("ar", "prefix", "md"):
        one = scorer(model, tok, batch_size=1).score(PAIRS, mode, samples=4)
        many = scorer(model, tok, batch_size=64).score(PAIRS, mode, samples=4)
        for a, b in zip(one, many, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4), mode


def test_prefix_mode_sees_the_context_bidirectionally(model, tok):
    s = scorer(model, tok)
    ar, pre = s.score(PAIRS, "ar"), s.score(PAIRS, "prefix")
    # With an empty context the prefix is just <s>: identical to AR. With a context, it differs.
    assert pre[1].logprob == pytest.approx(ar[1].logprob, abs=1e-5)
    assert abs(pre[0].logprob - ar[0].logprob) > 1e-4


class Fixed(nn.Module):
    """Ignores its input: a fixed distribution at every position, so log p(cont | ctx) is known exactly."""

    def __init__(self, v=300):
        super().__init__()
        torch.manual_seed(1)
        self.logits = nn.Parameter(torch.randn(v) * 2)

    def forward(self, x, causal=True, doc_ids=None, prefix_len=None):
        return self.logits.expand(x.shape[0], x.shape[1], -1)


def test_md_estimate_is_unbiased_and_its_error_shrinks_with_k(tok):
    model = Fixed()
    s = scorer(model, tok)
    lp = F.log_softmax(model.logits.detach(), -1)
    pairs = PAIRS * 5
    exact = [float(sum(lp[t] for t in s.encode(c, x)[1])) for c, x in pairs]
    ses = {}
    for k in (2, 32):
        got = s.score(pairs, "md", samples=k, seed=3)
        errs = torch.tensor([g.logprob - e for g, e in zip(got, exact, strict=True)])
        se = torch.tensor([g.se for g in got])
        assert abs(float(errs.mean())) < 3 * float((se**2).mean().sqrt() / len(got) ** 0.5) + 1e-6
        if k == 32:  # with 2 samples the per-item standard error is itself too noisy to test coverage
            assert (errs.abs() <= 3 * se + 1e-6).float().mean() >= 0.9
        ses[k] = float(se.mean())
    assert ses[32] < ses[2] / 2
    pll = s.score(pairs, "md", estimator="pll")
    for g, e in zip(pll, exact, strict=True):
        assert g.logprob == pytest.approx(e, abs=1e-4) and g.se == 0.0


class Oracle(nn.Module):
    """Puts all mass on a fixed target sequence's next token, whatever it sees."""

    def __init__(self, target: list[int], v=300):
        super().__init__()
        self.target, self.v = target, v
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, x, causal=True, doc_ids=None, prefix_len=None):
        t = x.shape[1]
        nxt = torch.tensor(self.target[1: t + 1] + [0] * max(0, t + 1 - len(self.target)))[:t]
        return F.one_hot(nxt, self.v).float()[None].expand(x.shape[0], -1, -1) * 50 + self.p


def test_greedy_flags_exact_match_in_every_mode(tok):
    s0 = scorer(Fixed(), tok)
    c, x = s0.encode("the river", " flows to the sea")
    s = scorer(Oracle(c + x), tok)
    for mode in ("ar", "prefix", "md"):
        good = s.score([("the river", " flows to the sea")], mode, samples=2)[0]
        bad = s.score([("the river", " flows to the town")], mode, samples=2)[0]
        assert good.greedy and not bad.greedy, mode
        if mode != "md":  # a 2-sample MC estimate may not mask the wrong token; PLL below does
            assert good.logprob > -1e-3 > bad.logprob
    pll = s.score([("the river", " flows to the sea"), ("the river", " flows to the town")], "md", estimator="pll")
    assert pll[0].logprob > -1e-3 > pll[1].logprob


def test_long_contexts_are_cut_from_the_left(model, tok):
    s = scorer(model, tok)
    c, x = s.encode(" ".join(TEXTS[:10]), " the sea")
    assert len(c) + len(x) == 32 and x == s.encode("the river", " the sea")[1]


def test_a_stop_request_ends_scoring_between_batches(model, tok):
    """Scorer.stopping is checked before every batch: scoring stops after the batch that was running when
    the request came, in every mode, and scores nothing more (EvalStopped)."""
    from dualobj.errors import EvalStopped

    for mode in ("ar", "prefix", "md"):
        s = scorer(model, tok, batch_size=1)
        calls = []
        s.stopping = lambda calls=calls: calls.append(1) or len(calls) > 2  # true at the third check
        forwards = []
        real = s._forward
        s._forward = lambda *a, real=real, forwards=forwards, **k: forwards.append(1) or real(*a, **k)
        with pytest.raises(EvalStopped):
            s.score(PAIRS, mode, samples=2)
        assert len(calls) == 3 and len(forwards) == 2, (mode, len(calls), len(forwards))
