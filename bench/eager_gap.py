"""The eager gap: dualobj's training step against a plain causal GPT of the same shape, and where it goes.

    python bench/eager_gap.py [--model tiny small] [--threads 2 1] [--rounds N] [--before REV] [--no-write]

The reference is a plain causal-attention GPT written below (about 60 lines): the same shape and the same
architecture family as dualobj's model (RMSNorm, RoPE rotate-half, SwiGLU, separate q/k/v, untied head, no
biases), but ``F.scaled_dot_product_attention(is_causal=True)``, no document mask, plain ``F.cross_entropy``,
fused AdamW, no clipping. Its batch is the same 32 windows of the same stream as dualobj's step. dualobj's
side is the real ``Trainer.train_step`` at objective.alpha=1/2 (half the rows AR, half MD), fp32. Both
are timed round-robin in one process, eager and with ``train.compile=true`` (the reference compiled
like nanoGPT: model and loss in one ``torch.compile``).

Then each part of the step that differs is timed on its own, again round-robin, at the model's shape and
summed over the layers of one step: building the attention mask, the attention kernel (forward +
backward) with the mask dualobj uses against ``is_causal=True``, RoPE, the norms, the loss tail, the data
and masking, gradient clipping; and a torch.profiler table of self CPU time by kind of op.

Results go to bench/RESULTS.md, one section per CPU capability (AVX2 and AVX-512 hosts differ). Each
(thread count, model) runs in a fresh process when there are several, so none inherits another's heap.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_trainer, machine, md_table, tool_step  # noqa: E402
from results import write_section  # noqa: E402

from dualobj.model import attention_mask, document_ids  # noqa: E402
from dualobj.objective import Draws, ar_rows_from_prefix  # noqa: E402
from dualobj.runtime import cpu_capability  # noqa: E402
from dualobj.train import Trainer, step_generator  # noqa: E402

RESULTS = Path(__file__).parent / "RESULTS.md"
BATCH = 32


# ----------------------------------------------------------------------------- the reference
def rotate_half_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class RefBlock(nn.Module):
    def __init__(self, m):
        super().__init__()
        d, self.h = m.d_model, m.n_heads
        self.n1, self.n2 = nn.RMSNorm(d, eps=m.norm_eps), nn.RMSNorm(d, eps=m.norm_eps)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.gate, self.up = nn.Linear(d, m.d_ff, bias=False), nn.Linear(d, m.d_ff, bias=False)
        self.down = nn.Linear(m.d_ff, d, bias=False)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        h = self.n1(x)
        q, k, v = (lin(h).view(b, t, self.h, -1).transpose(1, 2) for lin in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(rotate_half_rope(q, cos, sin), rotate_half_rope(k, cos, sin), v,
                                           is_causal=True)
        x = x + self.o(y.transpose(1, 2).reshape(b, t, d))
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class RefGPT(nn.Module):
    """A plain causal GPT of dualobj's shape: forward(idx, targets) -> mean cross-entropy."""

    def __init__(self, m):
        super().__init__()
        self.emb = nn.Embedding(m.vocab_size, m.d_model)
        self.blocks = nn.ModuleList(RefBlock(m) for _ in range(m.n_layers))
        self.norm = nn.RMSNorm(m.d_model, eps=m.norm_eps)
        self.head = nn.Linear(m.d_model, m.vocab_size, bias=False)
        hd = m.d_model // m.n_heads
        inv = 1.0 / m.rope_theta ** (torch.arange(0, hd, 2).float() / hd)
        ang = torch.outer(torch.arange(m.seq_len).float(), inv).repeat(1, 2)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.emb(idx)
        for blk in self.blocks:
            x = blk(x, self.cos[:t], self.sin[:t])
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


# ----------------------------------------------------------------------------- the two steps
def tool_trainer(model: str, compile: bool, extra: list[str]) -> Trainer:
    return bench_trainer([f"model={model}", "objective.alpha=0.5", "train.precision=fp32", f"train.compile={compile}",
                          f"train.batch_size={BATCH}", *extra])


