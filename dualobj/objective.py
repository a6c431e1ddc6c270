"""The dual objective: which sequences are AR, how MD inputs are masked, and the weighted loss.

Both objectives are next-token predictors (MNTP): the output at position i predicts token i+1.
A batch is a [B, L+1] tensor of token windows; inputs are w[:, :L], targets w[:, 1:].

* AR rows: causal attention, clean input, every position is a target (weight ``ar_loss_scale``).
* MD rows: bidirectional attention; per row t ~ U(0,1), k = max(1, floor(t L + u)) of the L target
  tokens w[:, 1:] (never special tokens) are masked; position i is a target when token i+1 is
  masked, with weight 1/t_hat (t_hat = realised mask fraction); the last target token lies past
  the input, so masking it only makes it a target. Dividing by all L positions gives an unbiased
  per-token estimate of the MDLM ELBO.

All AR and MD rows share one forward pass (the attention mask is per row), and the loss is the
sum of per-row losses over B rows, so the AR rows' share of the gradient is n_AR / B per step and
alpha over training (``ar_rows``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dualobj.model import document_ids


def ar_rows(step: int, batch_size: int, alpha: float) -> int:
    """AR sequences in optimizer step ``step`` by error diffusion: cumulative count = round(alpha * n).

    Over any prefix of training the AR share differs from alpha by at most 1/(2 n) sequences, on any
    number of devices, and the assignment is a pure function of the step (exact resume).
    """
    def cum(n: int) -> int:
        return math.floor(alpha * n + 0.5)

    return cum((step + 1) * batch_size) - cum(step * batch_size)


def alpha_at(o, step: int, total_steps: int, epoch: float) -> float:
    """The AR weight at ``step`` under ``o.alpha_schedule`` (``o`` an ObjectiveConfig).

    * constant: ``alpha`` throughout.
    * linear / cosine: from ``alpha_start`` at the first step to ``alpha`` at the last.
    * step: ``alpha_start`` before epoch ``alpha_step_epoch``, ``alpha`` from then on.
    * ar_epochs_capped: min(alpha_start, ar_epochs_cap / epochs so far): the paper's α·R ≈ 16 rule applied
      as training goes, so AR is used fully while the data is fresh and fades as repetitions pile up.
    """
    kind = o.alpha_schedule
    frac = step / max(1, total_steps - 1)
    if kind == "constant":
        return o.alpha
    if kind == "linear":
        return o.alpha_start + (o.alpha - o.alpha_start) * frac
    if kind == "cosine":
        return o.alpha + (o.alpha_start - o.alpha) * (1 + math.cos(math.pi * frac)) / 2
    if kind == "step":
        return o.alpha_start if epoch < o.alpha_step_epoch else o.alpha
    if kind == "ar_epochs_capped":
        return min(o.alpha_start, o.ar_epochs_cap / epoch) if epoch > 0 else o.alpha_start
    raise ValueError(f"unknown alpha schedule {kind!r}")


def alpha_prefix(o, total_steps: int, epoch_of_step) -> list[float]:
    """P[s] = sum of α over steps < s (length total_steps + 1); AR rows of step s follow by error diffusion."""
    p = [0.0]
    for s in range(total_steps):
        p.append(p[-1] + alpha_at(o, s, total_steps, epoch_of_step(s)))
    return p


def ar_rows_from_prefix(prefix: list[float], step: int, batch_size: int) -> int:
    """Like ``ar_rows`` for a time-varying α: cumulative AR rows = round(B * sum of α so far)."""
    return math.floor(prefix[step + 1] * batch_size + 0.5) - math.floor(prefix[step] * batch_size + 0.5)


@dataclass
class Masked:
    """A masked-diffusion input and its per-position target weights."""

    inputs: torch.Tensor  # [B, L] input ids with <mask> at masked positions
    weights: torch.Tensor  # [B, L] float: 1/t_hat at MNTP targets, 0 elsewhere
    t_hat: torch.Tensor  # [B] realised mask fraction (floored)
    n_masked: torch.Tensor  # [B] masked tokens per row


@dataclass
class Draws:
    """The uniform draws that decide one row's masking: noise level t, rounding u, per-token scores.

    Drawn for a whole optimizer step at once and sliced per row, so a row's mask does not depend on
    how the batch is split into micro-batches or across devices.
    """

    t: torch.Tensor  # [B]
    u: torch.Tensor  # [B]
    scores: torch.Tensor  # [B, L]

    @staticmethod
    def sample(b: int, length: int, generator: torch.Generator) -> Draws:
        return Draws(torch.rand(b, generator=generator), torch.rand(b, generator=generator),
                     torch.rand(b, length, generator=generator))

    def __getitem__(self, rows: slice) -> Draws:
        return Draws(self.t[rows], self.u[rows], self.scores[rows])


def mask_targets(window: torch.Tensor, k: torch.Tensor, scores: torch.Tensor, mask_id: int,
                 special_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask the ``k[b]`` non-special targets of row b with the smallest ``scores`` (uniform scores: a uniform
    random subset). Returns the inputs [B, L] (``<mask>`` where the *next* token is a masked target: MNTP)
    and which of the L targets ``window[:, 1:]`` are masked [B, L]; the last target lies past the input."""
    tgt = window[:, 1:]
    scores = scores.masked_fill(torch.isin(tgt, special_ids), float("inf"))
    ranks = scores.argsort(dim=1).argsort(dim=1)  # rank of each score within its row
    masked = ranks < k[:, None]
    inputs = window[:, :-1].clone()
    inputs[:, 1:] = torch.where(masked[:, :-1], torch.full_like(inputs[:, 1:], mask_id), inputs[:, 1:])
    return inputs, masked


