"""Typed configs behind the Hydra tree in ``conf/``, their validation, and composition.

Every field has a one-line doc; ``validate`` turns a composed config into these dataclasses and
raises a one-line ``ConfigError`` for any bad value. The run identity hashes only the semantic
part (model, data, objective, train, seed), never logging or output settings.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from dualobj.errors import ConfigError


@dataclass
class ModelConfig:
    """Transformer shape. One pre-norm decoder; the objective decides the attention mask."""

    name: str = MISSING  # size label, e.g. tiny
    vocab_size: int = 8192  # tokenizer vocabulary (BPE is trained to this size)
    d_model: int = 128  # residual width
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads (head dim = d_model / n_heads)
    d_ff: int = 352  # SwiGLU hidden width
    seq_len: int = 128  # tokens per training sequence (context length)
    rope_theta: float = 10000.0  # RoPE base frequency
    norm_eps: float = 1e-6  # RMSNorm epsilon
    head: str = "linear"  # linear (norm + linear) | classifier (the paper's norm, linear, GELU, linear+bias)
    attention: str = "auto"  # auto | sdpa (fused, dense mask) | math (explicit, fp32 softmax) | flex (GPU block mask)


@dataclass
class DataConfig:
    """Corpus, tokenizer and data repetition."""

    source: str = "wiki"  # wiki (embedded) | text | textdir | jsonl (.gz/.zst) | parquet | tokens | bin (uint16 ids)
    path: str | None = None  # file or folder of the corpus (every source but wiki)
    text_field: str = "text"  # JSONL field / parquet column that holds the document text
    repetitions: float = 1  # R: the unique data is train.tokens / R tokens, each seen R times
    val_fraction: float = 0.05  # share of documents held out for validation (by content hash)
    order_seed: int = 1234  # fixed document order (never depends on R or the run seed)
    tokenizer: str | None = None  # path to a tokenizer.json; empty = train a byte-level BPE here
    tokenizer_sample_bytes: int = 256_000_000  # text the BPE is trained on at most (a uniform sample of train)
    separator_id: int = -1  # bin: the token id between documents (50256 = GPT-2's <|endoftext|>)
    cache_dir: str = "~/.cache/dualobj"  # token memmaps and tokenizers, keyed by (corpus, tokenizer)
    val_sequences: int = 32  # validation windows used by in-training validation


@dataclass
class ObjectiveConfig:
    """The dual objective: alpha * AR + (1 - alpha) * masked diffusion (MNTP form)."""

    alpha: float = 0.5  # AR weight: share of sequences trained with the causal AR loss (1 = pure AR)
    alpha_schedule: str = "constant"  # constant | linear | cosine | step | ar_epochs_capped (see objective.py)
    alpha_start: float = 1.0  # schedules: α at the start (linear, cosine), before the step, or the cap's ceiling
    alpha_step_epoch: float = 1.0  # step: epoch at which α switches from alpha_start to alpha
    ar_epochs_cap: float = 16.0  # ar_epochs_capped: α = min(alpha_start, cap / epochs so far)
    ar_loss_scale: float = 1.0  # extra factor on the AR loss (the official code uses 2.0)
    z_loss: float = 1e-4  # weight of the log-partition penalty logsumexp(logits)^2
    min_mask_frac: float = 1e-4  # floor of the realised mask fraction in the 1/t weights


@dataclass
class TrainConfig:
    """Optimisation, budget and bookkeeping."""

    tokens: int = 1_000_000  # token budget D (target tokens seen); steps = D / (batch_size * seq_len)
    batch_size: int = 32  # sequences per optimizer step (global batch)
    micro_batch_size: int = 0  # sequences per forward pass (0 = batch_size); gradients accumulate
    optimizer: str = "adamw"  # adamw | muon (Muon on 2-D body matrices, AdamW on the rest, as the paper)
    lr: float = 3e-3  # peak learning rate
    weight_decay: float = 0.1  # decoupled weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW betas
    warmup: float = 0.02  # share of steps with linear warm-up
    cooldown: float = 0.25  # share of steps with linear decay to zero at the end (WSD)
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    precision: str = "auto"  # auto (bf16 where the hardware supports it) | bf16 | fp32
    compile: bool = False  # torch.compile the model (pays a one-time compile per process)
    threads: int = 0  # torch CPU threads per process (0 = torch default, or cores / nproc under DDP)
    nproc: int = 1  # data-parallel processes on this node, started through torchrun (DDP: gloo on CPU, nccl on GPU)
    log_every: int = 10  # steps between training-metric lines
    eval_every: int = 0  # steps between validations (0 = about 8 per run)
    val_md_samples: int = 2  # noise levels per window for the in-training MD ELBO (eval.md_samples for final scores)
    checkpoint_every: int = 0  # steps between checkpoints (0 = every 10 minutes of wall time; always at the end)
    keep_checkpoints: int = 2  # checkpoints kept on disk (the newest ones)
    progress: bool = True  # show a progress bar


@dataclass
class LoggerConfig:
    """Where metrics go besides the run directory's own files (which are the source of truth)."""

    name: str = "local"  # local | wandb
    mode: str = "offline"  # wandb mode: offline | online | disabled
    project: str = "dualobj"  # wandb project
    entity: str | None = None  # wandb entity (team or user)
    group: str | None = None  # wandb group (a sweep sets its name)


