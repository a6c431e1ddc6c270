"""Optimizers and the learning-rate schedule.

AdamW by default; ``muon`` is the paper's split: Muon (Nesterov 0.95, 5 Newton-Schulz steps, update
scaled to AdamW's RMS: 0.2 sqrt(max(rows, cols))) on every 2-D matrix inside the blocks and the
classifier head's projection, AdamW on embeddings, the output matrix, norms and biases. Weight decay
is decoupled and applied to all parameters, as in the official code.

torch's Muon orthogonalises in bf16 always; ours takes the dtype from the hardware (``ns_bf16``): bf16
where bf16 matmuls are native (GPUs, AVX512-BF16/AMX CPUs), fp32 elsewhere, where an emulated bf16
matmul is about 100x slower than fp32. The fp32 iteration pads the long side of a matrix with zero columns
to a multiple of 64 (they stay zero and add nothing to the Gram matrix): BLAS runs the paper model's
1024x3554 feed-forward matrices about 20% faster at width 3584 on a CPU.
"""

from __future__ import annotations

import torch

from dualobj.config import TrainConfig


class Combined(torch.optim.Optimizer):
    """Several optimizers stepped as one (state_dict/param_groups span all of them)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers
        self.defaults = {}
        self.state = {}

    @property
    def param_groups(self):
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self, closure=None):
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state):
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)


class Muon(torch.optim.Muon):
    """torch's Muon (same hyper-parameters, same state_dict) with the Newton-Schulz dtype chosen."""

    def __init__(self, params, *, ns_bf16: bool = True, **kw):
        super().__init__(params, **kw)
        self.ns_dtype = torch.bfloat16 if ns_bf16 else torch.float32

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            params, grads, bufs = [], [], []
            self._init_group(g, params, grads, bufs)
            for p, grad, buf in zip(params, grads, bufs, strict=True):
                buf.lerp_(grad, 1 - g["momentum"])
                update = grad.lerp(buf, g["momentum"]) if g["nesterov"] else buf
                update = newton_schulz(update, g["ns_coefficients"], g["ns_steps"], g["eps"], self.ns_dtype)
                rows, cols = p.shape
                rms_adamw = g["adjust_lr_fn"] == "match_rms_adamw"
                scale = 0.2 * max(rows, cols) ** 0.5 if rms_adamw else max(1, rows / cols) ** 0.5
                p.mul_(1 - g["lr"] * g["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-g["lr"] * scale)


_ALIGN = 64  # the fp32 iteration's width is padded to a multiple of this


def newton_schulz(g: torch.Tensor, coefficients, steps: int, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """The quintic Newton-Schulz iteration towards the orthogonal factor of ``g`` (Keller Jordan's Muon)."""
    a, b, c = coefficients
    x = g.to(dtype)
    tall = g.shape[0] > g.shape[1]
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    width = x.shape[1]
    if dtype == torch.float32 and width % _ALIGN:  # bf16 stays exactly torch's Muon
        x = torch.nn.functional.pad(x, (0, _ALIGN - width % _ALIGN))
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    x = x[:, :width]
    return x.T if tall else x


def _muon_params(model: torch.nn.Module) -> tuple[list, list]:
    muon, adam = [], []
    for name, p in model.named_parameters():
        in_body = name.startswith("layers.") or name.startswith("head.projection")
        (muon if in_body and p.ndim == 2 else adam).append(p)
    return muon, adam


def _adamw(params, t: TrainConfig) -> torch.optim.AdamW:
    # The fused kernel (CPU and CUDA) does one pass per tensor instead of ~6 for-loop ops.
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    return torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), eps=1e-8, weight_decay=t.weight_decay,
                             fused=fused or None)


def build_optimizer(model: torch.nn.Module, t: TrainConfig, bf16: bool = True) -> torch.optim.Optimizer:
    """The run's optimizer; ``bf16``: whether Muon orthogonalises in bf16 (where bf16 matmuls are native)."""
    if t.optimizer == "adamw":
        return _adamw(model.parameters(), t)
    muon, adam = _muon_params(model)
    return Combined([
        Muon(muon, lr=t.lr, weight_decay=t.weight_decay, momentum=0.95, nesterov=True, ns_steps=5,
             adjust_lr_fn="match_rms_adamw", ns_bf16=bf16),
        _adamw(adam, t),
    ])


def wsd(step: int, total: int, warmup: float, cooldown: float) -> float:
    """Warmup-stable-decay multiplier: linear warm-up, constant, linear decay to 0 over the last share."""
    n_warm, n_cool = int(warmup * total), int(cooldown * total)
    if n_warm and step < n_warm:
        return (step + 1) / n_warm
    if n_cool and step >= total - n_cool:
        return max(0.0, (total - step) / n_cool)
    return 1.0


def set_lr(opt: torch.optim.Optimizer, t: TrainConfig, step: int, total: int) -> float:
    """Set the learning rate for ``step`` (a pure function of the step, so resume needs no scheduler state)."""
    lr = t.lr * wsd(step, total, t.warmup, t.cooldown)
    for g in opt.param_groups:
        g["lr"] = lr
    return lr