def ref_step(tr: Trainer, compile: bool):
    """The reference's step on the same windows of the same stream: forward + cross-entropy, backward, AdamW."""
    torch.manual_seed(0)
    ref = RefGPT(tr.cfg.model)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-4, fused=True)
    fwd = torch.compile(ref) if compile else ref
    b, steps = tr.cfg.train.batch_size, iter(range(10**6))

    def step():
        s = next(steps)
        w = torch.from_numpy(tr.stream.get(np.arange(s * b, (s + 1) * b)))
        fwd(w[:, :-1], w[:, 1:]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, ref


def interleaved(fns: dict, rounds: int, warmup: int) -> dict:
    """Seconds of each call of each function, timed round-robin: one call of each per round, the order
    rotated by one every round (so no function always follows the same one). {key: [seconds per round]}."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    keys, times = list(fns), {k: [] for k in fns}
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def speedup(times: dict, a, b) -> float:
    """How much faster ``a`` runs than ``b``: the median over rounds of b's time / a's time in the same round
    (a paired ratio: a slow spell of this shared machine hits both calls of a round alike)."""
    return statistics.median(tb / ta for ta, tb in zip(times[a], times[b], strict=True))


# ----------------------------------------------------------------------------- the parts, in isolation
def fwd_bwd(fn, *leaves):
    """A function running ``fn(*leaves)`` forward and backward (a random upstream gradient)."""
    out = fn(*leaves)
    g = torch.randn_like(out) if out.dim() else None

    def call():
        for x in leaves:
            x.grad = None
        fn(*leaves).backward(g)

    return call


def parts(tr: Trainer, ref: RefGPT, old: Trainer | None = None) -> dict:
    """{part: (tool fn, reference fn or None, calls per step)}: each part of a step, as the tool does it
    and as the reference does it, at the model's shape. Parts named "kernel: ..." (the kernel with other
    masks) and "before: ..." (the part as ``old``, the trainer of an earlier commit, does it) stand alone."""
    m, model, obj = tr.cfg.model, tr.model, tr.objective
    b, t, hd, h = BATCH, m.seq_len, m.d_model // m.n_heads, m.n_heads
    n_ar = ar_rows_from_prefix(tr.budget.alpha_sum, 0, b)
    window = torch.from_numpy(tr.stream.get(np.arange(b)))
    x = window[:, :-1]
    doc = document_ids(x, obj.bos_id)
    causal = torch.arange(b) < n_ar
    mask = model.layer_mask(x, causal, doc)  # what every layer gets (additive, built once per forward)
    bool_mask = attention_mask(t, causal, doc, "cpu")  # the boolean form, which sdpa converts in every call
    # every row causal, no documents, the same additive form: the mask a plain GPT would pass if it passed one
    causal_rows = model.layer_mask(x, torch.ones(b, dtype=torch.bool))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, t, h, hd, generator=gen).transpose(1, 2).requires_grad_() for _ in range(3))
    hidden = torch.randn(b, t, m.d_model, generator=gen, requires_grad=True)
    logits = torch.randn(b, t, m.vocab_size, generator=gen, requires_grad=True)
    norm, rope = model.layers[0].attn_norm, model.rope
    draws = Draws.sample(b, t, step_generator(0, 0))
    weights = obj.inputs(window, n_ar, draws)[1]
    n_norms, L = 2 * m.n_layers + 1, m.n_layers
    sdpa = F.scaled_dot_product_attention

    def loss_of(token_losses):
        def loss(lg):
            ce, lse = token_losses(lg, window[:, 1:])
            return ((ce * weights).sum(1).sum() + obj.cfg.z_loss * (lse.pow(2) * weights).sum(1).sum()) / (b * t)
        return loss

    def tool_data():
        w = torch.from_numpy(tr.stream.get(np.arange(b)))
        d = Draws.sample(b, t, step_generator(0, 0))
        obj.inputs(w, n_ar, d)
        document_ids(w[:, :-1], obj.bos_id)

    model.zero_grad(set_to_none=True)
    tr.objective.loss(model, window, n_ar, draws=draws, denom_rows=b).loss.backward()  # grads to clip
    earlier = {} if old is None else {
        "before: attention mask, boolean": (lambda: attention_mask(t, causal, document_ids(x, obj.bos_id), "cpu"),
                                            None, 1),
        "before: RoPE on q and k": (fwd_bwd(lambda q, k: old.model.rope(q) + old.model.rope(k), q, k), None, L),
        "before: loss tail": (fwd_bwd(loss_of(old.objective.token_losses), logits), None, 1),
    }
    return {
        "attention mask (per forward)": (lambda: model.layer_mask(x, causal, document_ids(x, obj.bos_id)), None, 1),
        "attention kernel, fwd+bwd": (fwd_bwd(lambda q, k, v: sdpa(q, k, v, attn_mask=mask), q, k, v),
                                      fwd_bwd(lambda q, k, v: sdpa(q, k, v, is_causal=True), q, k, v), L),
        "RoPE on q and k, fwd+bwd": (fwd_bwd(lambda q, k: rope(q) + rope(k), q, k),
                                     fwd_bwd(lambda q, k: rotate_half_rope(q, ref.cos, ref.sin)
                                             + rotate_half_rope(k, ref.cos, ref.sin), q, k), L),
        "RMSNorm, fwd+bwd": (fwd_bwd(norm, hidden), fwd_bwd(ref.norm, hidden), n_norms),
        "loss tail (CE, z-loss, weights), fwd+bwd": (fwd_bwd(loss_of(obj.token_losses), logits),
                                                     fwd_bwd(lambda lg: F.cross_entropy(
                                                         lg.flatten(0, 1), window[:, 1:].flatten()), logits), 1),
        "data, MD masking, document ids": (tool_data, lambda: torch.from_numpy(tr.stream.get(np.arange(b))), 1),
        "gradient clipping": (lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), tr.cfg.train.grad_clip),
                              None, 1),
        # the kernel with other masks: what is inherent to a mixed batch, and what the boolean form cost
        "kernel: per-row causal mask, no documents": (fwd_bwd(lambda q, k, v: sdpa(q, k, v, attn_mask=causal_rows),
                                                              q, k, v), None, L),
        "kernel: no mask (all rows bidirectional)": (fwd_bwd(lambda q, k, v: sdpa(q, k, v), q, k, v), None, L),
        "kernel: dualobj's mask in boolean form": (fwd_bwd(lambda q, k, v: sdpa(q, k, v, attn_mask=bool_mask),
                                                           q, k, v), None, L),
        **earlier,
    }


def time_parts(ps: dict, rounds: int) -> dict:
    fns = {}
    for name, (tool, reference, _) in ps.items():
        fns[name, "tool"] = tool
        if reference is not None:
            fns[name, "ref"] = reference
    sec = {k: statistics.median(v) for k, v in interleaved(fns, rounds, warmup=1).items()}
    return {name: (sec[name, "tool"] * n, sec[name, "ref"] * n if (name, "ref") in sec else 0.0)
            for name, (_, _, n) in ps.items()}


# ----------------------------------------------------------------------------- the profile
CATEGORIES = [
    ("matmul", ("mm", "addmm", "bmm", "matmul", "linear")),
    ("attention kernel", ("scaled_dot_product", "flash_attention")),
    ("softmax / CE over the vocabulary", ("log_softmax", "exp", "nll_loss", "gather", "scatter", "cross_entropy")),
    ("elementwise (mul, add, neg, cat, silu, pow, ...)", ("mul", "add", "neg", "cat", "silu", "pow", "rsqrt", "mean",
                                                         "sum", "div", "where", "sub", "masked_fill", "eq", "le",
                                                         "bitwise", "logical", "fill", "zero")),
    ("copies and layout", ("copy", "clone", "contiguous", "to", "index", "embedding", "empty")),
    ("optimizer", ("adam", "fused_adam")),
    ("gradient norm (clipping)", ("linalg_vector_norm", "foreach_norm", "foreach_mul", "clamp", "stack")),
]


def category(op: str) -> str:
    name = op.split("::")[-1].lstrip("_")
    for cat, keys in CATEGORIES:
        if any(name.startswith(k) for k in keys):
            return cat
    return "other"


def profile(fns: dict, steps: int = 2) -> dict:
    """{label: {category: self CPU seconds per step}} for each step function."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    out = {}
    for label, fn in fns.items():
        with torch_profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(steps):
                fn()
        cats: dict[str, float] = {}
        for e in p.key_averages():
            if e.key.startswith("aten::") or e.key.startswith("mkldnn") or e.key.startswith("torch::"):
                c = category(e.key)
                cats[c] = cats.get(c, 0.0) + e.self_cpu_time_total / 1e6 / steps
        cats["total"] = sum(e.self_cpu_time_total for e in p.key_averages()) / 1e6 / steps
        out[label] = cats
    return out


