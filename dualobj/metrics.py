"""Validation metrics of a model on held-out windows, used by training validation and ``dualobj eval``.

* AR NLL: exact next-token negative log-likelihood in nats per target token (causal attention).
* MD ELBO: a Monte-Carlo estimate of the masked-diffusion negative ELBO in nats per target token
  (bidirectional attention), an upper bound on the NLL in expectation, with its standard error over
  windows. ``samples`` noise levels per window, stratified over (0, 1).
* bits per byte: nats / ln 2 / the corpus's mean UTF-8 bytes per validation token.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from dualobj.model import document_ids
from dualobj.objective import mask_for_diffusion


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def ar_nll(model, windows: torch.Tensor, bos_id: int, autocast=None) -> tuple[float, int]:
    """Summed next-token NLL (nats) over all targets of ``windows`` [N, L+1], and the target count."""
    windows = windows.to(_device(model))
    x, y = windows[:, :-1], windows[:, 1:]
    with autocast or contextlib.nullcontext():
        logits = model(x, True, document_ids(x, bos_id))
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
    return float(ce), y.numel()


@torch.no_grad()
def md_elbo(
    model, windows: torch.Tensor, *, bos_id: int, mask_id: int, special_ids: torch.Tensor,
    samples: int = 4, seed: int = 0, autocast=None, min_mask_frac: float = 1e-4,
) -> tuple[float, float]:
    """MD ELBO estimate in nats/token (an upper bound on the NLL) and its standard error.

    ``samples`` noise levels per window, stratified over (0, 1) so the estimate is stable.
    """
    g = torch.Generator().manual_seed(seed)
    n, lp1 = windows.shape
    length = lp1 - 1
    dev = _device(model)
    per_sample = []
    for s in range(samples):
        t = (s + torch.rand(n, generator=g)) / samples  # stratified t
        m = mask_for_diffusion(windows, mask_id, special_ids, g, min_mask_frac, t=t)
        x = m.inputs.to(dev)
        with autocast or contextlib.nullcontext():
            logits = model(x, False, document_ids(x, bos_id))
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1).to(dev),
                             reduction="none").view(n, length)
        per_sample.append(((ce * m.weights.to(dev)).sum(1) / length).cpu())  # [N] per-token ELBO per window
    vals = torch.stack(per_sample, 1)  # [N, S]
    per_window = vals.mean(1)
    mean = float(per_window.mean())
    se = float(per_window.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return mean, se


def validation_metrics(model, windows: torch.Tensor, corpus, *, modes=("ar", "md"), batch_size: int,
                       md_samples: int, seed: int, min_mask_frac: float, autocast=None) -> dict[str, float]:
    """AR NLL / perplexity / bits per byte and MD ELBO / its SE / bits per byte of ``windows`` [N, L+1].

    ``corpus`` gives the special ids and bytes per validation token (a ``TokenizedCorpus``). Keys:
    ar_nll, ar_ppl, ar_bpb (mode ar); md_elbo, md_elbo_se, md_bpb, md_bpb_se (mode md).
    """
    out: dict[str, float] = {}
    ln2, bpt = math.log(2), corpus.bytes_per_token_val
    if "ar" in modes:
        nll, n = 0.0, 0
        for chunk in windows.split(batch_size):
            s, k = ar_nll(model, chunk, corpus.bos_id, autocast)
            nll, n = nll + s, n + k
        ar = nll / n
        out.update(ar_nll=ar, ar_ppl=math.exp(min(ar, 50)), ar_bpb=ar / ln2 / bpt)
    if "md" in modes:
        special = torch.tensor(corpus.special_ids, dtype=torch.long)
        elbo, se = md_elbo(model, windows, bos_id=corpus.bos_id, mask_id=corpus.mask_id, special_ids=special,
                           samples=md_samples, seed=seed, autocast=autocast, min_mask_frac=min_mask_frac)
        out.update(md_elbo=elbo, md_elbo_se=se, md_bpb=elbo / ln2 / bpt, md_bpb_se=se / ln2 / bpt)
    return out
