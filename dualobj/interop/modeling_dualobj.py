"""A dualobj model for Hugging Face transformers: one transformer, causal (AR) or bidirectional (MD) attention.

``dualobj export`` writes this file next to the weights together with ``dualobj_model.py``, which is
dualobj's own ``model.py`` (the one the run trained with, less its config import), so the network is
defined in one place and the exported folder needs only torch and transformers::

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

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .dualobj_model import RoPE, Transformer

ROPE_POSITIONS = 8192  # rotary tables cover at least this many positions (generation may run past the context)


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


def model_config(cfg: DualobjConfig) -> SimpleNamespace:
    """dualobj's ModelConfig fields from config.json (dense attention: the exported model runs anywhere)."""
    return SimpleNamespace(
        name="exported", vocab_size=cfg.vocab_size, d_model=cfg.hidden_size, n_layers=cfg.num_hidden_layers,
        n_heads=cfg.num_attention_heads, d_ff=cfg.intermediate_size,
        seq_len=max(cfg.max_position_embeddings, ROPE_POSITIONS), rope_theta=cfg.rope_theta,
        norm_eps=cfg.rms_norm_eps, head=cfg.head, attention="sdpa")


class DualobjForCausalLM(PreTrainedModel, GenerationMixin):
    """The dualobj transformer: ``forward(input_ids, bidirectional=False)`` gives next-token logits."""

    config_class = DualobjConfig
    base_model_prefix = "model"
    _no_split_modules = ["Block"]

    def __init__(self, config: DualobjConfig):
        super().__init__(config)
        self.model = Transformer(model_config(config))
        self.rope_ready = False  # see _rope
        self.post_init()

    def _rope(self, device) -> None:
        """Rebuild the rotary tables once, where the model runs: they are not weights (no checkpoint holds
        them), and transformers builds the model on the meta device before loading, leaving them empty."""
        if not self.rope_ready or self.model.rope.cos.device != torch.device(device):
            m = self.model.cfg
            self.model.rope = RoPE(m.d_model // m.n_heads, m.seq_len, m.rope_theta).to(device)
            self.rope_ready = True

    def _init_weights(self, module) -> None:
        """Nothing to do: dualobj's own init ran in Transformer(), and an exported checkpoint has every weight."""

    def get_input_embeddings(self):
        return self.model.embedding

    def set_input_embeddings(self, value) -> None:
        self.model.embedding = value

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, attention_mask=None, **unused) -> dict:
        """``generate()`` (AR mode) reads the whole sequence at every step: this model keeps no key-value cache."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                bidirectional: bool = False, prefix_len: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, **unused) -> CausalLMOutput:
        """Logits [batch, length, vocab]; position i predicts token i + 1. ``bidirectional=True`` is MD mode.

        Padding (``attention_mask == 0``) is a document of its own, which text never attends to. ``labels`` (AR
        training convention, -100 = ignore): the loss is the mean cross-entropy of each position's logits
        against the next label.
        """
        self._rope(input_ids.device)
        segments = None if attention_mask is None else (attention_mask == 0).long().to(input_ids.device)
        logits = self.model(input_ids, not bidirectional, segments,
                            None if prefix_len is None else prefix_len.to(input_ids.device))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)