# ----------------------------------------------------------------------------- dualobj as of another commit
def _module_at(rev: str, path: str, name: str):
    """The source file ``path`` as of git revision ``rev``, loaded as a module named ``name``."""
    import subprocess
    import types

    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "-C", str(root), "show", f"{rev}:{path}"], check=True, capture_output=True,
                         text=True).stdout
    mod = types.ModuleType(name)
    mod.__file__ = f"{rev}:{path}"
    sys.modules[name] = mod
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def trainer_at(rev: str, model: str, extra: list[str]) -> Trainer:
    """An eager trainer whose model and objective are dualobj/model.py and dualobj/objective.py as of ``rev``
    (the same weights: same seed, same init), to time a change against its parent in the same rounds."""
    from dualobj.optim import build_optimizer

    tr = tool_trainer(model, False, extra)
    old_model = _module_at(rev, "dualobj/model.py", f"dualobj_model_{rev}")
    old_objective = _module_at(rev, "dualobj/objective.py", f"dualobj_objective_{rev}")
    torch.manual_seed(tr.cfg.seed)
    tr.model = tr.forward = tr.forward_eval = old_model.Transformer(tr.cfg.model)
    o = tr.objective
    tr.objective = old_objective.DualObjective(tr.cfg.objective, bos_id=o.bos_id, mask_id=o.mask_id,
                                               special_ids=o.special_ids)
    tr.opt = build_optimizer(tr.model, tr.cfg.train, bf16=False)
    return tr


