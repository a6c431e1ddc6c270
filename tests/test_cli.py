"""The command line a new user meets: --version, help that names the config groups and out=, the override
form suggested for a mistyped option, `dualobj config` as YAML that reads back, and numbers written the
same way on the command line and in sweep files."""

from __future__ import annotations

import re

import yaml
from typer.testing import CliRunner

from dualobj import __version__, cli, config
from dualobj.sweep import load_spec, plan


def invoke(*args: str):
    return CliRunner().invoke(cli.app, list(args))


def test_version():
    res = invoke("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"dualobj {__version__}"


def test_train_help_lists_the_groups_their_options_and_out():
    res = invoke("train", "--help")
    assert res.exit_code == 0
    text = " ".join(res.stdout.split())
    for group, options in config.config_groups().items():
        assert f"{group}={'|'.join(options)}" in text, group
    assert "model=base|micro|nano|paper_470m|small|tiny" in text
    assert "out=DIR" in text and "--config" in text and "SECTION.KEY=VALUE" in text
    assert "'eval.tasks=[val,lambada]'" in text  # a list override, quoted for the shell


def test_eval_help_shows_its_list_example_whole():
    res = invoke("eval", "--help")
    assert res.exit_code == 0 and "'eval.tasks=[blimp,piqa]'" in " ".join(res.stdout.replace("│", " ").split())


def test_an_option_named_like_a_config_key_gets_the_override_form():
    for args, hint in [(["train", "--model", "tiny"], "write model=tiny"),
                       (["train", "--model=small"], "write model=small"),
                       (["config", "--out", "runs/x"], "write out=runs/x"),
                       (["eval", "--limit", "20", "runs/x"], "write eval.limit=20")]:
        res = invoke(*args)
        assert res.exit_code == 2, args
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: No such option"), res.stderr
        assert lines[0].endswith(f"config values are key=value overrides without dashes: {hint}"), lines[0]
    res = invoke("generate", "--temp", "3", "runs/x")  # not a config key: click's own suggestion, one line
    assert res.exit_code == 2 and "--temperature" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = invoke("trian")
    assert res.exit_code == 2 and res.stderr.startswith("error: No such command 'trian'. Did you mean 'train'?")


def test_config_prints_yaml_that_reads_back(tmp_path):
    args = ["model=small", "objective.alpha=3/4", "train.tokens=2e6", "'eval.tasks=[val,lambada]'"[1:-1],
            "data.cache_dir=/tmp/some cache"]
    res = invoke("config", *args)
    assert res.exit_code == 0, res.output
    assert "None" not in res.stdout and "True" not in res.stdout and "False" not in res.stdout  # YAML, not Python
    parsed = yaml.safe_load(res.stdout)
    want = config.load(args)
    assert config.run_id(config.from_dict(parsed)) == config.run_id(want)
    assert parsed["eval"]["tasks"] == ["val", "lambada"] and parsed["data"]["path"] is None
    assert re.search(r"^  tokens: 2000000 +# token budget D", res.stdout, re.M)  # each field with its doc
    assert re.search(r"^  tasks: \[val, lambada\] +# tasks", res.stdout, re.M)
    assert re.search(r"^seed: 0 +# seeds model init", res.stdout, re.M) and re.search(r"^out: null +# run dir",
                                                                                     res.stdout, re.M)
    f = tmp_path / "c.yaml"
    f.write_text(res.stdout)
    again = invoke("config", "--config", str(f))
    assert again.stdout.splitlines()[0] == f"# run id: {config.run_id(want)}" == res.stdout.splitlines()[0]
    more = invoke("config", "--config", str(f), "seed=1")  # overrides apply on top of the file
    assert yaml.safe_load(more.stdout)["seed"] == 1


def test_config_diff_shows_what_differs_from_the_defaults():
    res = invoke("config", "--diff", "model=small", "objective.alpha=1/4", "train.tokens=1e6", "seed=2")
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert lines[1:3] == ["model:", "  name: small                        # default tiny; size label, e.g. tiny"]
    assert any(line.startswith("  alpha: 0.25") and "# default 0.5;" in line for line in lines)
    assert any(line.startswith("seed: 2") and "# default 0;" in line for line in lines)
    assert not any(line.startswith("  tokens:") for line in lines)  # 1e6 is the default budget
    assert "train:" not in lines and "data:" not in lines
    assert invoke("config", "--diff").stdout.splitlines()[1] == "# no differences from the defaults"


def test_sweep_files_and_the_command_line_take_the_same_numbers(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nfixed: [train.tokens=1e6]\naxes:\n  objective.alpha: [63/64, 1/2]\n"
                    "cells:\n  - {data.repetitions: 1.6e1}\n")
    cells = plan(load_spec(spec), tmp_path / "out")
    assert [c.error for c in cells] == [None, None]
    for c, alpha in zip(cells, ("63/64", "1/2"), strict=True):
        cfg = config.load(["train.tokens=1e6", f"objective.alpha={alpha}", "data.repetitions=16"])
        assert c.run_id == config.run_id(cfg)
    assert (cells[0].cfg.objective.alpha, cells[0].cfg.train.tokens, cells[0].cfg.data.repetitions) == (
        63 / 64, 1_000_000, 16)
