"""Byte-level BPE (HF `tokenizers`) with the special tokens the objectives rely on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dualobj.errors import DataError

# Id order is fixed for trained tokenizers: ids < N_SPECIAL are special and never masked.
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<mask>"]
BOS_TOKEN, MASK_TOKEN = "<s>", "<mask>"
BOS = SPECIAL_TOKENS.index(BOS_TOKEN)  # 1: document start, prepended to every document
MASK = SPECIAL_TOKENS.index(MASK_TOKEN)  # 4
N_SPECIAL = len(SPECIAL_TOKENS)
MIN_BPE_VOCAB = N_SPECIAL + 256  # the byte alphabet is always in the vocabulary


@dataclass
class TokenizerInfo:
    bos_id: int
    mask_id: int
    special_ids: list[int]
    vocab_size: int  # ids are in [0, vocab_size)


def vocab_size_of(tok: Tokenizer) -> int:
    """Embedding rows a model needs: max id + 1 (ids of a foreign tokenizer need not be contiguous)."""
    return max(tok.get_vocab(with_added_tokens=True).values()) + 1


def special_ids(tok: Tokenizer) -> list[int]:
    """Ids never to mask: our special tokens present in tok plus any token it declares special."""
    ids = {tok.token_to_id(t) for t in SPECIAL_TOKENS} - {None}
    ids |= {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    return sorted(ids)


def tokenizer_info(tok: Tokenizer) -> TokenizerInfo:
    return TokenizerInfo(tok.token_to_id(BOS_TOKEN), tok.token_to_id(MASK_TOKEN), special_ids(tok),
                         vocab_size_of(tok))


def train_bpe(docs: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE with exactly vocab_size tokens (fewer only if the corpus has too few merges)."""
    if vocab_size < MIN_BPE_VOCAB:
        raise DataError(f"model.vocab_size={vocab_size} is below {MIN_BPE_VOCAB}, the byte alphabet plus "
                        "special tokens of a byte-level BPE; raise model.vocab_size")
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[0]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    return tok


def load_tokenizer(path: str, vocab_size: int) -> Tokenizer:
    """A user-given tokenizer.json; it needs <s> and <mask> and must fit in the model's embedding."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"data.tokenizer={path} is not a file; give a tokenizer.json or leave it empty to train BPE")
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as e:
        msg = " ".join(str(e).split())[:200]
        raise DataError(f"data.tokenizer={path} is not a valid tokenizer.json ({msg}); "
                        "give a file saved by HF tokenizers") from None
    missing = [t for t in (BOS_TOKEN, MASK_TOKEN) if tok.token_to_id(t) is None]
    if missing:
        raise DataError(f"data.tokenizer={path} lacks the token(s) {', '.join(missing)}; "
                        f"add {' and '.join(missing)} as special tokens or leave data.tokenizer empty to train BPE")
    v = vocab_size_of(tok)
    if v > vocab_size:
        raise DataError(f"tokenizer has {v} tokens but model.vocab_size={vocab_size}; "
                        f"use a model with vocab_size >= {v} or another tokenizer")
    return tok