# ----------------------------------------------------------------------------- the report
def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(model: str = "small", rounds: int = 5, part_rounds: int = 7, extra: list[str] | None = None,
        with_compile: bool = True, with_profile: bool = True, before: str | None = None) -> tuple[str, dict]:
    """One model: the step table (and ``before``: dualobj as of that git revision, eager, in the same
    rounds), the parts and the profile. Returns the markdown and the numbers."""
    extra = extra or []
    t_start = time.perf_counter()
    trainers = {c: tool_trainer(model, c, extra) for c in ((False, True) if with_compile else (False,))}
    fns, refs = {}, {}
    for c, tr in trainers.items():
        fns["dualobj", c] = tool_step(tr)
        fns["reference", c], refs[c] = ref_step(tr, c)
    old = trainer_at(before, model, extra) if before else None
    if old:
        fns[f"dualobj at {before}", False] = tool_step(old)
    tr = trainers[False]
    tokens = BATCH * tr.cfg.model.seq_len
    times = interleaved(fns, rounds, warmup=2)
    label = {k: f"{k[0]} {'compiled' if k[1] else 'eager'}" for k in times}
    times = {label[k]: v for k, v in times.items()}
    sec = {k: statistics.median(v) for k, v in times.items()}
    ratios = {(a, b): speedup(times, a, b) for a in times for b in times if a != b}
    ps = time_parts(parts(tr, refs[False], old), part_rounds)
    prof = profile({"dualobj": fns["dualobj", False], "reference": fns["reference", False]}) if with_profile else {}
    data = {"tokens_per_s": {k: tokens / s for k, s in sec.items()}, "seconds": sec, "times": times,
            "speedup": {f"{a} / {b}": r for (a, b), r in ratios.items()},
            "parts": ps, "profile": prof, "wall_s": time.perf_counter() - t_start}
    return report(model, tr, data, rounds, part_rounds, before), data


