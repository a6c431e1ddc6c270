"""One pre-norm transformer for both objectives.

RMSNorm, RoPE, SwiGLU, no biases, untied output head. ``forward(idx, causal, doc_ids)`` is all the
objectives see: AR and masked diffusion differ only in the attention mask (``causal`` may be one
bool or one bool per sequence) and in the input the objective builds. Packed documents never
attend to each other. No loss or masking logic lives here.

This file is also the exported model (``dualobj export`` copies it, less the config import below, next to
a thin transformers wrapper), so it imports nothing of dualobj at run time.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:
    from dualobj.config import ModelConfig


def _trunc_normal_(w: torch.Tensor, std: float) -> None:
    nn.init.trunc_normal_(w, mean=0.0, std=std, a=-2 * std, b=2 * std)


class RoPE(nn.Module):
    """Rotary position embedding (rotate-half form), cos/sin cached for max length.

    x cos + rotate_half(x) sin, rotate_half(x) = [-x2, x1], computed as x cos + [x2, x1] sin_fwd with the
    sign folded into sin_fwd = [-sin, sin]: bit for bit the same (a product's sign flips without rounding
    differently), one pass fewer. Its backward is the same rotation the other way, g cos + [g2, g1] sin_bwd
    (sin_bwd = [sin, -sin]), written out (``_Rotary``) instead of autograd's chunk/neg/cat/mul graph; it
    rounds as autograd's does (each product cast to x's dtype, then one sum)."""

    def __init__(self, head_dim: int, max_len: int, theta: float):
        super().__init__()
        inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        ang = torch.outer(torch.arange(max_len, dtype=torch.float32), inv)
        cos, sin = ang.cos(), ang.sin()
        self.register_buffer("cos", torch.cat([cos, cos], dim=-1), persistent=False)
        self.register_buffer("sin", torch.cat([sin, sin], dim=-1), persistent=False)
        self.register_buffer("sin_fwd", torch.cat([-sin, sin], dim=-1), persistent=False)
        self.register_buffer("sin_bwd", torch.cat([sin, -sin], dim=-1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, H, T, D]
        t = x.shape[-2]
        return _Rotary.apply(x, self.cos[:t], self.sin_fwd[:t], self.sin_bwd[:t])


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x2, x1], dim=-1)


class _Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin_fwd, sin_bwd):
        ctx.save_for_backward(cos, sin_bwd)
        ctx.dtype = x.dtype
        return (x * cos + _swap_halves(x) * sin_fwd).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        cos, sin_bwd = ctx.saved_tensors
        g = g.to(torch.promote_types(ctx.dtype, cos.dtype))
        return (g * cos).to(ctx.dtype) + (_swap_halves(g) * sin_bwd).to(ctx.dtype), None, None, None


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        d = cfg.d_model
        # Separate q/k/v matrices: Muon orthogonalises each one on its own, as in the paper.
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, rope: RoPE, mask) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (m(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2) for m in (self.q, self.k, self.v))
        q, k = rope(q), rope(k)
        if isinstance(mask, _Bias):  # "math": an fp32 additive bias
            y = _math_attention(q, k, v, mask.bias)
        elif isinstance(mask, torch.Tensor):  # "sdpa": boolean, or additive in q's dtype (0 / -inf)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask if mask.dtype in (torch.bool, q.dtype)
                                               else mask.to(q.dtype))
        else:  # a FlexAttention BlockMask
            y = _flex_attention(q.is_cuda)(q, k, v, block_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up_value = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.up_gate(x)) * self.up_value(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, rope: RoPE, mask) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope, mask)
        return x + self.mlp(self.mlp_norm(x))


class LinearHead(nn.Module):
    """Final RMSNorm and an untied linear projection to the vocabulary."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.emb2vocab = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.emb2vocab(self.norm(h))


