"""Config tree: every shipped option composes; bad values get one clear line; the run id is semantic."""

from __future__ import annotations

import pytest
import torch

from dualobj import config
from dualobj.config import CONF_DIR, ConfigError
from dualobj.model import Transformer

GROUPS = ["model", "data", "objective", "train", "logger"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_shipped_option_loads(group):
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    assert options, f"no options in conf/{group}"
    for opt in options:
        extra = ["data.path=/tmp/x"] if group == "data" and opt != "wiki" else []
        if group == "train" and opt == "paper":
            extra = ["model=paper_470m"]  # its batch needs the paper's sequence length budget
        cfg = config.load([f"{group}={opt}", *extra])
        assert isinstance(cfg, config.Config)


def test_defaults_are_the_laptop_setup():
    cfg = config.load([])
    assert cfg.model.name == "tiny" and cfg.data.source == "wiki" and cfg.logger.name == "local"
    assert 0 <= cfg.objective.alpha <= 1


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["objective.alpha=1.5"], "objective.alpha=1.5 is outside [0, 1]"),
        (["objective.alpha=-0.1"], "outside [0, 1]"),
        (["objective.alpha=abc"], "objective.alpha='abc' is not a valid float"),
        (["data.repetitions=0"], "data.repetitions=0.0 must be a whole number >= 1"),
        (["data.repetitions=2.5"], "must be a whole number"),
        (["model=huge"], "unknown option 'huge' for config group 'model'; available: base, paper_470m, small, tiny"),
        (["train.nonsense=1"], "unknown config key 'train.nonsense'"),
        (["train.tokens=100"], "below one optimizer step"),
        (["train.micro_batch_size=5"], "must divide train.batch_size=32"),
        (["model.d_model=100"], "heads of even size"),
        (["train.optimizer=sgd"], "train.optimizer='sgd' is not one of adamw, muon"),
        (["data=text"], "data.source=text needs data.path"),
        (["train.warmup=0.9", "train.cooldown=0.5"], "summing to <= 1"),
        (["logger=wandb", "logger.mode=sometimes"], "logger.mode='sometimes' is not one of"),
        (["nokey"], "write overrides as key=value"),
    ],
)
def test_bad_values_get_one_clear_line(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        config.load(overrides)
    msg = str(e.value)
    assert fragment in msg
    assert "\n" not in msg and "Traceback" not in msg


def test_run_id_is_semantic():
    a = config.load(["objective.alpha=0.25"])
    same = config.load(["objective.alpha=0.25", "out=/elsewhere", "logger=wandb", "train.progress=false",
                        "train.threads=1", "data.cache_dir=/tmp/c"])
    other = config.load(["objective.alpha=0.5"])
    assert config.run_id(a) == config.run_id(same)
    assert config.run_id(a) != config.run_id(other)
    assert config.run_id(a) == config.run_id(config.load(["objective.alpha=0.25"]))  # stable
    assert len(config.run_id(a)) == 10


def test_saved_config_round_trips():
    cfg = config.load(["model=small", "objective.alpha=0.75"])
    from omegaconf import OmegaConf

    again = config.from_dict(OmegaConf.to_container(OmegaConf.create(config.to_yaml(cfg))))
    assert config.run_id(again) == config.run_id(cfg)


def test_every_field_has_a_doc():
    from dataclasses import fields

    for cls in (config.ModelConfig, config.DataConfig, config.ObjectiveConfig, config.TrainConfig,
                config.LoggerConfig, config.Config):
        docs = config.field_docs(cls)
        missing = [f.name for f in fields(cls) if not docs.get(f.name)]
        assert not missing, f"{cls.__name__} fields without a doc: {missing}"


def test_paper_470m_matches_the_official_parameter_count():
    cfg = config.load(["model=paper_470m"]).model
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.vocab_size, cfg.rope_theta) == (
        24, 1024, 16, 3554, 51200, 160000.0)
    with torch.device("meta"):
        model = Transformer(cfg)
    # The official configs/large.json counts 468,700,160 parameters, 363,791,360 without the
    # input embedding and the output layer (weight and bias).
    assert model.num_params() == 468_700_160
    assert model.num_params(non_embedding=True) == 363_791_360
    assert model.embedding.weight is not model.head.emb2vocab.weight  # untied head
