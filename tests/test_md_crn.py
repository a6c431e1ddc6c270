"""Common random numbers for MD-mode choices, and the Monte-Carlo part of an accuracy's standard error.

The answers of one item share their mask draws (``Scorer.score(..., groups=...)``); each answer's estimate
must stay the unbiased ELBO estimate it is alone, checked against the ELBO enumerated on a toy model with
a known joint (as in test_estimators.py), with a deliberately wrong sharing rule rejected by the same check.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from test_estimators import ALPHABET, BOS, MASK, FixedDist, V, _Tok, conditional, exact_elbo, random_joint

from dualobj.evaluate import scoring
from dualobj.evaluate.scoring import Scorer, mask_draws
from dualobj.evaluate.tasks import ChoiceTask, ClozeTask, PairsTask, PartialTask, p_correct, with_mc_standard_errors
from dualobj.evaluate.types import Item, Request, Score
from dualobj.metrics import stratified_k

CTX = [20, 21]
CHOICES = {"a": [2, 0], "b": [2, 1, 0, 1], "c": [1, 1, 2, 0]}  # one item: lengths 2, 4, 4


def old_masks(lengths: list[int], samples: int, seed: int) -> list[list[list[bool]]]:
    """The draws of Scorer._mc before groups existed, written out: per request u, then K randperms."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        u = torch.rand(samples, generator=g, dtype=torch.float64)
        masks = []
        for k in stratified_k(u[None], torch.tensor([n]))[0].tolist():
            m = [False] * n
            for c in torch.randperm(n, generator=g)[:k].tolist():
                m[c] = True
            masks.append(m)
        out.append(masks)
    return out


def test_without_groups_the_draws_are_the_previous_ones_seed_for_seed():
    lengths = [3, 1, 5, 2, 5, 4]
    for seed in (0, 7):
        want = old_masks(lengths, 4, seed)
        assert mask_draws(lengths, 4, seed) == want
        assert mask_draws(lengths, 4, seed, groups=list(range(len(lengths)))) == want  # groups of one


