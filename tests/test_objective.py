"""The dual objective: exact alpha share, the masking process, 1/t weights, MNTP alignment, the ELBO."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from dualobj.config import ObjectiveConfig
from dualobj.metrics import ar_nll, md_elbo
from dualobj.objective import DualObjective, ar_rows, mask_for_diffusion

MASK, BOS = 4, 1
SPECIAL = torch.tensor([0, 1, 2, 3, 4])


def dual_loss(model, w, n_ar, *, generator=None, denom_rows=None, **objective):
    """The dual objective's loss with ObjectiveConfig fields given as keywords (z-loss off unless given)."""
    cfg = ObjectiveConfig(**{"z_loss": 0.0, **objective})
    obj = DualObjective(cfg, bos_id=BOS, mask_id=MASK, special_ids=SPECIAL)
    return obj.loss(model, w, n_ar, generator=generator, denom_rows=denom_rows)


PAPER_ALPHAS = [0, 1 / 256, 1 / 64, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 15 / 16, 63 / 64, 255 / 256, 1]


@pytest.mark.parametrize("alpha", PAPER_ALPHAS + [0.3, 1 / 3])
@pytest.mark.parametrize("batch", [1, 3, 32])
def test_ar_share_is_exactly_alpha(alpha, batch):
    total = 0
    for step in range(500):
        n = ar_rows(step, batch, alpha)
        assert 0 <= n <= batch
        total += n
        seen = (step + 1) * batch
        assert abs(total - alpha * seen) <= 0.5 + 1e-9  # never off by more than half a sequence
    assert total == math.floor(alpha * 500 * batch + 0.5)


def test_ar_share_does_not_depend_on_how_steps_are_split():
    # 4 steps of 8 sequences assign the same AR count as the cumulative rule over 32 sequences.
    assert sum(ar_rows(s, 8, 0.3) for s in range(4)) == math.floor(0.3 * 32 + 0.5)