def report(model: str, tr: Trainer, data: dict, rounds: int, part_rounds: int, before: str | None = None) -> str:
    m, tps, sec, x = tr.cfg.model, data["tokens_per_s"], data["seconds"], data["speedup"]
    rows = []
    for k in ("eager", "compiled"):
        if f"dualobj {k}" in tps:
            rows.append([f"dualobj {k}", f"{tps[f'dualobj {k}']:,.0f}", f"{tps[f'reference {k}']:,.0f}",
                         f"{x[f'dualobj {k} / reference {k}']:.3f}x",
                         f"{x[f'dualobj {k} / reference eager']:.3f}x" if k != "eager" else "-"])
    if before:
        k = f"dualobj at {before} eager"
        rows.append([f"dualobj at {before} (before), eager", f"{tps[k]:,.0f}", f"{tps['reference eager']:,.0f}",
                     f"{x[f'{k} / reference eager']:.3f}x", "-"])
    steps = md_table(["step", "dualobj tok/s (α=1/2)", "reference tok/s (same mode)", "dualobj / reference (same mode)",
                      "dualobj compiled / reference eager"], rows)
    steps += "\n\n" + targets(x, "dualobj compiled" in tps)
    if before:
        steps += (f"\n\nThis tree's eager step against the one at {before}, paired the same way: "
                  f"{x[f'dualobj eager / dualobj at {before} eager']:.3f}x.")
    gap_frac = 1 / x["dualobj eager / reference eager"] - 1  # dualobj's step time over the reference's, paired
    gap = gap_frac * sec["reference eager"]
    prows, explained = [], 0.0
    for name, (tool, ref) in data["parts"].items():
        alone = name.startswith(("kernel:", "before:"))
        explained += 0.0 if alone else tool - ref
        prows.append([name, f"{tool * 1e3:.1f}", "-" if alone else f"{ref * 1e3:.1f}",
                      "-" if alone else f"{(tool - ref) * 1e3:+.1f}",
                      "-" if alone else f"{(tool - ref) / sec['reference eager']:+.1%}"])
    prows.append(["**whole step** (medians; difference from the paired ratio)", f"{sec['dualobj eager'] * 1e3:.1f}",
                  f"{sec['reference eager'] * 1e3:.1f}", f"{gap * 1e3:+.1f}", f"{gap_frac:+.1%}"])
    prows.append(["rest (optimizer, Python, allocator, noise)", "", "", f"{(gap - explained) * 1e3:+.1f}",
                  f"{(gap - explained) / sec['reference eager']:+.1%}"])
    part_table = md_table(["part (ms per step, summed over the layers)", "dualobj", "reference", "difference",
                           "of a reference step"], prows)
    out = [f"### `{model}` (d={m.d_model}, L={m.n_layers}, H={m.n_heads}, d_ff={m.d_ff}, V={m.vocab_size}, "
           f"T={m.seq_len}), batch {BATCH}, fp32, α=1/2",
           "",
           f"{rounds} round-robin rounds ({data['wall_s']:.0f} s for this model, compiling included); tok/s from "
           f"the median step, ratios the median over rounds of the two steps' time ratio in the same round:",
           "",
           steps,
           "",
           f"Where the eager difference goes: each part alone, forward and backward where it has one, "
           f"{part_rounds} round-robin rounds, one step's worth:",
           "",
           part_table,
           "",
           inherent_text(data["parts"], sec["reference eager"], before)]
    if data["profile"]:
        cats = sorted({c for p in data["profile"].values() for c in p} - {"total"})
        crow = [[c, *(f"{data['profile'][w].get(c, 0.0) * 1e3:,.0f}" for w in ("dualobj", "reference"))]
                for c in cats]
        crow.append(["all ops", *(f"{data['profile'][w]['total'] * 1e3:,.0f}" for w in ("dualobj", "reference"))])
        out += ["", "torch.profiler, self CPU ms per eager step by kind of op (2 steps each, one after the other, "
                "so less fair than the round-robin tables; profiler overhead included):", "",
                md_table(["kind of op", "dualobj", "reference"], crow)]
    return "\n".join(out)