def test_an_items_requests_share_strata_and_masks():
    lengths, samples = [4, 6, 4, 2, 6], 5
    groups = [0, 0, 0, 1, 1]
    for seed in range(20):
        draws = mask_draws(lengths, samples, seed, groups)
        assert draws[0] == draws[2]  # equal lengths: identical masks
        for a, b in ((0, 1), (3, 4)):
            n = lengths[a]
            for ma, mb in zip(draws[a], draws[b], strict=True):
                short, long_ = {j for j in range(n) if ma[j]}, {j for j in range(n) if mb[j]}
                assert short <= long_ or long_ <= short  # the lowest ranks of one ranking: nested
        for i, n in enumerate(lengths):  # k_s from stratum s of {1..n}, all of a group's from one u_s
            ks = [sum(m) for m in draws[i]]
            assert all(s * n // samples + 1 <= k <= (s + 1) * n // samples + 1 for s, k in enumerate(ks))
    # independent draws would often not nest: the property above is not automatic
    ind = mask_draws([4, 6], samples, 0)
    nested = [{j for j in range(4) if a[j]} <= {j for j in range(4) if b[j]} or
              {j for j in range(4) if b[j]} <= {j for j in range(4) if a[j]} for a, b in zip(*ind, strict=True)]
    assert not all(nested)


class MultiJoint(nn.Module):
    """The joint model of test_estimators.py for continuations of several lengths: a row's real length
    (its tokens before the padding document) picks the joint of its continuation's length."""

    def __init__(self, joints: dict[int, np.ndarray], ctx_len: int):
        super().__init__()
        self.joints, self.c = joints, ctx_len
        self.p = nn.Parameter(torch.zeros(1))
        self.index = {t: a for a, t in enumerate(ALPHABET)}
        self.cache: dict[tuple, torch.Tensor] = {}

    def logprobs(self, cont: tuple[int, ...]) -> torch.Tensor:
        """[n, |ALPHABET|] log p(x_i = . | the visible continuation tokens), for a continuation as read."""
        if cont not in self.cache:
            known = {i: self.index[t] for i, t in enumerate(cont) if t != MASK}
            joint = self.joints[len(cont)]
            self.cache[cont] = torch.tensor(np.log([conditional(joint, i, known) for i in range(len(cont))]),
                                            dtype=torch.float32)
        return self.cache[cont]

    def forward(self, x, causal=True, doc_ids=None, prefix_len=None):
        b, t = x.shape
        out = torch.full((b, t, V), -1e4)
        for r in range(b):
            end = int((doc_ids[r] == 0).sum()) if doc_ids is not None else t
            lp = self.logprobs(tuple(x[r, self.c:end].tolist()))
            out[r, self.c - 1:end - 1, ALPHABET] = lp
        return out + self.p


@pytest.fixture(scope="module")
def toy():
    joints = {2: random_joint(2, seed=11), 4: random_joint(4, seed=12)}
    ids = {"ctx": CTX, **{"ctx" + k: CTX + [ALPHABET[a] for a in v] for k, v in CHOICES.items()},
           **{k: [ALPHABET[a] for a in v] for k, v in CHOICES.items()}}
    s = Scorer(MultiJoint(joints, 1 + len(CTX)), _Tok(ids), bos_id=BOS, mask_id=MASK, seq_len=16)
    exact = {k: exact_elbo(joints[len(v)], v) for k, v in CHOICES.items()}
    x = CHOICES["a"]
    alone = sum(math.log(conditional(joints[2], i, {})[x[i]]) for i in range(2))  # k = 2: both masked
    beside = sum(math.log(conditional(joints[2], i, {1 - i: x[1 - i]})[x[i]]) for i in range(2))  # k = 1
    return s, exact, {"alone": alone, "beside": beside}


def grouped_estimates(s: Scorer, items: int, samples: int) -> dict[str, np.ndarray]:
    """Each choice's estimate over ``items`` copies of the item, each copy its own group (iid copies)."""
    pairs = [("ctx", k) for _ in range(items) for k in CHOICES]
    groups = [i for i in range(items) for _ in CHOICES]
    got = s.score(pairs, "md", samples=samples, seed=0, greedy=False, groups=groups)
    return {k: np.array([g.logprob for g in got[j::len(CHOICES)]]) for j, k in enumerate(CHOICES)}


def wrong_sharing(lengths, samples, seed, groups=None):
    """A plausible mistake: one k per draw for the whole group, from the strata of its longest choice, cut to
    each choice's length (then each masks its k lowest-ranked positions, as ``mask_draws`` does). A shorter
    choice's k is then not uniform on {1..n}."""
    g = torch.Generator().manual_seed(seed)
    members: dict[int, list[int]] = {}
    for i, group in enumerate(range(len(lengths)) if groups is None else groups):
        members.setdefault(group, []).append(i)
    out = [[] for _ in lengths]
    for idx in members.values():
        longest = max(lengths[i] for i in idx)
        ks = stratified_k(torch.rand(1, samples, generator=g, dtype=torch.float64), torch.tensor([longest]))[0]
        for k in ks.tolist():
            rank = torch.rand(longest, generator=g, dtype=torch.float64)
            for i in idx:
                chosen = set(torch.argsort(rank[:lengths[i]])[:min(k, lengths[i])].tolist())
                out[i].append([j in chosen for j in range(lengths[i])])
    return out


def test_grouped_estimates_are_unbiased_and_a_wrong_sharing_rule_is_not(toy, monkeypatch):
    s, exact, terms = toy
    est = grouped_estimates(s, items=200, samples=4)
    for k, v in est.items():
        se = v.std(ddof=1) / math.sqrt(len(v))
        assert abs(v.mean() - exact[k]) < 4 * se, (k, v.mean(), exact[k], se)
    # for n = 2 the ELBO is (k=1 term + k=2 term) / 2; the wrong rule takes k = min(s + 1, 2) over the four
    # strata of the 4-token choices, so its expectation is (k=1 term + 3 k=2 terms) / 4
    assert exact["a"] == pytest.approx((terms["beside"] + terms["alone"]) / 2)
    wrong = (terms["beside"] + 3 * terms["alone"]) / 4
    monkeypatch.setattr(scoring, "mask_draws", wrong_sharing)
    bad = grouped_estimates(s, items=200, samples=4)["a"]  # the 2-token choice beside 4-token ones
    se = bad.std(ddof=1) / math.sqrt(len(bad))
    assert abs(bad.mean() - wrong) < 4 * se, (bad.mean(), wrong, se)
    assert abs(bad.mean() - exact["a"]) > 10 * se, (bad.mean(), exact["a"], se)  # far outside the error


def test_shared_masks_steady_the_difference_between_choices_that_share_tokens():
    """Two 4-token choices that differ in their last token, under a model that ignores the context: with
    shared masks only the last position's term differs; drawn apart, the whole estimates' noise does."""
    torch.manual_seed(0)
    model = FixedDist(V)
    b, c = [10, 11, 12, 10], [10, 11, 12, 11]
    s = Scorer(model, _Tok({"ctx": CTX, "ctxb": CTX + b, "ctxc": CTX + c, "b": b, "c": c}), bos_id=BOS,
               mask_id=MASK, seq_len=16)
    pairs = [("ctx", "b"), ("ctx", "c")] * 200
    groups = [i for i in range(200) for _ in range(2)]
    spread = {}
    for name, grp in (("independent", None), ("shared", groups)):
        got = s.score(pairs, "md", samples=2, seed=1, greedy=False, groups=grp)
        d = np.array([x.logprob - y.logprob for x, y in zip(got[0::2], got[1::2], strict=True)])
        spread[name] = d.std()
    lp = torch.log_softmax(model.logits.detach(), -1)
    assert np.mean(d) == pytest.approx(float(lp[10] - lp[11]), abs=4 * spread["shared"] / np.sqrt(200))
    assert spread["shared"] < 0.5 * spread["independent"], spread


def test_groups_must_match_the_pairs(toy):
    s, _, _ = toy
    with pytest.raises(ValueError, match="2 groups for 3 pairs"):
        s.score([("ctx", "a")] * 3, "md", samples=2, groups=[0, 0])


# --------------------------------------------------------------------------- the MC standard error


def S(draws: tuple[float, ...], greedy: bool | None = None) -> Score:
    return Score(float(np.mean(draws)), 1, greedy, 0.0, tuple(draws))


def test_p_correct_is_phi_of_the_paired_difference():
    d = np.array([1.0, 2.0, 3.0, 4.0])
    z = d.mean() / (d.std(ddof=1) / 2)
    assert p_correct([tuple(d), (0.0,) * 4], 0, True) == pytest.approx(0.5 * math.erfc(-z / math.sqrt(2)))
    assert p_correct([(0.0,) * 4, tuple(d)], 0, False) == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))
    # the rival is the strongest other choice by mean; the weaker one is ignored
    p = p_correct([(1.0, 3.0), (2.0, 2.0), (-9.0, -9.0)], 0, False)
    assert p == pytest.approx(0.5)
    # per byte: scaled before the difference
    assert p_correct([(2.0, 6.0), (2.0, 2.0)], 0, True, scale=[2.0, 1.0]) == pytest.approx(0.5)  # d = (-1, 1)
    # no spread (exact one-token continuations): the decision as made; one draw: unknown
    assert p_correct([(1.0, 1.0), (1.0, 1.0)], 0, True) == 1.0
    assert p_correct([(1.0, 1.0), (2.0, 2.0)], 0, False) == 0.0
    assert math.isnan(p_correct([(1.0,), (2.0,)], 0, False))