@dataclass
class EvalConfig:
    """Zero-shot evaluation (``dualobj eval`` and the end of ``dualobj train``); never part of the run id."""

    tasks: list[str] = field(default_factory=lambda: [  # tasks, task sets (builtin, paper9) or task .yaml files
        "val", "builtin", "lambada", "probe_mc", "probe_cloze"])
    task_set: str = "builtin"  # the task set eval/avg/<mode> averages: builtin | paper9 (all its tasks must be scored)
    task_files: dict[str, str] = field(default_factory=dict)  # declared task -> its data file, {hellaswag: /d/hs.jsonl}
    modes: list[str] = field(default_factory=lambda: ["ar", "md", "prefix"])  # ar | md | prefix (paper's Remark 3)
    limit: int | None = 200  # items per task (null = all), taken as eval.subset says
    subset: str = "random"  # random (a seeded subsample, file order) | first (the first `limit`, as lm-eval's --limit)
    md_estimator: str = "mc"  # mc (unbiased ELBO: k uniform on 1..n, weight n/k, K samples) | pll (one token at a time)
    md_samples: int = 8  # K: masks per item (validation: per window) for the mc estimator
    seed: int = 0  # seeds subsampling, probes and the MD noise
    batch_size: int = 0  # rows per forward pass in validation and evaluation (0 = auto: about 128 MiB of fp32 logits)
    probe_items: int = 200  # items in each built-in probe
    val_windows: int = 128  # validation windows for the val task (AR NLL, MD ELBO, bits per byte)
    benchmark_dir: str | None = None  # benchmark files; null = $DUALOBJ_BENCHMARKS or ../shared/data/benchmarks
    at_end: bool = True  # evaluate at the end of `dualobj train` (tasks with missing files are skipped)


@dataclass
class Config:
    """A whole training run."""

    model: ModelConfig = field(default_factory=ModelConfig)  # conf/model/: the network's shape
    data: DataConfig = field(default_factory=DataConfig)  # conf/data/: corpus, tokenizer, repetition
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)  # conf/objective/: the AR/MD mix
    train: TrainConfig = field(default_factory=TrainConfig)  # conf/train/: optimisation and budget
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # conf/logger/: metric mirrors
    eval: EvalConfig = field(default_factory=EvalConfig)  # eval.*: zero-shot scoring after training
    seed: int = 0  # seeds model init, data order within epochs, masking
    out: str | None = None  # run directory (default: runs/<run id>)