def targets(x: dict, compiled: bool) -> str:
    """The issue's targets: eager at least 1.0x, compiled at least 1.2x the reference."""
    def row(what, r, goal):
        return [what, f"{r:.3f}x", f"{goal:.1f}x", "met" if r >= goal else "missed"]

    rows = [row("dualobj eager / reference eager", x["dualobj eager / reference eager"], 1.0)]
    if compiled:
        rows += [row("dualobj compiled / reference eager", x["dualobj compiled / reference eager"], 1.2),
                 row("dualobj compiled / reference compiled", x["dualobj compiled / reference compiled"], 1.2)]
    return md_table(["target", "measured", "goal", "status"], rows)


def inherent_text(ps: dict, ref_step_s: float, before: str | None = None) -> str:
    """What a mixed AR/MD batch costs by its nature, in this run's numbers."""
    def ms(x):
        return f"{x * 1e3:+.1f} ms ({x / ref_step_s:+.1%} of a reference step)"

    kernel_tool, kernel_ref = ps["attention kernel, fwd+bwd"]
    per_row = ps["kernel: per-row causal mask, no documents"][0]
    bidir = ps["kernel: no mask (all rows bidirectional)"][0]
    boolean = ps["kernel: dualobj's mask in boolean form"][0]
    mask = ps["attention mask (per forward)"][0]
    loss_tool, loss_ref = ps["loss tail (CE, z-loss, weights), fwd+bwd"]
    data_tool, data_ref = ps["data, MD masking, document ids"]
    return "\n".join([
        "Inherent to a mixed AR/MD batch:",
        "",
        f"* **a per-row mask instead of `is_causal`**: AR and MD rows share one kernel call, so the mask is a "
        f"[B, 1, T, T] tensor, built once per forward ({mask * 1e3:.1f} ms) and added to every score; the same "
        f"kernel with a per-row causal mask and no documents against `is_causal=True`: {ms(per_row - kernel_ref)}; "
        f"with no mask at all {ms(bidir - kernel_ref)}.",
        f"* **document isolation** (packed documents never attend to each other): dualobj's mask against the "
        f"per-row causal one, {ms(kernel_tool - per_row)}: torch's CPU kernel adds the mask block by block and "
        f"skips nothing for it, so the pattern inside the mask costs nothing extra; it is the mask's existence "
        f"(first point) that costs.",
        f"* **the MD loss weighting** (1/t weights per target, z-loss, per-row sums): dualobj's fused CE + log Z "
        f"against plain `F.cross_entropy`, {ms(loss_tool - loss_ref)}; the weighting itself is [B, T]-sized "
        f"and free next to the [B, T, V] softmax.",
        f"* **MD masking of the inputs** (noise levels, per-row ranks, `<mask>` tokens, document ids): "
        f"{ms(data_tool - data_ref)}.",
        "",
        closed_text(ps, ms, before) if before else
        f"Closed: the boolean mask was converted to its additive form inside every layer's attention, "
        f"forward and backward; handing the kernel the additive mask built once costs {ms(kernel_tool - boolean)} "
        f"against the boolean form.",
    ])