def test_mc_standard_error_is_the_binomial_of_each_items_flip_probability():
    res = with_mc_standard_errors({"n": 4, "chance": 0.5}, {"acc": [0.5, 1.0, 0.0, 0.9]})
    want = math.sqrt(0.25 + 0.09) / 4
    assert res["acc_mc_se"] == pytest.approx(want) and res["score_mc_se"] == pytest.approx(200 * want)
    assert "acc_norm_mc_se" not in res


def test_tasks_add_mc_errors_only_when_scores_carry_draws():
    items = [Item([Request("Q:", " a"), Request("Q:", " bbbb")], 0, {}) for _ in range(3)]
    scores = [[S((-1.0, -2.0)), S((-1.5, -2.5))],  # d = (0.5, 0.5): no spread, correct -> p = 1
              [S((-1.0, -3.0)), S((-2.0, -2.0))],  # d = (1, -1): mean 0 -> p = 1/2 (a tie: correct here)
              [S((-4.0, -4.0)), S((-1.0, -1.0))]]  # wrong, no spread -> p = 0
    out = ChoiceTask("mc", items, {}).score(items, scores)
    assert out["acc"] == pytest.approx(2 / 3) and out["acc_mc_se"] == pytest.approx(0.5 / 3)
    assert out["score_mc_se"] == pytest.approx(100 * out["acc_mc_se"] / 0.5)
    assert out["acc_se"] == pytest.approx(math.sqrt(2 / 3 * 1 / 3 / 3))  # unchanged meaning
    assert "acc_norm_mc_se" in out and "score_norm_mc_se" in out
    exact = [[Score(-1.0, 1, None), Score(-2.0, 1, None)] for _ in items]
    assert "acc_mc_se" not in ChoiceTask("mc", items, {}).score(items, exact)

    pairs = PairsTask("blimp", items, {}).score(items, scores)
    assert pairs["acc"] == pytest.approx(1 / 3) and pairs["acc_mc_se"] == pytest.approx(0.5 / 3)  # ties lose
    partial = PartialTask("wino", items, {}).score(items, scores)
    assert partial["acc_mc_se"] == pytest.approx(0.5 / 3)
    cloze_items = [Item([Request("c", " w")], 0, {}) for _ in range(2)]
    cloze_scores = [[S((-1.0, -3.0), True)], [S((-1.0, -2.0), False)]]
    cloze = ClozeTask("lambada", cloze_items, {}).score(cloze_items, cloze_scores)
    assert cloze["acc_mc_se"] == 0.0  # greedy exact match does not depend on the mask draws


