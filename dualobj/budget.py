"""Every derived quantity of a run's budget, computed once: train, the sweep plan and the report use these.

From the config: steps = D // (batch × seq_len) (the token budget D is rounded down to whole steps),
unique tokens U = D // R, epochs = tokens seen / U, and AR-epochs = Σα over the steps × tokens per
step / U (the number of times the unique data has been seen by the AR objective, under any α schedule).
FLOPs follow the PaLM convention: 6 N per token (matmuls incl. the output head) + attention scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from dualobj.config import Config, ModelConfig
from dualobj.objective import alpha_prefix


def flops_per_token(m: ModelConfig, n_params_non_embedding: int) -> float:
    """Training FLOPs per token: 6 N (matmuls incl. the output head) + attention scores (PaLM convention)."""
    head = m.d_model * m.vocab_size
    return 6.0 * (n_params_non_embedding + head) + 12.0 * m.n_layers * m.seq_len * m.d_model


def ar_share(alpha: float, ar_loss_scale: float) -> float:
    """The AR share of the gradient weight, s·α / (s·α + 1 − α) with s = ``ar_loss_scale``: what α means once
    the AR loss is scaled (the official code's s = 2 makes α = 1/2 an AR share of 2/3)."""
    return ar_loss_scale * alpha / (ar_loss_scale * alpha + 1.0 - alpha)


def param_counts(m: ModelConfig) -> tuple[int, int]:
    """(all parameters, parameters without the embedding and output head) of the model ``m`` describes."""
    import torch

    from dualobj.model import Transformer

    with torch.device("meta"):
        model = Transformer(m)
    return model.num_params(), model.num_params(non_embedding=True)


@dataclass(frozen=True)
class Budget:
    """Steps, tokens, unique data and the α schedule's running sum of one run."""

    cfg: Config

    @property
    def step_tokens(self) -> int:
        """Tokens per optimizer step (global batch × sequence length)."""
        return self.cfg.train.batch_size * self.cfg.model.seq_len

    @property
    def total_steps(self) -> int:
        return self.cfg.train.tokens // self.step_tokens

    @property
    def tokens(self) -> int:
        """Tokens actually trained on (train.tokens rounded down to whole steps)."""
        return self.total_steps * self.step_tokens

    @property
    def unique_tokens(self) -> int:
        return int(self.cfg.train.tokens // int(self.cfg.data.repetitions))

    @cached_property
    def alpha_sum(self) -> list[float]:
        """alpha_sum[s] = Σ α over steps < s (length total_steps + 1): the AR rows of every step follow from it."""
        step_tokens, unique = self.step_tokens, self.unique_tokens
        return alpha_prefix(self.cfg.objective, self.total_steps, lambda s: s * step_tokens / unique)

    def tokens_seen(self, step: int) -> int:
        return step * self.step_tokens

    def epochs(self, step: int) -> float:
        return self.tokens_seen(step) / self.unique_tokens

    def ar_epochs(self, step: int) -> float:
        return self.alpha_sum[step] * self.step_tokens / self.unique_tokens

    def alpha_mean(self) -> float:
        return self.alpha_sum[self.total_steps] / self.total_steps

    @property
    def ar_share(self) -> float:
        """The AR share of the gradient weight over the run (:func:`ar_share` of the mean α; α itself when constant)."""
        o = self.cfg.objective
        return ar_share(o.alpha if o.alpha_schedule == "constant" else self.alpha_mean(), o.ar_loss_scale)

    def accounting(self, step: int) -> dict:
        """The progress fields of a metrics line or a summary at ``step``."""
        return {"step": step, "tokens_seen": self.tokens_seen(step), "epochs": self.epochs(step),
                "ar_epochs": self.ar_epochs(step)}

    @cached_property
    def params(self) -> tuple[int, int]:
        """(all parameters, without embedding and head)."""
        return param_counts(self.cfg.model)

    def flops_per_token(self) -> float:
        return flops_per_token(self.cfg.model, self.params[1])

    def flops(self) -> float:
        """Training FLOPs of the whole run."""
        return self.flops_per_token() * self.total_steps * self.step_tokens