def closed_text(ps: dict, ms, before: str) -> str:
    """Each part as it is now against the same part at ``before``."""
    mask_now = ps["attention mask (per forward)"][0] + ps["attention kernel, fwd+bwd"][0]
    mask_then = ps["before: attention mask, boolean"][0] + ps["kernel: dualobj's mask in boolean form"][0]
    rope = ps["RoPE on q and k, fwd+bwd"][0] - ps["before: RoPE on q and k"][0]
    loss = ps["loss tail (CE, z-loss, weights), fwd+bwd"][0] - ps["before: loss tail"][0]
    return "\n".join([
        f"Closed (this tree against {before}, part by part, same rounds):",
        "",
        f"* the mask and the kernel: the additive mask built once per forward instead of the boolean one, "
        f"which torch converted in every layer, forward and backward: {ms(mask_now - mask_then)};",
        f"* RoPE with the sign folded into the sin table and a written-out backward: {ms(rope)};",
        f"* the loss tail's backward exponentiating log p in place (no fresh [B·T, V] buffer): {ms(loss)}.",
    ])


def header(wall_s: float) -> str:
    about = __doc__.split("\n\n")[2:4]  # the reference, and the parts
    return "\n\n".join([f"{time.strftime('%Y-%m-%d')}, {machine()}; {wall_s:.0f} s in all",
                        "## The eager gap: dualobj's step against a plain causal GPT of the same shape",
                        *(" ".join(p.split()) for p in about)])


def one(model: str, threads: int, a) -> str:
    """The section's part for one model at one thread count, in this process."""
    torch.set_num_threads(threads)
    torch._dynamo.reset()  # each model's compiled graphs start with a fresh recompile budget
    body = run(model, a.rounds, a.part_rounds, a.overrides, with_compile=not a.no_compile, before=a.before)[0]
    thr = f"{threads} thread{'s' if threads > 1 else ''}"
    body = body.replace("), batch", f"), {thr}, batch", 1)
    return body.replace(" for this model, compiling included)",
                        f" for this model, compiling included; peak RSS {peak_rss_mib():,.0f} MiB)", 1)


def fresh(model: str, threads: int, argv: list[str]) -> str:
    """``one`` in a fresh process (a run's heap and compiled graphs would otherwise carry into the next)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "body.md"
        subprocess.run([sys.executable, __file__, *argv, "--model", model, "--threads", str(threads), "--no-write",
                        "--body-out", str(out)], check=True)
        return out.read_text()


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", default=["tiny", "small"], help="model config(s), default tiny and small")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--part-rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[0],
                    help="torch threads, one run of each model per value (0: torch's default)")
    ap.add_argument("--before", metavar="REV", help="also time dualobj's model.py and objective.py as of this git "
                    "revision, eager, in the same rounds")
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--no-write", action="store_true", help="print, do not write bench/RESULTS.md")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--body-out", help=argparse.SUPPRESS)  # one model's part, for the parent process
    ap.add_argument("overrides", nargs="*", help="extra config overrides (e.g. a micro shape for tests)")
    a = ap.parse_args(argv)
    t0, default_threads = time.perf_counter(), torch.get_num_threads()
    combos = [(t or default_threads, m) for t in a.threads for m in a.model]
    if a.body_out:
        body = one(a.model[0], combos[0][0], a)
        Path(a.body_out).write_text(body)
        return body
    common = [*a.overrides, "--rounds", str(a.rounds), "--part-rounds", str(a.part_rounds),
              *(["--before", a.before] if a.before else []), *(["--no-compile"] if a.no_compile else [])]
    bodies = []
    for threads, model in combos:
        bodies.append(fresh(model, threads, common) if len(combos) > 1 else one(model, threads, a))
        print(bodies[-1], flush=True)
    torch.set_num_threads(default_threads)
    body = "\n\n".join([header(time.perf_counter() - t0), *bodies, NOTES])
    print(NOTES, flush=True)
    if not a.no_write:
        write_section(Path(a.results), f"bench/eager_gap.py: {cpu_capability()}", body)
    return body


NOTES = """### What was changed in the tool's step, and why its numbers are the same