CHOICES = {
    "model.head": ("linear", "classifier"),
    "model.attention": ("auto", "sdpa", "math", "flex"),
    "data.source": ("wiki", "text", "textdir", "jsonl", "parquet", "tokens", "bin"),
    "train.optimizer": ("adamw", "muon"),
    "train.precision": ("auto", "bf16", "fp32"),
    "eval.subset": ("random", "first"),
    "logger.name": ("local", "wandb"),
    "logger.mode": ("offline", "online", "disabled"),
    "eval.md_estimator": ("mc", "pll"),
    "objective.alpha_schedule": ("constant", "linear", "cosine", "step", "ar_epochs_capped"),
}


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _validate_choices(cfg: Config) -> None:
    for key, allowed in CHOICES.items():
        group, name = key.split(".")
        value = getattr(getattr(cfg, group), name)
        _check(value in allowed, f"{key}={value!r} is not one of {', '.join(allowed)}; pick one of them")


def _validate_model(m: ModelConfig) -> None:
    _check(m.d_model % m.n_heads == 0 and (m.d_model // m.n_heads) % 2 == 0,
           f"model.d_model={m.d_model} must split into model.n_heads={m.n_heads} heads of even size (RoPE)")
    _check(m.vocab_size >= 261, f"model.vocab_size={m.vocab_size} is too small for byte-level BPE; use at least 261")
    _check(m.rope_theta > 0 and m.norm_eps > 0, "model.rope_theta and model.norm_eps must be > 0")


def _validate_positive(cfg: Config) -> None:
    m, d, t = cfg.model, cfg.data, cfg.train
    for key, value in [
        ("model.vocab_size", m.vocab_size), ("model.d_model", m.d_model), ("model.n_layers", m.n_layers),
        ("model.n_heads", m.n_heads), ("model.d_ff", m.d_ff), ("model.seq_len", m.seq_len),
        ("train.tokens", t.tokens), ("train.batch_size", t.batch_size), ("train.log_every", t.log_every),
        ("train.nproc", t.nproc), ("train.val_md_samples", t.val_md_samples),
        ("train.keep_checkpoints", t.keep_checkpoints), ("data.val_sequences", d.val_sequences),
    ]:
        _check(isinstance(value, int) and value >= 1, f"{key}={value} must be a positive integer")


def _validate_train(t: TrainConfig, seq_len: int) -> None:
    mb = t.micro_batch_size or t.batch_size
    _check(0 < mb <= t.batch_size and t.batch_size % mb == 0,
           f"train.micro_batch_size={t.micro_batch_size} must divide train.batch_size={t.batch_size}")
    step_tokens = t.batch_size * seq_len
    _check(t.tokens >= step_tokens,
           f"train.tokens={t.tokens} is below one optimizer step ({t.batch_size} x {seq_len} = "
           f"{step_tokens} tokens); raise train.tokens or lower train.batch_size")
    _check(t.lr > 0 and math.isfinite(t.lr), f"train.lr={t.lr} must be a positive number")
    _check(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay} must be >= 0")
    _check(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas),
           f"train.betas={t.betas} must be two numbers in [0, 1)")
    _check(0 <= t.warmup < 1 and 0 <= t.cooldown <= 1 and t.warmup + t.cooldown <= 1,
           f"train.warmup={t.warmup} and train.cooldown={t.cooldown} must be shares in [0, 1] summing to <= 1")
    _check(t.grad_clip >= 0, f"train.grad_clip={t.grad_clip} must be >= 0 (0 = off)")
    for key, value in [("train.eval_every", t.eval_every), ("train.checkpoint_every", t.checkpoint_every),
                       ("train.threads", t.threads)]:
        _check(value >= 0, f"{key}={value} must be >= 0 (0 = automatic)")


