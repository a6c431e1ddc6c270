"""A dualobj model for Hugging Face transformers: one transformer, causal (AR) or bidirectional (MD) attention.

This file is written next to the weights by ``dualobj export`` and imports only torch and transformers, so
the exported folder is self-contained::

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)                     # prepends <s>, as every training document
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    ids = tok("The river", return_tensors="pt").input_ids
    ar = model(ids).logits                                          # AR mode: causal attention (the default)
    x = ids.clone(); x[:, -1] = model.config.mask_token_id          # MD mode: mask tokens, then
    md = model(x, bidirectional=True).logits                        # bidirectional attention

In both modes the logits at position i predict token i + 1 (masked diffusion in its "masked next-token
prediction" form: a masked token j is read at position j - 1). ``prefix_len`` ([batch] lengths) opens
bidirectional attention inside each row's prefix and keeps the rest causal (prefix-LM inference).
``attention_mask`` (1 = token, 0 = padding, left or right) keeps padding apart from the text.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput


class DualobjConfig(PretrainedConfig):
    """The network's shape and the ids that matter to it (config.json)."""

    model_type = "dualobj"

    def __init__(self, vocab_size: int = 8192, hidden_size: int = 128, num_hidden_layers: int = 4,
                 num_attention_heads: int = 4, intermediate_size: int = 352, max_position_embeddings: int = 128,
                 rope_theta: float = 10000.0, rms_norm_eps: float = 1e-6, head: str = "linear",
                 mask_token_id: int = 4, bos_token_id: int = 1, eos_token_id: int = 1, pad_token_id: int | None = 3,
                 **kwargs):
        self.vocab_size = vocab_size  # tokenizer vocabulary
        self.hidden_size = hidden_size  # residual width
        self.num_hidden_layers = num_hidden_layers  # transformer blocks
        self.num_attention_heads = num_attention_heads  # heads (head dim = hidden_size / heads)
        self.intermediate_size = intermediate_size  # SwiGLU hidden width
        self.max_position_embeddings = max_position_embeddings  # the trained context length
        self.rope_theta = rope_theta  # RoPE base frequency
        self.rms_norm_eps = rms_norm_eps  # RMSNorm epsilon
        self.head = head  # linear (norm, linear) | classifier (norm, linear, GELU-tanh, linear with bias)
        self.mask_token_id = mask_token_id  # the <mask> token of MD mode
        kwargs["tie_word_embeddings"] = False  # the output head is its own matrix
        # eos = <s>: every training document starts with <s>, so the model ends a text by starting the next
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)


def rope_tables(t: int, head_dim: int, theta: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [t, head_dim] of rotary position embedding (rotate-half form), in fp32."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    ang = torch.outer(torch.arange(t, dtype=torch.float32, device=device), inv)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: DualobjConfig):
        super().__init__()
        d = cfg.hidden_size
        self.n_heads, self.head_dim = cfg.num_attention_heads, d // cfg.num_attention_heads
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (m(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2) for m in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(rotate(q, cos, sin), rotate(k, cos, sin), v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, cfg: DualobjConfig):
        super().__init__()
        self.up_value = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_gate = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.up_gate(x)) * self.up_value(x))


class Block(nn.Module):
    def __init__(self, cfg: DualobjConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))


class Head(nn.Module):
    """Final RMSNorm and the projection to the vocabulary (``classifier``: with a d -> d GELU layer first)."""

    def __init__(self, cfg: DualobjConfig):
        super().__init__()
        self.norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.classifier = cfg.head == "classifier"
        if self.classifier:
            self.projection = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.emb2vocab = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=self.classifier)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm(h)
        if self.classifier:
            h = F.gelu(self.projection(h), approximate="tanh")
        return self.emb2vocab(h)


def build_mask(b: int, t: int, device, bidirectional: bool, prefix_len: torch.Tensor | None,
                   padding: torch.Tensor | None) -> torch.Tensor:
    """Boolean [b, 1, t, t] mask, True = may attend: causal or bidirectional, opened inside each row's
    prefix, and padding (attention_mask == 0) a separate segment that text never sees."""
    pos = torch.arange(t, device=device)
    m = (pos[None, :] <= pos[:, None]) | bidirectional  # [query, key]
    m = m[None].expand(b, t, t)
    if prefix_len is not None:
        pre = pos[None, :] < prefix_len.to(device).reshape(-1, 1)
        m = m | (pre[:, :, None] & pre[:, None, :])
    if padding is not None:
        seg = padding.to(device).bool()
        m = m & (seg[:, :, None] == seg[:, None, :])
    return m[:, None]


class DualobjForCausalLM(PreTrainedModel, GenerationMixin):
    """The dualobj transformer: ``forward(input_ids, bidirectional=False)`` gives next-token logits."""

    config_class = DualobjConfig
    base_model_prefix = "dualobj"
    _no_split_modules = ["Block"]

    def __init__(self, config: DualobjConfig):
        super().__init__(config)
        self.embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.head = Head(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Only for weights a checkpoint lacks (an exported one has all of them)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embedding = value

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, attention_mask=None, **unused) -> dict:
        """``generate()`` (AR mode) reads the whole sequence at every step: this model keeps no key-value cache."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                bidirectional: bool = False, prefix_len: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, **unused) -> CausalLMOutput:
        """Logits [batch, length, vocab]; position i predicts token i + 1. ``bidirectional=True`` is MD mode.

        ``labels`` (AR training convention, -100 = ignore): the loss is the mean cross-entropy of each
        position's logits against the next label.
        """
        b, t = input_ids.shape
        cfg = self.config
        cos, sin = rope_tables(t, cfg.hidden_size // cfg.num_attention_heads, cfg.rope_theta, input_ids.device)
        mask = build_mask(b, t, input_ids.device, bidirectional, prefix_len, attention_mask)
        x = self.embedding(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        logits = self.head(x)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