class ClassifierHead(nn.Module):
    """The paper's head: RMSNorm, linear d->d, GELU(tanh), linear d->V with bias."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.projection = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.emb2vocab = nn.Linear(cfg.d_model, cfg.vocab_size, bias=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.emb2vocab(F.gelu(self.projection(self.norm(h)), approximate="tanh"))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.head = ClassifierHead(cfg) if cfg.head == "classifier" else LinearHead(cfg)
        self.rope = RoPE(cfg.d_model // cfg.n_heads, cfg.seq_len, cfg.rope_theta)
        self.flex_ok: bool | None = None  # FlexAttention checked against the dense mask here (None: not yet)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official init: truncated normals scaled by width and depth; output projections at zero."""
        d, v = self.cfg.d_model, self.cfg.vocab_size
        emb_std, proj_std = math.sqrt(2 / (d + v)), math.sqrt(2 / (5 * d))
        _trunc_normal_(self.embedding.weight, emb_std)
        for i, layer in enumerate(self.layers):
            for lin in (layer.attn.q, layer.attn.k, layer.attn.v):
                _trunc_normal_(lin.weight, proj_std)
            for lin in (layer.mlp.up_value, layer.mlp.up_gate):
                _trunc_normal_(lin.weight, proj_std * math.sqrt(1 / (2 * (i + 1))))
            layer.attn.out.weight.zero_()
            layer.mlp.down.weight.zero_()
        _trunc_normal_(self.head.emb2vocab.weight, emb_std)
        if isinstance(self.head, ClassifierHead):
            _trunc_normal_(self.head.projection.weight, proj_std)
            self.head.emb2vocab.bias.zero_()

    def body(self, idx: torch.Tensor, causal: bool | torch.Tensor, doc_ids: torch.Tensor | None = None,
             prefix_len: torch.Tensor | None = None):
        """Hidden states [B, T, d] for token ids [B, T]."""
        mask = self.layer_mask(idx, causal, doc_ids, prefix_len)
        x = self.embedding(idx)
        for layer in self.layers:
            x = layer(x, self.rope, mask)
        return x

    def forward(self, idx: torch.Tensor, causal: bool | torch.Tensor = True, doc_ids: torch.Tensor | None = None,
                prefix_len: torch.Tensor | None = None):
        """Next-token logits [B, T, V]: position i predicts token i+1 in both modes.

        ``prefix_len`` [B] (prefix-LM inference): the first prefix_len positions of a row attend to each
        other bidirectionally; the rest stays causal.
        """
        return self.head(self.body(idx, causal, doc_ids, prefix_len))

    def layer_mask(self, idx: torch.Tensor, causal: bool | torch.Tensor, doc_ids: torch.Tensor | None = None,
                   prefix_len: torch.Tensor | None = None):
        """The mask every layer's attention gets, built once per forward.

        For "sdpa" it is the additive form (0 where a position may attend, -inf elsewhere) in the dtype the
        queries will have: what ``F.scaled_dot_product_attention`` turns a boolean mask into, in every layer's
        forward and again in its backward when handed the boolean one; the same numbers, converted once.
        """
        backend = self._backend(idx)
        mask = attention_mask(idx.shape[1], causal, doc_ids, idx.device, backend, prefix_len)
        if backend == "math":
            return _Bias(_additive(mask, torch.float32))
        if backend == "sdpa":
            return _additive(mask, self._compute_dtype(idx.device))
        return mask

    def _compute_dtype(self, device) -> torch.dtype:
        """The dtype of the linear layers' outputs: autocast's where it is on, else the weights'."""
        kind = torch.device(device).type
        if torch.is_autocast_enabled(kind):
            return torch.get_autocast_dtype(kind)
        return self.embedding.weight.dtype

    def _backend(self, idx: torch.Tensor) -> str:
        a = self.cfg.attention
        if a == "auto" and idx.is_cuda:
            a = "flex"
        elif a == "auto":
            # torch's fused CPU kernel with a mask is slow in bf16 (43 vs 22 ms per layer forward + backward
            # for the explicit path at `small`'s shape, measured here); in fp32 it is the faster one.
            bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
            a = "math" if bf16 else "sdpa"
        if a == "flex" and self.flex_ok is None:  # the first use, unless check_attention ran before compiling
            self.check_attention(idx.device, compiled=torch.compiler.is_compiling())
        return "sdpa" if a == "flex" and not self.flex_ok else a

    def check_attention(self, device, compiled: bool) -> None:
        """Trust FlexAttention on ``device`` only if it matches the dense mask (``flex_check``); else the
        model uses the dense mask. Call it before ``torch.compile`` (the trainer does); on a first use inside
        a compiled graph it runs there, at the cost of one graph break."""
        device = torch.device(device)
        if self.cfg.attention == "flex" or (self.cfg.attention == "auto" and device.type == "cuda"):
            self.flex_ok = _flex_check_outside_graph(device, compiled or device.type == "cuda")

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embedding.weight.numel() + sum(p.numel() for p in self.head.emb2vocab.parameters())
        return n


