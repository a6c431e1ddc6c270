"""Config tree: every shipped option composes; bad values get one clear line; the run id is semantic."""

from __future__ import annotations

import re

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
        for key in re.findall(r"^(\w+): \?\?\?", (CONF_DIR / group / f"{opt}.yaml").read_text(), re.M):
            if key != "path":  # the option leaves it for the user (???): give one of its type
                numeric = config.schema_types()[f"{group}.{key}"] in (int, int | None)
                extra.append(f"{group}.{key}={0 if numeric else 'x'}")
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
        (["objective.alpha=abc"], "objective.alpha='abc' is not a number; write a number (e.g. 0.5, 1e-3 or 63/64)"),
        (["objective.alpha=1/0"], "objective.alpha='1/0' is not a number"),
        (["train.tokens=1.5e3x"], "train.tokens='1.5e3x' is not a number; write a whole number (e.g. 1000000, 1e6"),
        (["train.tokens=1.5"], "train.tokens='1.5' is not a whole number"),
        (["eval.limit=abc"], "eval.limit='abc' is not a number; write a whole number"),
        (["eval.tasks=blimp"], "eval.tasks='blimp' is not a list; write 'eval.tasks=[blimp]' (quoted"),
        (["train.compile=maybe"], "train.compile='maybe' is not true or false; write train.compile=true"),
        (["train.tokens=null"], "train.tokens cannot be null"),
        (["+objective.alpah=0.9"], "unknown config key 'objective.alpah' (did you mean objective.alpha?); run "
                                   "`dualobj config` to list the valid keys"),
        (["++objective.alpah=0.9"], "unknown config key 'objective.alpah' (did you mean objective.alpha?)"),
        (["objective.alpah=0.9"], "unknown config key 'objective.alpah' (did you mean objective.alpha?)"),
        (["+objective.alpha=0.9"], "objective.alpha is already a config key, '+' adds new ones; write "
                                   "objective.alpha=0.9"),
        (["data.repetitions=0"], "data.repetitions=0.0 must be a whole number >= 1"),
        (["data.repetitions=2.5"], "must be a whole number"),
        (["model=huge"], "unknown option 'huge' for config group 'model'; available: base, micro, nano, paper_470m, "
                         "small, tiny"),
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
                config.LoggerConfig, config.EvalConfig, config.Config):
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


def test_numbers_take_the_same_forms_everywhere():
    """1e6 and 1_000_000 for whole numbers, 63/64 for any number: the same run as the plain decimal form."""
    plain = config.load(["train.tokens=1000000", "objective.alpha=0.984375", "data.repetitions=16"])
    for forms in (["train.tokens=1e6", "objective.alpha=63/64", "data.repetitions=1.6e1"],
                  ["train.tokens=1_000_000", "objective.alpha=63 / 64", "data.repetitions=32/2"]):
        cfg = config.load(forms)
        assert (cfg.train.tokens, cfg.objective.alpha, cfg.data.repetitions) == (1_000_000, 63 / 64, 16)
        assert config.run_id(cfg) == config.run_id(plain)
    assert config.normalize_overrides(["train.tokens=2e3", "objective.alpha=1/2", "model=small", "hydra.x=1"]) == [
        "train.tokens=2000", "objective.alpha=0.5", "model=small", "hydra.x=1"]
    assert config.parse_number("63/64") == 63 / 64 and config.parse_number("1/0") is None
    assert config.parse_number("abc") is None and config.parse_number("1_000") == 1000.0


def test_a_plus_cannot_add_a_key_the_schema_lacks():
    """Before, `+objective.alpah=0.9` was accepted silently: the run id and α stayed as they were."""
    with pytest.raises(ConfigError, match="did you mean objective.alpha"):
        config.load(["+objective.alpah=0.9"])
    assert config.load(["++objective.alpha=0.9"]).objective.alpha == 0.9  # ++ on an existing key: allowed


def test_entries_of_a_mapping_field_can_be_added():
    cfg = config.load(["eval.task_files.hs=/data/hs.jsonl", "+eval.task_files.x=/d/x.jsonl"])
    assert cfg.eval.task_files == {"hs": "/data/hs.jsonl", "x": "/d/x.jsonl"}
    with pytest.raises(ConfigError, match="is not a mapping"):
        config.load(["eval.task_files=x"])


