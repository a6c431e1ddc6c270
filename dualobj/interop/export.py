"""``dualobj export RUN_DIR --to DIR``: a finished run as a self-contained Hugging Face folder.

The folder holds ``config.json`` (the shape, ``auto_map`` to the modeling file, the ``<mask>`` id and the run's
provenance under ``dualobj``), ``model.safetensors`` (the newest intact checkpoint, fp32, under the same
parameter names as ``dualobj.model`` under ``model.``), ``tokenizer.json`` + ``tokenizer_config.json`` (the run's
tokenizer; it prepends ``<s>`` as every training document starts with it, and reads a typed "<s>" as text, as
the scorer does), ``dualobj_model.py`` (dualobj's own ``model.py``, written without its one dualobj import, so
there is one definition of the network) and ``modeling_dualobj.py`` (a thin transformers wrapper around it).
``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`` loads it in AR mode;
``model(ids, bidirectional=True)`` is MD mode (see that file's doc).

The folder is built under a temporary name beside DIR and renamed into place when complete, so DIR is
either absent or whole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from dualobj.errors import ConfigError
from dualobj.interop.runs import done_run
from dualobj.run import atomic_write, sha256_file, write_json

MODELING = Path(__file__).with_name("modeling_dualobj.py")
MODEL_SOURCE = Path(__file__).resolve().parent.parent / "model.py"
MODEL_COPY = "dualobj_model.py"  # the name modeling_dualobj.py imports it by
# model.py's only dualobj import (a type, for annotations); the exported copy goes without it
CONFIG_IMPORT = "if TYPE_CHECKING:\n    from dualobj.config import ModelConfig\n"
AUTO_MAP = {"AutoConfig": "modeling_dualobj.DualobjConfig",
            "AutoModelForCausalLM": "modeling_dualobj.DualobjForCausalLM"}


def export(run_dir: str | Path, to: str | Path) -> Path:
    """Write the run's model, tokenizer and modeling file to the new folder ``to``; returns its path."""
    from dualobj.evaluate.evaluator import Evaluator

    to = Path(to)
    if to.exists():
        raise ConfigError(f"export target {to} exists; give a new folder with --to (an export never overwrites)")
    ev = Evaluator(done_run(run_dir))
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{to.name}.", suffix=".tmp", dir=to.parent))
    try:
        write_weights(ev.model, tmp / "model.safetensors")
        write_tokenizer(ev, tmp)
        write_json(tmp / "config.json", hf_config(ev))
        atomic_write(tmp / MODELING.name, MODELING.read_bytes())
        atomic_write(tmp / MODEL_COPY, model_source())
        share(tmp)
        tmp.rename(to)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return to


def model_source() -> str:
    """dualobj/model.py as the exported folder's ``dualobj_model.py``: the same code, less the config import."""
    text = MODEL_SOURCE.read_text()
    if CONFIG_IMPORT not in text:
        raise RuntimeError(f"{MODEL_SOURCE} no longer imports its config as {CONFIG_IMPORT!r}; update export.py")
    return text.replace(CONFIG_IMPORT, "")


def share(folder: Path) -> None:
    """Permissions of an ordinary folder (the umask's), not the private ones of temporary files."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for p in folder.iterdir():
        p.chmod(0o666 & ~umask)


def write_weights(model, path: Path) -> None:
    """The model's parameters as fp32 safetensors, named as in ``dualobj.model`` under the wrapper's ``model.``."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, save(tensors, metadata={"format": "pt"}))


def special_tokens(ev) -> dict[str, str]:
    """The tokenizer's special tokens by role: bos = eos = the document-start token, mask, and pad / unk
    where the vocabulary has them."""
    tok = ev.tokenizer
    bos, mask = tok.id_to_token(ev.corpus.bos_id), tok.id_to_token(ev.corpus.mask_id)
    out = {"bos_token": bos, "eos_token": bos, "mask_token": mask}
    for role, name in (("pad_token", "<pad>"), ("unk_token", "<unk>")):
        if tok.token_to_id(name) is not None:
            out[role] = name
    return out


def write_tokenizer(ev, folder: Path) -> None:
    """tokenizer.json (the run's tokenizer, with <s> prepended) and tokenizer_config.json for AutoTokenizer."""
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(ev.corpus.tokenizer_path)
    bos = tok.id_to_token(ev.corpus.bos_id)
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                                       special_tokens=[(bos, ev.corpus.bos_id)])
    tok.encode_special_tokens = True
    atomic_write(folder / "tokenizer.json", tok.to_str())
    write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", **special_tokens(ev),
        "model_max_length": ev.cfg.model.seq_len, "split_special_tokens": True,
        "add_prefix_space": prefix_space(tok), "clean_up_tokenization_spaces": False,
    })


def prefix_space(tok) -> bool:
    """Whether the tokenizer's byte-level pre-tokenizer adds a space before a text (transformers 4 would
    otherwise switch it off)."""
    import json

    state = json.loads(tok.to_str()).get("pre_tokenizer") or {}
    return bool(state.get("add_prefix_space", False))


def hf_config(ev) -> dict:
    """config.json: the shape under transformers' usual names, the special ids, and where the weights came from."""
    m, tok = ev.cfg.model, ev.tokenizer
    return {
        "architectures": ["DualobjForCausalLM"], "model_type": "dualobj", "auto_map": AUTO_MAP,
        "vocab_size": m.vocab_size, "hidden_size": m.d_model, "num_hidden_layers": m.n_layers,
        "num_attention_heads": m.n_heads, "intermediate_size": m.d_ff, "max_position_embeddings": m.seq_len,
        "rope_theta": m.rope_theta, "rms_norm_eps": m.norm_eps, "head": m.head,
        "bos_token_id": ev.corpus.bos_id, "eos_token_id": ev.corpus.bos_id, "mask_token_id": ev.corpus.mask_id,
        "pad_token_id": tok.token_to_id("<pad>"), "tie_word_embeddings": False, "torch_dtype": "float32",
        "dualobj": provenance(ev),
    }


def provenance(ev) -> dict:
    """Which run and checkpoint the weights are, and how it was trained."""
    from dualobj import config as C
    from dualobj.evaluate.evaluator import code_version

    return {"run_id": C.run_id(ev.cfg), "checkpoint_step": ev.step, "alpha": ev.cfg.objective.alpha,
            "repetitions": ev.cfg.data.repetitions, "tokens": ev.cfg.train.tokens,
            "tokenizer_sha256": sha256_file(Path(ev.corpus.tokenizer_path)), "exported_by": code_version()}