def attention_mask(
    t: int, causal: bool | torch.Tensor, doc_ids: torch.Tensor | None, device, backend: str = "sdpa",
    prefix_len: torch.Tensor | None = None,
):
    """Boolean [B|1, 1, T, T] mask (True = may attend; also for "math") or a FlexAttention BlockMask.

    ``causal`` is a bool or a [B] bool tensor (one mode per sequence: AR and MD rows share a batch).
    ``doc_ids`` [B, T] blocks attention across packed documents. ``prefix_len`` [B] opens
    bidirectional attention inside each row's prefix (prefix-LM).
    """
    if backend == "flex":
        build = _flex_mask if torch.device(device).type == "cuda" else _flex_mask_outside_graph
        return build(t, causal, doc_ids, device, prefix_len)
    pos = torch.arange(t, device=device)
    lower = pos[None, :] <= pos[:, None]  # [T, T]
    if isinstance(causal, torch.Tensor):
        m = lower[None] | ~causal.to(device)[:, None, None]  # [B, T, T]
    else:
        m = (lower if causal else torch.ones_like(lower))[None]
    if prefix_len is not None:
        pre = pos[None, :] < prefix_len.to(device)[:, None]  # [B, T]
        m = m | (pre[:, :, None] & pre[:, None, :])
    if doc_ids is not None:
        m = m & (doc_ids[:, :, None] == doc_ids[:, None, :])
    return m[:, None]