def mask_for_diffusion(
    window: torch.Tensor,
    mask_id: int,
    special_ids: torch.Tensor,
    generator: torch.Generator | None = None,
    min_frac: float = 1e-4,
    t: torch.Tensor | None = None,
    draws: Draws | None = None,
) -> Masked:
    """Mask each row of ``window`` [B, L+1] per the absorbing diffusion process (see module doc)."""
    b, lp1 = window.shape
    length = lp1 - 1
    tgt = window[:, 1:]  # the L tokens the model is asked about
    d = draws or Draws.sample(b, length, generator)
    t = d.t if t is None else t
    u, scores = d.u, d.scores
    eligible = (~torch.isin(tgt, special_ids)).sum(1)
    k = torch.clamp(torch.floor(t * length + u), min=1).long()
    k = torch.minimum(k, eligible)
    inputs, masked = mask_targets(window, k, scores, mask_id, special_ids)
    t_hat = (k.float() / length) * (1 - min_frac) + min_frac
    weights = masked.float() / t_hat[:, None]
    return Masked(inputs=inputs, weights=weights, t_hat=t_hat, n_masked=k)


@dataclass
class LossOut:
    loss: torch.Tensor  # scalar to backpropagate (sum over rows / (B_total * L))
    ar_ce_sum: torch.Tensor  # summed CE over AR targets (for logging)
    ar_tokens: int
    md_loss_sum: torch.Tensor  # summed 1/t-weighted CE over MD rows, per-token normalised per row
    md_rows: int
    z_loss_sum: torch.Tensor


