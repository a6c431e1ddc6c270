"""Byte-level BPE (HF `tokenizers`) with the special tokens the objectives rely on."""

from __future__ import annotations

import hashlib
import heapq
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


def _read_tokenizer(path: str) -> Tokenizer:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"data.tokenizer={path} is not a file; give a tokenizer.json or leave it empty to train BPE")
    try:
        return Tokenizer.from_file(str(p))
    except Exception as e:
        msg = " ".join(str(e).split())[:200]
        raise DataError(f"data.tokenizer={path} is not a valid tokenizer.json ({msg}); "
                        "give a file saved by HF tokenizers") from None


def _check_fits(tok: Tokenizer, vocab_size: int) -> None:
    v = vocab_size_of(tok)
    if v > vocab_size:
        raise DataError(f"tokenizer has {v} tokens but model.vocab_size={vocab_size}; "
                        f"use a model with vocab_size >= {v} or another tokenizer")


def load_tokenizer(path: str, vocab_size: int) -> Tokenizer:
    """A user-given tokenizer.json; it needs <s> and <mask> and must fit in the model's embedding."""
    tok = _read_tokenizer(path)
    missing = [t for t in (BOS_TOKEN, MASK_TOKEN) if tok.token_to_id(t) is None]
    if missing:
        raise DataError(f"data.tokenizer={path} lacks the token(s) {', '.join(missing)}; "
                        f"add {' and '.join(missing)} as special tokens or leave data.tokenizer empty to train BPE")
    _check_fits(tok, vocab_size)
    return tok


def load_id_tokenizer(path: str | None, vocab_size: int, separator_id: int) -> tuple[Tokenizer, TokenizerInfo, int]:
    """(tokenizer, its info, how many ids the file may hold) for an already-tokenized file whose documents
    are separated by separator_id. The separator starts every document (it plays <s>); a <mask> token is
    added after the file's ids when the tokenizer has none."""
    if not path:
        raise DataError("data.source=bin needs data.tokenizer=<the tokenizer.json that made the ids>; "
                        "give it (e.g. GPT-2's tokenizer.json for nanoGPT files)")
    tok = _read_tokenizer(path)
    n = vocab_size_of(tok)
    if n > 1 << 16:
        raise DataError(f"data.tokenizer has {n:,} tokens but a uint16 token file holds ids below 65,536 only; "
                        "give the tokenizer that made the file")
    if not 0 <= separator_id < n:
        raise DataError(f"data.separator_id={separator_id} is not a token id of data.tokenizer ({n} tokens); "
                        "set it to the id that separates documents (50256 for GPT-2's <|endoftext|>)")
    if tok.token_to_id(MASK_TOKEN) is None:
        tok.add_special_tokens([MASK_TOKEN])
    _check_fits(tok, vocab_size)
    specials = sorted(set(special_ids(tok)) | {separator_id})
    return tok, TokenizerInfo(separator_id, tok.token_to_id(MASK_TOKEN), specials, vocab_size_of(tok)), n


class BpeSample:
    """The training documents a BPE learns from: those with the smallest sample keys (a hash of their
    text) that fit in max_bytes, so the sample is a uniform one, the same in any reading order, and the
    whole training split when it fits. Memory: max_bytes of text."""

    def __init__(self, max_bytes: int, val_fraction: float):
        self.max_bytes, self.val_fraction = int(max_bytes), val_fraction
        self.heap: list[tuple[int, int, float, int, str]] = []  # (-key, seq, split hash, bytes, doc)
        self.size, self.candidates = 0, 0
        self.min_h, self.max_h = 2.0, -1.0
        self.top: list[str] = []  # the highest-hash documents: the training split if no hash reaches val_fraction
        self.truncated = False

    def offer(self, seq: int, doc: str, raw: bytes, h: float) -> None:
        self.min_h = min(self.min_h, h)
        if h > self.max_h:
            self.top, self.max_h = [doc], h
        elif h == self.max_h:
            self.top.append(doc)
        if h < self.val_fraction:
            return
        self.candidates += 1
        key = int.from_bytes(hashlib.blake2b(raw, digest_size=8, person=b"bpe-sample").digest(), "big")
        heapq.heappush(self.heap, (-key, seq, h, len(raw), doc))
        self.size += len(raw)
        while self.size > self.max_bytes and len(self.heap) > 1:  # at least one document stays
            self.size -= heapq.heappop(self.heap)[3]
            self.truncated = True

    def documents(self) -> list[str]:
        """The sample in reading order, with the split's fallbacks for corpora that hash to one side."""
        if not self.candidates:  # no hash reaches val_fraction: the highest-hash documents are the training split
            return self.top
        kept = sorted(self.heap, key=lambda x: x[1])
        no_val = self.min_h >= self.val_fraction  # then the lowest-hash documents are the validation split
        return [d for _, _, h, _, d in kept if not (no_val and h == self.min_h)]