def test_apply_overrides_is_as_strict_as_load():
    """The hook for `dualobj eval`: the same keys, number forms and messages, on a finished config."""
    base = config.load([])
    cfg = config.apply_overrides(base, ["eval.limit=2e1", "eval.tasks=[val,lambada]"])
    assert cfg.eval.limit == 20 and cfg.eval.tasks == ["val", "lambada"] and config.run_id(cfg) == config.run_id(base)
    for bad, fragment in [(["eval.limit=abc"], "eval.limit='abc' is not a number"),
                          (["+eval.lmit=3"], "unknown config key 'eval.lmit' (did you mean eval.limit?)"),
                          (["eval.tasks=blimp"], "is not a list"), (["model=small"], "only key=value overrides"),
                          (["eval.md_samples=0"], "eval.md_samples=0 must be a positive integer")]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            config.apply_overrides(base, bad)


def test_a_config_file_round_trips(tmp_path):
    """`dualobj config` prints YAML that `--config FILE` (and a run's config.yaml) reads back exactly."""
    import yaml

    cfg = config.load(["model=small", "objective.alpha=3/4", "data.cache_dir=/tmp/c d", "'eval.tasks=[val]'"[1:-1]])
    path = tmp_path / "c.yaml"
    path.write_text("run_id: abc\n" + config.to_yaml(cfg))
    again = config.load(config.file_overrides(path))
    assert config.run_id(again) == config.run_id(cfg) and again == cfg
    assert yaml.safe_load(path.read_text())["data"]["cache_dir"] == "/tmp/c d"
    path.write_text("objective:\n  alpah: 0.9\n")
    with pytest.raises(ConfigError, match="did you mean objective.alpha"):
        config.load(config.file_overrides(path))
    path.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        config.file_overrides(path)


@pytest.mark.parametrize("path", sorted((CONF_DIR / "model").glob("*.yaml")), ids=lambda p: p.stem)
def test_each_model_config_states_the_parameter_count_of_the_model_it_builds(path):
    """The first line of conf/model/NAME.yaml says "N parameters (M non-embedding)": the built model has them."""
    first = path.read_text().splitlines()[0]
    found = re.search(r"([\d,]+) parameters \(([\d,]+) non-embedding\)", first)
    assert found, f"{path.name}: the first line must state 'N parameters (M non-embedding)', got {first!r}"
    total, non_emb = (int(g.replace(",", "")) for g in found.groups())
    with torch.device("meta"):  # no memory: the 470M model is counted, never allocated
        model = Transformer(config.load([f"model={path.stem}"]).model)
    assert (model.num_params(), model.num_params(non_embedding=True)) == (total, non_emb)


def test_cached_composition_equals_hydras_for_every_shipped_sweep_cell(tmp_path):
    """compose() caches Hydra's composition of the group choices and applies key=value overrides to a copy:
    every cell of every shipped sweep file (and overrides that touch groups, lists and top-level keys)
    composes to exactly what one Hydra compose of all its overrides gives."""
    from omegaconf import OmegaConf

    from dualobj import sweep as S

    cases = [["model=tiny", "model.d_model=32", "seed=3", "eval.tasks=[val,piqa]", "train=paper"],
             ["objective.alpha=63/64", "data.repetitions=16", "model=small"]]
    for path in sorted((CONF_DIR.parent / "sweeps").glob("*.yaml")):
        spec = S.load_spec(path)
        cases += [c.overrides for c in S.plan(spec, tmp_path)[:6]]
    for ov in cases:
        fast, slow = config.compose(ov), config.compose_uncached(ov)
        assert OmegaConf.to_container(fast) == OmegaConf.to_container(slow), ov
    bad = config.compose(["model=tiny"])  # the cached composition is never changed by a call's overrides
    config.compose(["model=tiny", "model.d_model=48"])
    assert config.compose(["model=tiny"]).model.d_model == bad.model.d_model != 48