class DualObjective:
    """α·AR + (1−α)·MD over a batch: built once per run from its ``ObjectiveConfig`` and the tokenizer's ids.

    ``token_losses`` replaces ``ce_and_lse`` (e.g. by a compiled copy); the AR/MD split of each step
    (``n_ar``) comes from the trainer, which owns the α schedule's running sum.
    """

    def __init__(self, cfg, *, bos_id: int, mask_id: int, special_ids: torch.Tensor, token_losses=None):
        self.cfg = cfg
        self.bos_id, self.mask_id, self.special_ids = bos_id, mask_id, special_ids
        self.token_losses = token_losses or ce_and_lse

    def inputs(self, window: torch.Tensor, n_ar: int, draws: Draws | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs and per-target weights of ``window`` [B, L+1] whose first ``n_ar`` rows are AR."""
        b, lp1 = window.shape
        x = window[:, :-1]
        weights = torch.zeros(b, lp1 - 1)
        inputs = x
        if n_ar < b:
            m = mask_for_diffusion(window[n_ar:], self.mask_id, self.special_ids, generator, self.cfg.min_mask_frac,
                                   draws=draws[n_ar:] if draws is not None else None)
            inputs = torch.cat([x[:n_ar], m.inputs], 0)
            weights[n_ar:] = m.weights
        weights[:n_ar] = self.cfg.ar_loss_scale
        return inputs, weights

    def loss(self, model, window: torch.Tensor, n_ar: int, *, draws: Draws | None = None,
             generator: torch.Generator | None = None, denom_rows: int | None = None, autocast=None) -> LossOut:
        """Loss for one (micro-)batch whose first ``n_ar`` rows are AR and the rest MD.

        ``denom_rows`` is the number of rows in the whole optimizer step, so micro-batches sum to the
        loss of the full batch. ``draws`` (one per row of ``window``) fix the masks; without them they
        are drawn from ``generator``.
        """
        b, lp1 = window.shape
        length = lp1 - 1
        x, y = window[:, :-1], window[:, 1:]
        doc_ids = document_ids(x, self.bos_id)
        inputs, weights = self.inputs(window, n_ar, draws, generator)
        causal = torch.arange(b) < n_ar
        dev = _device(model)
        inputs, y, weights, causal, doc_ids = (v.to(dev) for v in (inputs, y, weights, causal, doc_ids))
        with autocast or contextlib.nullcontext():
            logits = model(inputs, causal, doc_ids)
        ce, lse = self.token_losses(logits, y)
        row_loss = (ce * weights).sum(1)  # [B]
        row_z = (lse.pow(2) * weights).sum(1)
        denom = (denom_rows or b) * length
        loss = (row_loss.sum() + self.cfg.z_loss * row_z.sum()) / denom
        return LossOut(
            loss=loss,
            ar_ce_sum=ce[:n_ar].sum().detach(),
            ar_tokens=n_ar * length,
            md_loss_sum=(row_loss[n_ar:] / length).sum().detach(),
            md_rows=b - n_ar,
            z_loss_sum=(row_z.detach() / length).sum(),
        )


def ce_and_lse(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy and log-partition log Z (for the z-loss) of ``logits`` [..., V] at targets ``y``.

    One fp32 log-softmax serves both (log Z = logit - log p at any vocabulary entry), and the hand-written
    backward makes one pass, grad = (g_ce + g_lse) softmax - g_ce onehot, where autograd would fill and add
    three full-size gradients: about 1.5x faster eager and 1.6x compiled than autograd's version (measured
    on 4096 x 8192 bf16 logits), on the head that dominates small models.
    """
    return _CrossEntropyLogZ.apply(logits, y)


class _CrossEntropyLogZ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, y):
        lf = logits.float()
        logp = F.log_softmax(lf, dim=-1)
        ce = -logp.gather(-1, y[..., None]).squeeze(-1)
        ctx.save_for_backward(logp, y)
        ctx.dtype = logits.dtype
        return ce, lf[..., 0] - logp[..., 0]

    @staticmethod
    def backward(ctx, g_ce, g_lse):
        logp, y = ctx.saved_tensors
        # softmax = exp(log p) in place: log p is not needed again (a second backward through the same graph
        # is refused by autograd's version check on saved tensors), and a fresh [N, V] buffer costs a third
        # of this backward on CPU (page faults on first touch).
        grad = logp.exp_().mul_((g_ce + g_lse)[..., None])
        grad.scatter_add_(-1, y[..., None], -g_ce[..., None])
        return grad.to(ctx.dtype), None


def _device(model) -> torch.device:
    return next(model.parameters()).device