Three parts of dualobj's step cost more than they had to (dualobj/model.py and dualobj/objective.py,
`--before 5573c41` times the code before them in the same rounds):

* **The attention mask** reached `F.scaled_dot_product_attention` in boolean form, and torch turns a
  boolean mask into the additive one (0 where a position may attend, -inf elsewhere, in the queries'
  dtype) inside every call: in every layer's forward and again in its backward, 2L conversions of a
  [B, 1, T, T] tensor per step. `Transformer.layer_mask` now builds the additive form once per forward;
  the kernel gets the same numbers, so its outputs and gradients are bit for bit the same.
* **RoPE** ran autograd's chunk / neg / cat / mul / add graph. `_Rotary` folds rotate-half's sign into
  the sin table (`[x2, x1] * [-sin, sin]` is `[-x2, x1] * [sin, sin]` exactly: flipping a product's sign
  does not change its rounding), and writes the backward out as the same rotation the other way
  (`g cos + [g2, g1] [sin, -sin]`), each product cast to the input's dtype before one sum, as autograd
  rounds it.
* **The loss tail's backward** took exp(log p) into a fresh [B·T, V] buffer; it now exponentiates the
  saved log p in place (nothing reads it again; a second backward through the same graph is refused by
  autograd's version counter rather than fed wrong numbers).

Checked exact: the model's outputs and every parameter's gradient equal the previous code's bit for bit in
fp32 and bf16 autocast, for the sdpa, math and auto attention paths, on a batch with AR and MD rows,
packed documents and prefixes; `tests/test_golden.py` passes untouched; `dualobj train model=tiny
data.repetitions=4 objective.alpha=0.5 train.tokens=200000` gives the same run id (3a2b812858), the same
summary.json in all 121 keys that are not timings, the same metrics.jsonl and the same eval/*.json scores.

Not closed: gradient clipping (`train.grad_clip=1.0`, in dualobj/train.py; the reference does not clip),
the tool's own choice: 0.1-0.2% of a step with one thread, 2.7-5.4% with two on this shared machine, where each
of its per-tensor ops waits for the second thread; and the mask's build, which a mixed batch needs (above).

The compiled target: dualobj compiled reaches 1.14-1.32x the eager reference, and 0.96-1.01x the compiled
one. Against a compiled peer there is nothing left to win: the matmuls (about 70% of a `small` step) are the
same, and inductor fuses the peer's cross-entropy as well as dualobj's hand-written one, so dualobj's eager
lead (its loss tail) is gone; what remains is clipping and the mask. At these lengths (T = 128, 256) the
per-row mask costs at most 1% against `is_causal`; at longer contexts, where a causal kernel can skip the
key blocks above the diagonal, a per-row mask could cost more (not measured here).

How to read the two thread counts: this machine's 2 cores are shared with other work, so with 2 threads
every parallel op waits for a thread the scheduler has lent elsewhere; that penalises a step by its number
of ops rather than its work (a `tiny` step took 1.6x as long with 2 threads as with 1, and small ops such as
the norms or the mask weigh far more than their work). One thread is never waited for and shows the work
itself; the user-reported gap (a lean peer 6% faster eager) was measured with all threads of the user's own
AVX2 host. The torch.profiler tables time each step after the other, not in the same
rounds, so under this load they are a rough guide only (their totals disagree with the round-robin ones)."""



if __name__ == "__main__":
    main()
