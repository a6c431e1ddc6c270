"""Data pipeline: corpus -> fixed order -> train/val split -> BPE -> prepared tokens -> repeated stream."""

from dualobj.data.corpus import SOURCES, corpus_fingerprint, order_documents, read_documents, split_documents
from dualobj.data.layout import TokenizedCorpus
from dualobj.data.repetition import RepeatedStream, val_windows
from dualobj.data.sources import stream_documents
from dualobj.data.tokenizer import (
    BOS,
    MASK,
    N_SPECIAL,
    SPECIAL_TOKENS,
    TokenizerInfo,
    load_tokenizer,
    special_ids,
    tokenizer_info,
    train_bpe,
)
from dualobj.data.tokens import prepare_corpus, prepare_to

__all__ = [
    "BOS", "MASK", "N_SPECIAL", "SOURCES", "SPECIAL_TOKENS", "RepeatedStream", "TokenizedCorpus",
    "TokenizerInfo", "corpus_fingerprint", "load_tokenizer", "order_documents", "prepare_corpus",
    "prepare_to", "read_documents", "special_ids", "split_documents", "stream_documents", "tokenizer_info",
    "train_bpe", "val_windows",
]