def _validate_objective(o: ObjectiveConfig) -> None:
    a = o.alpha
    _check(
        isinstance(a, (int, float)) and math.isfinite(a) and 0.0 <= a <= 1.0,
        f"objective.alpha={a} is outside [0, 1]; set it to an AR weight in [0, 1] (1 = pure AR, 0 = pure diffusion)",
    )
    _check(0.0 <= o.alpha_start <= 1.0, f"objective.alpha_start={o.alpha_start} is outside [0, 1]")
    _check(o.alpha_step_epoch >= 0, f"objective.alpha_step_epoch={o.alpha_step_epoch} must be >= 0")
    _check(o.ar_epochs_cap > 0, f"objective.ar_epochs_cap={o.ar_epochs_cap} must be > 0")
    _check(o.ar_loss_scale > 0, f"objective.ar_loss_scale={o.ar_loss_scale} must be > 0")
    _check(o.z_loss >= 0, f"objective.z_loss={o.z_loss} must be >= 0")
    _check(0 < o.min_mask_frac < 1, f"objective.min_mask_frac={o.min_mask_frac} must be in (0, 1)")


def _validate_data(d: DataConfig) -> None:
    r = d.repetitions
    _check(
        float(r) == int(r) and r >= 1,
        f"data.repetitions={r} must be a whole number >= 1 (R=1 means every token is unique)",
    )
    _check(0 < d.val_fraction < 1, f"data.val_fraction={d.val_fraction} must be in (0, 1)")
    _check(d.tokenizer_sample_bytes > 0, f"data.tokenizer_sample_bytes={d.tokenizer_sample_bytes} must be > 0")
    if d.source == "bin":
        _check(d.separator_id >= 0, "data.source=bin needs data.separator_id=<the token id between documents> "
                                    "(50256 for GPT-2's <|endoftext|>)")
        _check(bool(d.tokenizer), "data.source=bin needs data.tokenizer=<the tokenizer.json that made the ids>")
    if d.source != "wiki":
        _check(bool(d.path), f"data.source={d.source} needs data.path=<file or folder>")


def _validate_eval(e: EvalConfig) -> None:
    bad_modes = [x for x in e.modes if x not in ("ar", "md", "prefix")]
    _check(not bad_modes and len(e.modes) > 0, f"eval.modes={e.modes}: use a list drawn from ar, md, prefix")
    _check(e.limit is None or e.limit >= 1, f"eval.limit={e.limit} must be >= 1 or null (all items)")
    for key, value in [("eval.md_samples", e.md_samples), ("eval.probe_items", e.probe_items),
                       ("eval.val_windows", e.val_windows)]:
        _check(value >= 1, f"{key}={value} must be a positive integer")
    _check(e.batch_size >= 0, f"eval.batch_size={e.batch_size} must be >= 0 (0 = automatic)")


def validate(cfg: Config) -> Config:
    """Raise a one-line ConfigError naming the bad key and the fix; return cfg unchanged."""
    _validate_choices(cfg)
    _validate_objective(cfg.objective)
    _validate_data(cfg.data)
    _validate_positive(cfg)
    _validate_model(cfg.model)
    _validate_train(cfg.train, cfg.model.seq_len)
    _validate_eval(cfg.eval)
    return cfg


# --------------------------------------------------------------------------- composition

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def register_schemas() -> None:
    """Register the schema with Hydra so every YAML in conf/ is type-checked against the dataclasses."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose conf/<config_name>.yaml with Hydra overrides; bad overrides become ConfigError.

    Hydra builds the defaults list and merges the group files (about 0.3 s a call); a sweep composes one
    config per cell with the same group choices. So the composition of the group choices is cached, and
    each call applies its plain ``key=value`` overrides to a copy, with the function Hydra applies them
    with after composing: the same config, the same errors (tested on every shipped sweep file)."""
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = normalize_overrides(overrides)
    groups = tuple(o for o in overrides if not _plain_value(o))
    try:
        cfg = copy.deepcopy(_compose_groups(groups, config_name))
        ConfigLoaderImpl._apply_overrides_to_config(
            OverridesParser.create().parse_overrides([o for o in overrides if _plain_value(o)]), cfg)
        return cfg
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(explain_hydra_error(e, overrides or [])) from e


