"""Text generation from a trained run, in the model's three modes.

* ``ar``: left-to-right sampling (temperature, top-k, top-p) with causal attention.
* ``prefix``: the same, but the prompt is encoded bidirectionally (prefix-LM, the paper's Remark 3).
* ``md``: masked-diffusion sampling: the prompt is a clean, never-masked prefix (the condition), followed
  by ``max_tokens`` <mask> tokens; over ``steps`` rounds, bidirectional passes predict every masked
  token (MNTP: the token at j is read at position j-1) and a share of them is committed, chosen at
  random or by confidence (highest probability first), until none is left.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F


def _filter(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Probabilities after temperature, top-k and nucleus (top-p) filtering; temperature 0 = argmax."""
    if temperature <= 0:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, idx = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set whose mass reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
    return logits.softmax(-1)


@torch.no_grad()
def generate(ev, prompt: str, mode: str = "ar", max_tokens: int = 48, steps: int = 32, temperature: float = 0.8,
             top_k: int = 50, top_p: float = 0.95, order: str = "confidence", seed: int = 0) -> str:
    """Continue ``prompt`` with the run held by an ``Evaluator`` ``ev``; returns the generated text only."""
    g = torch.Generator().manual_seed(seed)
    tok = ev.tokenizer
    tok.encode_special_tokens = True
    ids = [ev.corpus.bos_id, *tok.encode(prompt, add_special_tokens=False).ids]
    room = ev.cfg.model.seq_len - len(ids)
    if room < 1:
        ids = ids[-(ev.cfg.model.seq_len - max_tokens):]
        room = max_tokens
    n_new = min(max_tokens, room)
    special = set(ev.corpus.special_ids)

    def logits_of(x: list[int], causal: bool, prefix: int | None = None) -> torch.Tensor:
        t = torch.tensor([x], device=ev.device)
        plen = torch.tensor([prefix], device=ev.device) if prefix is not None else None
        with ev.autocast or contextlib.nullcontext():
            out = ev.model(t, causal, torch.zeros_like(t), plen)
        out = out[0].float().cpu()
        out[:, sorted(special)] = float("-inf")  # never emit <s>, <mask>, ...
        return out

    if mode in ("ar", "prefix"):
        prompt_len = len(ids)
        for _ in range(n_new):
            lg = logits_of(ids, True, prompt_len if mode == "prefix" else None)[-1]
            ids.append(int(torch.multinomial(_filter(lg, temperature, top_k, top_p), 1, generator=g)))
        new = ids[prompt_len:]
    elif mode == "md":
        start = len(ids)
        x = ids + [ev.corpus.mask_id] * n_new
        masked = list(range(start, start + n_new))
        steps = max(1, min(steps, n_new))
        for s in range(steps):
            if not masked:
                break
            lg = logits_of(x, False)
            pos = torch.tensor(masked)
            probs = _filter(lg[pos - 1], temperature, top_k, top_p)  # token j is predicted at j - 1
            draws = torch.multinomial(probs, 1, generator=g)[:, 0]
            k = math.ceil(len(masked) / (steps - s))
            if order == "confidence":
                conf = probs.gather(1, draws[:, None])[:, 0]
                pick = conf.argsort(descending=True)[:k]
            else:
                pick = torch.randperm(len(masked), generator=g)[:k]
            for p in pick.tolist():
                x[masked[p]] = int(draws[p])
            chosen = {masked[p] for p in pick.tolist()}
            masked = [m for m in masked if m not in chosen]
        new = x[start:]
    else:
        raise ValueError(f"mode {mode!r}: use ar, md or prefix")
    return tok.decode(new)


def check_options(run_dir, mode: str, order: str, temperature: float, top_k: int, top_p: float, max_tokens: int,
                  steps: int) -> None:
    """`dualobj generate`'s options, each refused with the range that has a meaning (ConfigError)."""
    _check_sampling(mode, order, temperature, top_k, top_p)
    _check_lengths(run_dir, max_tokens, steps)


def _check_sampling(mode: str, order: str, temperature: float, top_k: int, top_p: float) -> None:
    """Refuse generation settings that have no meaning, each with the range that has one."""
    import math

    from dualobj.errors import ConfigError

    if mode not in ("ar", "md", "prefix"):
        raise ConfigError(f"--mode {mode!r} is not one of ar, md, prefix")
    if order not in ("confidence", "random"):
        raise ConfigError(f"--order {order!r} is not one of confidence, random")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(f"--temperature {temperature:g} must be >= 0 (0 = greedy, 1 = the model's distribution)")
    if top_k < 0:
        raise ConfigError(f"--top-k {top_k} must be >= 0 (0 = off)")
    if not 0 < top_p <= 1:
        raise ConfigError(f"--top-p {top_p:g} must be in (0, 1] (1 = off)")


def _check_lengths(run_dir: Path, max_tokens: int, steps: int) -> None:
    """--max-tokens must fit the model's context (its seq_len, from the run's config.yaml, <s> included)."""
    from dualobj.errors import ConfigError
    from dualobj.run import run_info

    if max_tokens < 1 or steps < 1:
        raise ConfigError(f"--max-tokens {max_tokens} and --steps {steps} must both be >= 1")
    seq_len = run_info(run_dir).get("model.seq_len")
    if isinstance(seq_len, int) and max_tokens > seq_len - 1:
        raise ConfigError(f"--max-tokens {max_tokens} does not fit this model's context (model.seq_len={seq_len}, "
                          f"<s> included); use --max-tokens {seq_len - 1} or less")