def windows(b=256, length=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(5, 500, (b, length + 1), generator=g)
    w[:, 0] = BOS
    w[:, min(30, length // 2)] = BOS
    return w


def test_mask_count_is_stochastic_rounding_of_t_times_length():
    w = windows(4000, 64)
    t = torch.full((4000,), 0.3)
    m = mask_for_diffusion(w, MASK, SPECIAL, torch.Generator().manual_seed(0), t=t)
    # k = max(1, floor(0.3 * 64 + u)) = 19 or 20, with P(20) = frac(19.2) = 0.2
    assert set(m.n_masked.tolist()) <= {19, 20}
    assert abs((m.n_masked == 20).float().mean().item() - 0.2) < 0.03
    tiny = mask_for_diffusion(w[:100], MASK, SPECIAL, torch.Generator().manual_seed(0), t=torch.zeros(100))
    assert tiny.n_masked.min().item() == 1  # at least one target per row


def test_mask_fraction_is_uniform_and_inputs_only_change_at_masked_positions():
    w = windows(4000, 64)
    m = mask_for_diffusion(w, MASK, SPECIAL, torch.Generator().manual_seed(1))
    frac = m.n_masked.float() / 64
    assert abs(frac.mean().item() - 0.5) < 0.02
    assert abs((frac < 0.25).float().mean().item() - 0.25) < 0.03  # U(0,1) quartiles
    x = w[:, :-1]
    changed = m.inputs != x
    assert torch.all(m.inputs[changed] == MASK)
    assert not changed[:, 0].any()  # the first input is never a target, never masked
    assert not (m.inputs[:, 30] == MASK).any()  # <s> is never masked
    assert torch.all(m.inputs[:, 30] == BOS)


def test_weights_are_one_over_realised_fraction_at_mntp_targets():
    w = windows(512, 64)
    m = mask_for_diffusion(w, MASK, SPECIAL, torch.Generator().manual_seed(2))
    t_hat = (m.n_masked.float() / 64) * (1 - 1e-4) + 1e-4
    torch.testing.assert_close(m.t_hat, t_hat)
    masked_input = m.inputs == MASK
    # MNTP: position i is a target iff input i+1 is masked (the last position: iff the unseen next token is).
    assert torch.equal(m.weights[:, :-1] > 0, masked_input[:, 1:])
    targets = m.weights > 0
    assert torch.equal(targets.sum(1), m.n_masked)
    torch.testing.assert_close(m.weights[targets], (1 / t_hat)[:, None].expand_as(m.weights)[targets])
    # E[sum of weights] / L = 1: each token is counted once in expectation (unbiased ELBO weights).
    big = mask_for_diffusion(windows(8000, 64, seed=3), MASK, SPECIAL, torch.Generator().manual_seed(3))
    ratio = big.weights.sum(1) / (64 - (windows(8000, 64, seed=3)[:, 1:] == BOS).sum(1))
    assert abs(ratio.mean().item() - 1) < 0.03


class Oracle(nn.Module):
    """Knows the windows: puts all mass on token i+1 at position i, whatever the input shows."""

    def __init__(self, w: torch.Tensor, vocab: int = 500):
        super().__init__()
        self.w, self.vocab = w, vocab
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, x, causal=True, doc_ids=None):
        nxt = self.w[: x.shape[0], 1: x.shape[1] + 1]
        return nn.functional.one_hot(nxt, self.vocab).float() * 30 + self.p


@pytest.mark.parametrize("n_ar", [0, 3, 8])
def test_mntp_alignment_output_i_predicts_token_i_plus_1(n_ar):
    w = windows(8, 32)
    kw = dict(generator=torch.Generator().manual_seed(0))
    good = dual_loss(Oracle(w), w, n_ar, **kw).loss.item()
    shifted = torch.cat([w[:, :1], w[:, :-1]], 1)  # an oracle off by one position
    bad = dual_loss(Oracle(shifted), w, n_ar, **kw).loss.item()
    assert good < 1e-6 and bad > 1.0


class Fixed(nn.Module):
    """Ignores its input: the same categorical distribution at every position (closed-form NLL)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, x, causal=True, doc_ids=None):
        return self.logits.expand(x.shape[0], x.shape[1], -1)


def test_ar_loss_is_plain_cross_entropy_times_scale():
    torch.manual_seed(0)
    model = Fixed(torch.randn(500))
    w = windows(6, 16)
    exact = -torch.log_softmax(model.logits, -1)[w[:, 1:]].mean()
    out = dual_loss(model, w, 6, generator=torch.Generator(), ar_loss_scale=2.0)
    torch.testing.assert_close(out.loss, 2 * exact)
    nll, n = ar_nll(model, w, BOS)
    assert n == 6 * 16 and abs(nll / n - exact.item()) < 1e-5


def test_md_elbo_of_a_fixed_distribution_equals_its_nll_within_error():
    torch.manual_seed(0)
    model = Fixed(torch.randn(500) * 2)
    w = torch.randint(5, 500, (400, 33))  # no special tokens: every token can be a target
    exact = float(-torch.log_softmax(model.logits.detach(), -1)[w[:, 1:]].mean())
    errors = []
    for k in (1, 8):
        est, se = md_elbo(model, w, bos_id=BOS, mask_id=MASK, special_ids=SPECIAL, samples=k, seed=0)
        assert abs(est - exact) < 4 * se, (k, est, exact, se)
        errors.append(se)
    assert errors[1] < errors[0]  # more samples, smaller error


def test_z_loss_and_micro_batches_sum_to_the_full_batch():
    torch.manual_seed(0)
    model = Fixed(torch.randn(500))
    w = windows(8, 16)
    kw = dict(z_loss=1e-2)
    full = dual_loss(model, w, 8, generator=torch.Generator(), **kw).loss
    halves = sum(dual_loss(model, w[i:i + 4], 4, generator=torch.Generator(), denom_rows=8, **kw).loss
                 for i in (0, 4))
    torch.testing.assert_close(full, halves)
    lse2 = torch.logsumexp(model.logits, -1) ** 2
    plain = dual_loss(model, w, 8, generator=torch.Generator(), **{**kw, "z_loss": 0.0}).loss
    torch.testing.assert_close(full - plain, 1e-2 * lse2)


def _obj(**kw):
    from dualobj.config import ObjectiveConfig

    return ObjectiveConfig(**kw)


def test_alpha_schedules_follow_their_definitions():
    from dualobj.objective import alpha_at

    n = 101
    lin = [alpha_at(_obj(alpha=0.25, alpha_schedule="linear", alpha_start=1.0), s, n, 0) for s in range(n)]
    assert lin[0] == 1.0 and lin[-1] == pytest.approx(0.25) and lin[50] == pytest.approx(0.625)
    assert all(a >= b for a, b in zip(lin, lin[1:], strict=False))
    cos = [alpha_at(_obj(alpha=0.0, alpha_schedule="cosine", alpha_start=1.0), s, n, 0) for s in range(n)]
    assert cos[0] == pytest.approx(1.0) and cos[-1] == pytest.approx(0.0, abs=1e-12) and cos[50] == pytest.approx(0.5)
    assert cos[25] == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    step = _obj(alpha=0.1, alpha_schedule="step", alpha_start=0.9, alpha_step_epoch=2.0)
    assert [alpha_at(step, 0, n, e) for e in (0.0, 1.99, 2.0, 7.0)] == [0.9, 0.9, 0.1, 0.1]
    cap = _obj(alpha_schedule="ar_epochs_capped", alpha_start=1.0, ar_epochs_cap=16)
    assert [alpha_at(cap, 0, n, e) for e in (0.0, 8.0, 16.0, 32.0, 64.0)] == [1.0, 1.0, 1.0, 0.5, 0.25]
    assert alpha_at(_obj(alpha=0.3), 7, n, 3.0) == 0.3


def test_scheduled_ar_rows_add_up_to_the_mean_alpha():
    from dualobj.objective import alpha_prefix, ar_rows_from_prefix

    o = _obj(alpha=0.0, alpha_schedule="cosine", alpha_start=1.0)
    total, b = 200, 16
    p = alpha_prefix(o, total, lambda s: s / 10)
    rows = [ar_rows_from_prefix(p, s, b) for s in range(total)]
    assert all(0 <= r <= b for r in rows)
    assert rows[0] == b and rows[-1] == 0  # pure AR first, pure MD last
    assert sum(rows) == math.floor(p[-1] * b + 0.5)
    assert abs(sum(rows) / (total * b) - p[-1] / total) < 1 / (total * b)
    const = alpha_prefix(_obj(alpha=0.3), total, lambda s: 0.0)
    assert [ar_rows_from_prefix(const, s, b) for s in range(total)] == [ar_rows(s, b, 0.3) for s in range(total)]


def test_fused_ce_and_log_z_match_autograd_on_the_log_softmax():
    from dualobj.objective import ce_and_lse

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 11, (3, 5), generator=g)
    ce, lse = ce_and_lse(logits, y)
    logp = torch.log_softmax(logits, -1)
    torch.testing.assert_close(ce, -logp.gather(-1, y[..., None]).squeeze(-1).float())
    torch.testing.assert_close(lse, torch.logsumexp(logits, -1).float())
    # Gradients of a loss that uses both outputs, against autograd through log_softmax / logsumexp.
    w1, w2 = torch.rand(3, 5, generator=g), torch.rand(3, 5, generator=g)
    (ce * w1 + lse.pow(2) * w2).sum().backward()
    fused = logits.grad.clone()
    logits.grad = None
    (-logp.gather(-1, y[..., None]).squeeze(-1) * w1 + torch.logsumexp(logits, -1).pow(2) * w2).sum().backward()
    torch.testing.assert_close(fused, logits.grad, rtol=1e-5, atol=1e-6)  # fp32 inside, fp64 reference
    # bf16 logits (autocast) get a bf16 gradient, as autograd requires.
    lb = logits.detach().bfloat16().requires_grad_()
    ce_and_lse(lb, y)[0].sum().backward()
    assert lb.grad.dtype == torch.bfloat16