def _plain_value(override: str) -> bool:
    """``key=value`` or ``a.b=value`` that sets a value (no +/~ prefix, no package, not a config group)."""
    key = override.partition("=")[0]
    return key.replace(".", "").replace("_", "").isalnum() and not (CONF_DIR / key).is_dir()


@functools.lru_cache(maxsize=64)
def _compose_groups(overrides: tuple[str, ...], config_name: str) -> DictConfig:
    """Hydra's composition (never changed in place: :func:`compose` copies it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def compose_uncached(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Hydra's compose of all the overrides at once: what :func:`compose` must equal."""
    return _compose_groups.__wrapped__(tuple(normalize_overrides(overrides)), config_name)


def explain_hydra_error(e: Exception, overrides: list[str]) -> str:
    import re

    chain, cur = [], e
    while cur is not None:
        chain.append(" ".join(str(cur).split()))
        cur = cur.__cause__ or cur.__context__
    text = " | ".join(chain)
    if m := re.search(r"Could not find '([\w/]+)/([^']+)' Available options in '[\w/]+': (.*?) Config search", text):
        group, opt, avail = m.group(1), m.group(2), [a for a in m.group(3).split() if not a.endswith("_schema")]
        return f"unknown option '{opt}' for config group '{group}'; available: {', '.join(avail)}"
    if m := re.search(r"Could not override '([^']+)'", text):
        return f"unknown config key '{m.group(1)}'; run `dualobj config` to list the valid keys"
    if m := re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+).*?full_key: ([\w.]+)", text):
        return f"{m.group(3)}={m.group(1)!r} is not a valid {m.group(2).lower()}; give a value of that type"
    if m := re.search(r"Error (?:merging|parsing) override '?([^' ]+)", text):
        return f"cannot apply override {m.group(1)!r}: {chain[-1]}; write overrides as key=value"
    return f"bad override(s) {overrides}: {chain[0]}"


def to_config(cfg: DictConfig) -> Config:
    """Typed, validated Config from a composed DictConfig."""
    try:
        obj = OmegaConf.to_object(cfg)
    except Exception as e:  # interpolation or type errors inside OmegaConf
        raise ConfigError(f"config cannot be resolved: {' '.join(str(e).split())}") from e
    if not isinstance(obj, Config):  # composed without the schema (e.g. from a saved config.yaml)
        obj = from_dict(obj)
    return validate(obj)


def from_dict(d: dict[str, Any]) -> Config:
    """Config from a plain dict (a saved config.yaml); unknown keys are an error."""
    try:
        base = OmegaConf.structured(Config)
        merged = OmegaConf.merge(base, OmegaConf.create(d))
        return validate(OmegaConf.to_object(merged))
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"config does not match this version's schema: {' '.join(str(e).split())}") from e


def load(overrides: list[str] | None = None) -> Config:
    """Compose, resolve and validate in one call."""
    return to_config(compose(overrides))


# --------------------------------------------------------------------------- overrides
# Every override passes through normalize_overrides before Hydra sees it (train, config, sweep cells and
# their `fixed`, eval through apply_overrides): keys must exist in the schema (`+key` cannot add one), and
# numbers take the same forms everywhere: 1e6 and 1_000_000 for whole numbers, 63/64 for any number.

_NUMBER_HINT = {True: "e.g. 1000000, 1e6 or 1_000_000", False: "e.g. 0.5, 1e-3 or 63/64"}


@functools.lru_cache(maxsize=1)
def schema_types() -> dict[str, Any]:
    """Dotted key -> declared type of every leaf of :class:`Config` (``train.tokens`` -> int)."""
    import typing

    out: dict[str, Any] = {}

    def walk(cls: type, prefix: str) -> None:
        for name, tp in typing.get_type_hints(cls).items():
            if is_dataclass(tp):
                walk(tp, f"{prefix}{name}.")
            else:
                out[f"{prefix}{name}"] = tp

    walk(Config, "")
    return out


