"""Self-contained check of torch's compiled FlexAttention on CPU against a dense boolean mask.

Needs torch only (no dualobj), so it can go with a report upstream:

    python bench/flex_cpu_repro.py

The mask is the one dualobj trains with: per-row causal or bidirectional rows (AR and MD sequences share
a batch) inside packed documents, built eagerly and passed into a compiled function, as inside a
compiled model. It prints the largest difference and how many elements differ per case, and exits 1 if
any case differs beyond 1e-4. Seen on torch 2.13.0+cpu on an AVX2 host (no AVX-512): the per-row
causal case with documents differs (thousands of elements, up to ~1.7); on AVX-512 hosts every case
matches.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

B, H, T, D = 4, 2, 24, 16


def cases():
    causal_rows = torch.tensor([True, False, True, False])
    docs = torch.zeros(B, T, dtype=torch.long)
    docs[:, 10:] = 1  # two packed documents: positions 0..9 and 10..23
    return {
        "per-row causal, docs": (causal_rows, docs),
        "per-row causal, no docs": (causal_rows, None),
        "all causal, docs": (torch.ones(B, dtype=torch.bool), docs),
        "all bidirectional, docs": (torch.zeros(B, dtype=torch.bool), docs),
        "all bidirectional, no docs": (torch.zeros(B, dtype=torch.bool), None),
    }


def dense_mask(causal_rows, docs):
    pos = torch.arange(T)
    m = (pos[None, :] <= pos[:, None])[None] | ~causal_rows[:, None, None]
    if docs is not None:
        m = m & (docs[:, :, None] == docs[:, None, :])
    return m[:, None]  # [B, 1, T, T]


def block_mask(causal_rows, docs):
    def mask_mod(b, h, q, kv):
        keep = (kv <= q) | ~causal_rows[b]
        if docs is not None:
            keep = keep & (docs[b, q] == docs[b, kv])
        return keep

    return create_block_mask(mask_mod, B, None, T, T, device="cpu", _compile=False)


def main() -> int:
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
    compiled = torch.compile(lambda q, k, v, bm: flex_attention(q, k, v, block_mask=bm))
    bad = 0
    for name, (rows, docs) in cases().items():
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask(rows, docs))
        eager = flex_attention(q, k, v, block_mask=block_mask(rows, docs))
        out = compiled(q, k, v, block_mask(rows, docs))
        for kind, y in (("eager flex", eager), ("compiled flex", out)):
            diff = (y - ref).abs()
            n = int((diff > 1e-4).sum())
            bad += n > 0
            where = sorted({(b, t) for b, _, t, _ in (diff > 1e-4).nonzero().tolist()})
            print(f"{name:26s} {kind:14s} max |diff| {diff.max():.2e}, {n:,} of {diff.numel():,} elements differ"
                  + (f" at (row, query) {where[:6]}{' ...' if len(where) > 6 else ''}" if n else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
