"""Validation metrics of a model on held-out windows, used by training validation and ``dualobj eval``.

For windows ``w`` [N, L+1] (inputs ``w[:, :L]``, targets ``w[:, 1:]``):

* AR NLL: exact next-token negative log-likelihood, in nats per target token (causal attention).
* MD ELBO: an unbiased Monte-Carlo estimate of the masked-diffusion negative ELBO, an upper bound on the
  NLL, in nats per eligible target (special tokens such as ``<s>`` are never masked, so never scored).
  Per window with E eligible targets: k uniform on {1..E}, k of them masked uniformly at random, the
  masked ones scored at the previous position (MNTP) and weighted by E/k; the K samples of a window take
  k from K strata of {1..E} (k_s = floor((s + u_s) E / K) + 1), which keeps the estimate unbiased and
  lowers its variance. The standard error is over windows (delta method for the ratio of total nats to
  total tokens); it counts both the data's and the masks' randomness.
* bits per byte: total nats of the scored targets / ln 2 / the UTF-8 bytes of exactly those targets' text
  (each token's byte length; with the byte-level BPE trained here this is exact, the space the tokenizer
  puts before each document counting as one byte; special tokens have no bytes).

Every forward pass takes at most ``batch_size`` windows, so memory is bounded whatever the model; the
masks depend on the window's index and the seed only, never on the batch size.
"""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from dualobj.model import document_ids
from dualobj.objective import mask_targets

LOGITS_BUDGET = 128 * 2**20  # bytes of fp32 logits one forward pass may produce when batch_size is automatic


def batch_rows(seq_len: int, vocab_size: int, requested: int = 0) -> int:
    """Rows per forward pass: ``requested``, or (0) as many as fit ~128 MiB of fp32 logits (at least 1)."""
    return requested or max(1, LOGITS_BUDGET // (seq_len * vocab_size * 4))


@functools.lru_cache(maxsize=8)
def token_byte_lengths(tokenizer_path: str) -> np.ndarray:
    """UTF-8 bytes of each token id's text (0 for special tokens).

    Byte-level BPE: one character of a token's string is one byte (exact). Other tokenizers: the byte
    length of the token decoded on its own (exact for whole-character tokens).
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    vocab = tok.get_vocab(with_added_tokens=True)
    out = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    added = {t.content for t in tok.get_added_tokens_decoder().values()}
    byte_level = type(tok.decoder).__name__ == "ByteLevel"
    for text, i in vocab.items():
        if text not in added:
            out[i] = len(text) if byte_level else len(tok.decode([i]).encode("utf-8"))
    return out


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


def _draws(first: int, n: int, samples: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window (by global index) and sample: a stratum offset u [n, K] and mask scores [n, K, L]."""
    us, scores = [], []
    for i in range(first, first + n):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        us.append(torch.rand(samples, generator=g, dtype=torch.float64))
        scores.append(torch.rand(samples, length, generator=g))
    return torch.stack(us), torch.stack(scores)


def stratified_k(u: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """k [n, K] from strata of {1..E}: k_s = floor((s + u_s) E / K) + 1 (uniform on {1..E} over the strata)."""
    samples = u.shape[1]
    frac = (torch.arange(samples, dtype=torch.float64) + u) / samples
    k = torch.floor(frac * eligible[:, None].double()).long() + 1
    return torch.minimum(k, eligible[:, None].clamp(min=1))


@torch.no_grad()
def md_elbo_windows(model, windows: torch.Tensor, *, bos_id: int, mask_id: int, special_ids: torch.Tensor,
                    samples: int, seed: int, first_index: int = 0, autocast=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window: the unbiased MC estimate of its negative ELBO in nats (summed over its targets) [N],
    and its number of eligible (maskable) targets [N]. ``first_index`` is the global index of row 0."""
    n, lp1 = windows.shape
    eligible = (~torch.isin(windows[:, 1:], special_ids)).sum(1)
    u, scores = _draws(first_index, n, samples, lp1 - 1, seed)
    k = stratified_k(u, eligible)
    dev = _device(model)
    total = torch.zeros(n, dtype=torch.float64)
    for s in range(samples):
        inputs, masked = mask_targets(windows, k[:, s], scores[:, s], mask_id, special_ids)
        x = inputs.to(dev)
        with autocast or contextlib.nullcontext():
            logits = model(x, False, document_ids(x, bos_id))
        ce = F.cross_entropy(logits.float().transpose(1, 2), windows[:, 1:].to(dev), reduction="none").cpu()
        weight = eligible.double() / k[:, s]  # E / k
        total += (ce.double() * masked).sum(1) * weight
    return total / samples, eligible


def md_elbo(model, windows: torch.Tensor, *, bos_id: int, mask_id: int, special_ids: torch.Tensor,
            samples: int = 4, seed: int = 0, autocast=None, batch_size: int = 64) -> tuple[float, float]:
    """MD negative ELBO in nats per eligible target token (an upper bound on the NLL) and its standard error."""
    nats, tokens = [], []
    for start in range(0, len(windows), batch_size):
        a, b = md_elbo_windows(model, windows[start:start + batch_size], bos_id=bos_id, mask_id=mask_id,
                               special_ids=special_ids, samples=samples, seed=seed, first_index=start,
                               autocast=autocast)
        nats.append(a)
        tokens.append(b)
    return ratio_and_se(torch.cat(nats), torch.cat(tokens).double())


def ratio_and_se(num: torch.Tensor, den: torch.Tensor) -> tuple[float, float]:
    """Σnum / Σden and its standard error over the N rows (delta method; nan for one row)."""
    n = len(num)
    r = float(num.sum() / den.sum())
    if n < 2:
        return r, float("nan")
    resid = num - r * den
    return r, float(resid.std(unbiased=True) / den.mean() / math.sqrt(n))


def validation_metrics(model, windows: torch.Tensor, corpus, *, modes=("ar", "md"), batch_size: int,
                       md_samples: int, seed: int, autocast=None) -> dict[str, float]:
    """AR NLL / perplexity / bits per byte and MD ELBO / its SE / bits per byte of ``windows`` [N, L+1].

    ``corpus`` gives the special ids and the tokenizer (a ``TokenizedCorpus``). Keys: ar_nll, ar_ppl,
    ar_bpb (mode ar); md_elbo, md_elbo_se, md_bpb, md_bpb_se (mode md); bytes (of all targets).
    """
    nbytes = float(token_byte_lengths(corpus.tokenizer_path)[windows[:, 1:].numpy()].sum())
    out: dict[str, float] = {"bytes": nbytes}
    ln2 = math.log(2)
    if "ar" in modes:
        nll, n = 0.0, 0
        for chunk in windows.split(batch_size):
            s, k = ar_nll(model, chunk, corpus.bos_id, autocast)
            nll, n = nll + s, n + k
        ar = nll / n
        out.update(ar_nll=ar, ar_ppl=math.exp(min(ar, 50)), ar_bpb=nll / ln2 / nbytes)
    if "md" in modes:
        special = torch.tensor(corpus.special_ids, dtype=torch.long)
        elbo, se = md_elbo(model, windows, bos_id=corpus.bos_id, mask_id=corpus.mask_id, special_ids=special,
                           samples=md_samples, seed=seed, autocast=autocast, batch_size=batch_size)
        tokens = float((~torch.isin(windows[:, 1:], special)).sum())
        per_byte = tokens / ln2 / nbytes  # nats per token -> bits per byte
        out.update(md_elbo=elbo, md_elbo_se=se, md_bpb=elbo * per_byte, md_bpb_se=se * per_byte)
    return out