class _Bias(NamedTuple):
    """An fp32 additive mask for the "math" attention (wrapped, so it is never taken for an sdpa mask)."""

    bias: torch.Tensor


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where ``mask`` is True, -inf where it is False, in ``dtype``."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def _math_attention(q, k, v, bias: torch.Tensor) -> torch.Tensor:
    """Softmax attention written out: scores and softmax in fp32, both matmuls in the input dtype."""
    s = torch.matmul(q, k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5 + bias
    return torch.matmul(s.softmax(-1).to(v.dtype), v)


_FLEX = {}


def _flex_attention(cuda: bool):
    """flex_attention, compiled on GPU (eager flex is a slow reference); eager elsewhere (CPU inference only).

    Inside a compiled model (``train.compile=true``) it is compiled with the model on any device.
    """
    from torch.nn.attention.flex_attention import flex_attention

    if cuda not in _FLEX:
        _FLEX[cuda] = torch.compile(flex_attention, dynamic=False) if cuda else flex_attention
    return _FLEX[cuda]


def _batch(causal, doc_ids, prefix_len) -> int:
    """Rows a block mask must describe: 1 (broadcast over the batch) when no part of it differs by row."""
    for per_row in (doc_ids, prefix_len, causal):
        if isinstance(per_row, torch.Tensor) and per_row.dim() > 0:
            return per_row.shape[0]
    return 1


def _flex_mask(t, causal, doc_ids, device, prefix_len=None):
    """The FlexAttention BlockMask of ``attention_mask`` (compiled on GPU, or traced into a compiled model)."""
    from torch.nn.attention.flex_attention import create_block_mask

    b = _batch(causal, doc_ids, prefix_len)
    # Whole tensors, never stride-0 views: inductor's CPU flex kernel takes only real buffers into a mask.
    per_row = torch.as_tensor(causal, device=device).reshape(-1).expand(b).contiguous()
    plen = (torch.zeros(1, dtype=torch.long) if prefix_len is None else prefix_len).to(device)
    plen = plen.expand(b).contiguous()
    doc_ids = doc_ids.contiguous() if doc_ids is not None else None
    if b == 1:  # one mask for every row: eager flex calls mask_mod with each row's index, so index nothing
        per_row, plen = per_row[0], plen[0]

    def mask_mod(bi, h, q, kv):
        causal_row, p = (per_row[bi], plen[bi]) if b > 1 else (per_row, plen)
        keep = (kv <= q) | ~causal_row | ((q < p) & (kv < p))
        if doc_ids is not None:
            keep = keep & (doc_ids[bi, q] == doc_ids[bi, kv])
        return keep

    compile_it = per_row.is_cuda and not torch.compiler.is_compiling()
    return create_block_mask(mask_mod, b, None, t, t, device=device, _compile=compile_it)


_FLEX_CHECKED: dict[tuple[str, bool], bool] = {}


def flex_check(device: torch.device, compiled: bool) -> bool:
    """Whether FlexAttention (compiled or eager) on ``device`` matches the dense mask on a probe batch of
    per-row causal and bidirectional rows, packed documents and prefixes. Checked once per process and
    kind; a failure prints one line and the caller falls back to the dense mask.

    Compiled on CPU it is never trusted: torch's inductor CPU flex kernel returns wrong rows in some
    compiles and right ones in others (per compile, not per call; bench/flex_cpu_repro.py), so a probe
    that passes cannot vouch for the model's own compile."""
    key = (device.type, compiled)
    if key not in _FLEX_CHECKED:
        where = (f"torch {torch.__version__}, {device.type}"
                 + (f", CPU capability {torch.backends.cpu.get_cpu_capability()}" if device.type == "cpu" else ""))
        kind = "compiled" if compiled else "eager"
        if compiled and device.type == "cpu":
            problem = "gives wrong numbers in some compiles (bench/flex_cpu_repro.py)"
        else:
            diff = _flex_probe_diff(device)
            problem = None if diff <= 1e-3 else f"differs from the dense mask by up to {diff:.3g} on a probe batch"
        if problem:
            print(f"attention: {kind} FlexAttention {problem} ({where}); using the dense mask (sdpa) instead",
                  file=sys.stderr)
        _FLEX_CHECKED[key] = problem is None
    return _FLEX_CHECKED[key]


def _flex_probe_diff(device: torch.device) -> float:
    """Largest |flex - dense| attention output on a probe batch that exercises every part of the mask."""
    g = torch.Generator().manual_seed(0)
    b, h, t, d = 4, 2, 24, 16
    q, k, v = (torch.randn(b, h, t, d, generator=g).to(device) for _ in range(3))
    causal = torch.tensor([True, False, True, False], device=device)
    docs = torch.zeros(b, t, dtype=torch.long, device=device)
    docs[:, 10:] = 1
    prefix = torch.tensor([5, 0, 8, 0], device=device)
    with torch.no_grad():
        dense_mask = attention_mask(t, causal, docs, device, "sdpa", prefix)
        dense = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask)
        block = attention_mask(t, causal, docs, device, "flex", prefix)
        flex = _flex_attention(device.type == "cuda")(q, k, v, block_mask=block)
    return float((flex.float() - dense.float()).abs().max())


# On CPU the mask is built eagerly even inside a compiled model: inductor's CPU flex kernel fails on
# masks computed inside its graph ("NoValidChoicesError"), and takes them fine as graph inputs. The check
# runs eagerly too. torch's lazy form of torch.compiler.disable imports torch._dynamo (2-3 s on a CPU) on
# the first call only, so a process that never compiles nor uses flex (eval, sweep cells) never pays it.
_flex_mask_outside_graph = torch._disable_dynamo(_flex_mask)
_flex_check_outside_graph = torch._disable_dynamo(flex_check)


def document_ids(idx: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Document index of each position: every packed document starts with <s>."""
    return torch.cumsum((idx == bos_id).to(torch.int32), dim=1)