def test_evaluator_groups_an_items_requests_and_keeps_the_mc_error(monkeypatch):
    from dualobj import config
    from dualobj.evaluate.evaluator import Evaluator, headline_of

    items = [Item([Request("Q:", " a"), Request("Q:", " b"), Request("Q:", " c")], 1, {}),
             Item([Request("R:", " x"), Request("R:", " y")], 0, {})]
    task = ChoiceTask("toy", items, {})
    seen = {}

    class FakeScorer:
        def score(self, pairs, mode, estimator, samples, seed, greedy=True, groups=None):
            seen[mode] = groups
            draws = mode == "md"
            return [Score(-float(i), 1, None, 0.0, (-float(i), -float(i) - (i % 2)) if draws else ())
                    for i in range(len(pairs))]

    ev = Evaluator.__new__(Evaluator)
    ev.e = config.EvalConfig(modes=["ar", "md"], limit=None)
    ev.scorer = FakeScorer()
    monkeypatch.setattr(ev, "_task", lambda name: task, raising=False)
    monkeypatch.setattr(ev, "recipe", lambda mode: {"mode": mode}, raising=False)
    res = ev.run_task("toy")
    assert seen["md"] == [0, 0, 0, 1, 1]
    assert "acc_mc_se" in res["results"]["md"] and "acc_mc_se" not in res["results"]["ar"]
    head = headline_of(res)
    assert head["eval_mc_se/toy/md"] == res["results"]["md"]["score_mc_se"] and "eval_mc_se/toy/ar" not in head