def config_groups() -> dict[str, list[str]]:
    """Config group -> its options (the YAML files directly in conf/<group>/; not hydra/)."""
    groups = {d.name: sorted(p.stem for p in d.glob("*.yaml"))
              for d in sorted(CONF_DIR.iterdir()) if d.is_dir() and d.name != "hydra"}
    return {g: options for g, options in groups.items() if options}


def parse_number(text: str) -> float | None:
    """``1e6``, ``1_000``, ``0.5``, ``63/64`` as a float; None when ``text`` is not a number (or divides by 0)."""
    from fractions import Fraction

    text = text.strip().replace("_", "")
    try:
        if "/" in text:
            num, den = text.split("/")
            return float(Fraction(num.strip()) / Fraction(den.strip()))
        return float(text)
    except (ValueError, ZeroDivisionError):
        return None


def normalize_overrides(overrides: list[str] | None) -> list[str]:
    """Overrides checked against the schema, numbers written as Hydra reads them; ConfigError otherwise."""
    return [_normalize_override(o) for o in overrides or []]


def _normalize_override(o: str) -> str:
    import typing

    key, eq, value = o.partition("=")
    found = schema_key(key, value) if eq else None
    if found is None:
        return o  # malformed, deletions, hydra.* and group choices: Hydra's own syntax and messages
    name, tp = found
    plus = "++" if typing.get_origin(tp) is dict or name not in schema_types() else ""  # mappings take new keys
    return f"{plus}{name}={_value_text(name, value.strip(), tp)}"


def schema_key(key: str, value: str = "VALUE") -> tuple[str, Any] | None:
    """The schema key an override's ``key`` sets (``+`` prefixes stripped) and its type; None for Hydra's own
    keys (groups, ``hydra.*``, ``~`` deletions). ConfigError, with a did-you-mean, when the schema has no
    such key, and when ``+`` would add one that exists. An entry of a mapping field (``eval.task_files.x``)
    has the mapping's value type."""
    import typing

    prefix = key[: len(key) - len(key.lstrip("+~"))]
    name = key[len(prefix):].strip()
    if "~" in prefix or name.startswith("hydra") or "/" in name or name in config_groups():
        return None
    types = schema_types()
    if name in types:
        if prefix == "+":
            raise ConfigError(f"{name} is already a config key, '+' adds new ones; write {name}={value}")
        return name, types[name]
    parent = name.rpartition(".")[0]
    if typing.get_origin(types.get(parent)) is dict:
        return name, typing.get_args(types[parent])[1]
    close = _did_you_mean(name, list(types))
    hint = f" (did you mean {close}?)" if close else ""
    raise ConfigError(f"unknown config key '{name}'{hint}; run `dualobj config` to list the valid keys")


def _did_you_mean(name: str, keys: list[str]) -> str | None:
    """The key ``name`` was probably meant to be: a close name in the same section (the shared prefix would
    make any key of it look close), else a close full key (a mistyped section)."""
    section, _, leaf = name.rpartition(".")
    same = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == section}
    pool, word = (same, leaf) if same else ({k: k for k in keys}, name)
    close = difflib.get_close_matches(word, list(pool), n=1, cutoff=0.75)
    return pool[close[0]] if close else None


def _value_text(key: str, value: str, tp: Any) -> str:
    """``value`` for the field ``key`` of type ``tp``, in the form Hydra parses; ConfigError when it cannot be."""
    import typing

    args = typing.get_args(tp)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if optional else tp
    origin = typing.get_origin(base)
    if value.startswith("${") or (value == "null" and optional):
        return value
    if value == "null":
        raise ConfigError(f"{key} cannot be null; give it a value (`dualobj config` shows the default)")
    if origin in (list, dict):
        if not value.startswith("[" if origin is list else "{"):
            example = f"[{value}]" if origin is list else "{name: value}"
            raise ConfigError(f"{key}={value!r} is not a {'list' if origin is list else 'mapping'}; write "
                              f"'{key}={example}' (quoted, so that the shell leaves the brackets alone)")
        return value
    if base is bool:
        if value.lower() not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            raise ConfigError(f"{key}={value!r} is not true or false; write {key}=true or {key}=false")
        return value
    if base in (int, float):
        return _number_text(key, value, base is int)
    if base is str and value.startswith(("[", "{")):
        raise ConfigError(f"{key}={value!r} must be a single value, not a list or mapping; write {key}=VALUE")
    return value


def _number_text(key: str, value: str, whole: bool) -> str:
    x = parse_number(value)
    if x is None:
        raise ConfigError(f"{key}={value!r} is not a number; write a {'whole ' if whole else ''}number "
                          f"({_NUMBER_HINT[whole]})")
    if whole:
        if not x.is_integer():
            raise ConfigError(f"{key}={value!r} is not a whole number; write a whole number ({_NUMBER_HINT[True]})")
        try:
            return str(int(value.replace("_", "")))  # exact, also beyond 2**53
        except ValueError:
            return str(int(x))
    return repr(x) if "/" in value or "_" in value else value


def apply_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    """``cfg`` with dotted ``key=value`` overrides applied (no group choices), checked and validated as
    :func:`load` does: the same strict keys, number forms and one-line errors."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    ov = normalize_overrides(overrides)
    node = OmegaConf.structured(cfg)
    try:
        for o in OverridesParser.create().parse_overrides(ov):
            if o.is_delete() or "/" in o.key_or_group or o.key_or_group in config_groups():
                raise ConfigError(f"cannot apply {o.input_line!r} here; only key=value overrides of single keys")
            OmegaConf.update(node, o.key_or_group, o.value(), merge=False)
        obj = OmegaConf.to_object(node)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(explain_hydra_error(e, ov)) from e
    return validate(obj)


def override_value(v: Any) -> str:
    """A Python value (from YAML) as the value of a Hydra override: null, true, 0.5, [a,b], 'quoted text'."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ",".join(override_value(x) for x in v) + "]"
    return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def file_overrides(path: str | Path) -> list[str]:
    """A YAML config file (as `dualobj config` prints it, or a run's config.yaml) as overrides, one per leaf."""
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConfigError(f"config file {p} cannot be read ({e.strerror}); give an existing YAML file") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} is not valid YAML; fix it or print a fresh one with "
                          "`dualobj config`") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must be a mapping of sections (model:, data:, ...); see `dualobj config`")
    out = []

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif f"{prefix}{k}" != "run_id":  # a run's config.yaml records its id
                out.append(f"{prefix}{k}={override_value(v)}")

    walk(raw, "")
    return out


# --------------------------------------------------------------------------- identity

SEMANTIC_SECTIONS = ("model", "data", "objective", "train", "seed")
# Fields that change how a run is executed or shown, never what it computes.
NON_SEMANTIC = {
    "data.cache_dir", "data.tokenizer_sample_bytes", "data.separator_id",  # see README "Run ids and data"
    "train.compile", "train.threads", "train.progress", "train.log_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.micro_batch_size", "train.nproc",
}


def semantic_dict(cfg: Config) -> dict[str, Any]:
    full = asdict(cfg)
    out: dict[str, Any] = {}
    for section in SEMANTIC_SECTIONS:
        value = full[section]
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if f"{section}.{k}" not in NON_SEMANTIC}
        out[section] = value
    return out


def run_id(cfg: Config) -> str:
    """Short, stable hash of what the run computes (not of logging or output settings)."""
    blob = json.dumps(semantic_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its one-line doc (the trailing comment in this file; for a field written over several
    lines, the first trailing comment before the next field)."""
    import inspect

    src = inspect.getsource(cls).splitlines()
    names = {f.name for f in fields(cls)}
    docs: dict[str, str] = {}
    current = None
    for line in src:
        head, _, comment = line.partition("  # ")
        name = head.strip().split(":")[0]
        if name in names and ":" in head:
            current = name
        if current and comment and current not in docs:
            docs[current] = comment.strip()
    return docs
