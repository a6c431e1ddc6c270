"""Hugging Face export: transformers loads the run and computes dualobj's logits, in AR, MD and prefix mode."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dualobj import config
from dualobj.interop.export import CONFIG_IMPORT, MODEL_SOURCE, MODELING
from dualobj.train import train

FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "modeling_dualobj.py",
         "dualobj_model.py"}
TEXTS = ["The river flows into the sea.", "He was born in a small town <s> and <mask> moved.", "é ü 東京", ""]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "DUALOBJ_MALLOC": "off"}
    env.pop("DUALOBJ_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "dualobj.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir) -> Path:
    from conftest import MICRO

    out = tmp_path_factory.mktemp("export") / "run"
    train(config.load([*MICRO, f"data.cache_dir={cache_dir}", "train.tokens=10240", f"out={out}"]))
    return out


@pytest.fixture(scope="module")
def exported(run) -> Path:
    """`dualobj export RUN --to DIR`, through the command line."""
    to = run.parent / "hf" / "micro"
    res = cli("export", str(run), "--to", str(to))
    assert res.returncode == 0, res.stderr
    return to


@pytest.fixture(scope="module")
def loaded(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=True).eval()
    return model, AutoTokenizer.from_pretrained(exported, trust_remote_code=True)


@pytest.fixture(scope="module")
def ev(run):
    from dualobj.evaluate.evaluator import Evaluator

    return Evaluator(run)


def rows(ev, n: int = 3) -> torch.Tensor:
    """n rows of the model's full context of ordinary (non-special) token ids, each starting with <s>."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(8, ev.cfg.model.vocab_size, (n, ev.cfg.model.seq_len), generator=g)
    x[:, 0] = ev.corpus.bos_id
    return x


def test_the_folder_holds_what_transformers_needs_and_where_it_came_from(run, exported):
    assert {p.name for p in exported.iterdir()} == FILES
    assert [p.name for p in exported.parent.iterdir()] == ["micro"]  # no temporary folder left behind
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_dualobj.DualobjForCausalLM"
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["max_position_embeddings"]) == \
           (32, 2, 512, 32)
    status = json.loads((run / "status.json").read_text())
    assert cfg["dualobj"]["run_id"] == status["run_id"] and cfg["dualobj"]["checkpoint_step"] == status["step"]
    assert (exported / "modeling_dualobj.py").read_bytes() == MODELING.read_bytes()
    # one definition of the network: the exported model is dualobj's model.py, less its one dualobj import
    copy, source = (exported / "dualobj_model.py").read_text(), MODEL_SOURCE.read_text()
    assert copy != source and copy == source.replace(CONFIG_IMPORT, "")


@pytest.mark.parametrize("mode", ["ar", "md", "prefix"])
def test_transformers_computes_dualobjs_logits(ev, loaded, mode):
    model = loaded[0]
    x = rows(ev)
    plen = torch.tensor([5, 17, 32])
    if mode == "md":  # MD input: masked tokens, read with bidirectional attention
        g = torch.Generator().manual_seed(1)
        x[torch.rand(x.shape, generator=g) < 0.5] = ev.corpus.mask_id
        x[:, 0] = ev.corpus.bos_id
    with torch.no_grad():  # fp32 on both sides
        want = ev.model(x, mode != "md", None, plen if mode == "prefix" else None)
        got = model(x, bidirectional=mode == "md", prefix_len=plen if mode == "prefix" else None).logits
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_the_text_logits(ev, loaded, bidirectional):
    model = loaded[0]
    x = rows(ev, 2)[:, :20]
    pad = ev.tokenizer.token_to_id("<pad>")
    with torch.no_grad():
        alone = model(x, bidirectional=bidirectional).logits
        right = torch.cat([x, torch.full((2, 7), pad)], 1)
        mask = torch.cat([torch.ones(2, 20), torch.zeros(2, 7)], 1).long()
        got_right = model(right, attention_mask=mask, bidirectional=bidirectional).logits[:, :20]
        left = torch.cat([torch.full((2, 7), pad), x], 1)
        got_left = model(left, attention_mask=mask.flip(1), bidirectional=bidirectional).logits[:, 7:]
    assert (got_right - alone).abs().max().item() < 1e-5
    assert (got_left - alone).abs().max().item() < 1e-5  # rotary positions: only distances matter


def test_the_tokenizer_gives_the_ids_the_model_was_trained_on(ev, loaded):
    tok = loaded[1]
    ev.tokenizer.encode_special_tokens = True  # typed "<s>" is text, as in the scorer
    for text in TEXTS:
        want = [ev.corpus.bos_id, *ev.tokenizer.encode(text, add_special_tokens=False).ids]
        assert tok(text).input_ids == want, text
    assert (tok.bos_token_id, tok.mask_token_id) == (ev.corpus.bos_id, ev.corpus.mask_id)
    assert loaded[0].config.mask_token_id == ev.corpus.mask_id


def test_generate_is_greedy_ar_decoding(loaded):
    model, tok = loaded
    ids = tok("The river flows into the sea and", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    x = ids
    with torch.no_grad():
        for _ in range(6):
            x = torch.cat([x, model(x).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert out.tolist() == x.tolist()


def test_the_export_runs_without_dualobj(exported):
    imported = set()
    for name in ("modeling_dualobj.py", "dualobj_model.py"):
        tree = ast.parse((exported / name).read_text())
        imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and not n.level}
    assert imported <= {"__future__", "math", "sys", "types", "typing", "torch", "transformers"}, imported
    code = ("import sys, torch; from transformers import AutoModelForCausalLM as A; "
            f"m = A.from_pretrained({str(exported)!r}, trust_remote_code=True); "
            "m(torch.tensor([[1, 40, 41]]), bidirectional=True); "
            "assert not [k for k in sys.modules if k.startswith('dualobj')]; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_bad_input_is_one_line_and_exit_2(run, exported, tmp_path):
    res = cli("export", str(run), "--to", str(exported))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert f"error: export target {exported} exists; give a new folder with --to" in res.stderr

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((run / "config.yaml").read_text())
    (unfinished / "status.json").write_text(json.dumps({"state": "interrupted", "step": 3}))
    res = cli("export", str(unfinished), "--to", str(tmp_path / "out"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert f"error: run {unfinished} is interrupted, not done; finish it first" in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_model_with_non_default_hyper_parameters_exports_exactly(tmp_path, cache_dir):
    """The classifier head, another RoPE base and another width: transformers' logits are dualobj's in AR, MD
    and prefix mode, so a model change cannot reach one and not the other (there is one model source)."""
    from conftest import MICRO
    from transformers import AutoModelForCausalLM

    from dualobj.evaluate.evaluator import Evaluator

    out = tmp_path / "run"
    train(config.load([*MICRO, f"data.cache_dir={cache_dir}", "train.tokens=2048", "model.head=classifier",
                       "model.rope_theta=500", "model.d_ff=96", f"out={out}"]))
    res = cli("export", str(out), "--to", str(tmp_path / "hf"))
    assert res.returncode == 0, res.stderr
    ev = Evaluator(out)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True).eval()
    assert (model.config.head, model.config.rope_theta, model.config.intermediate_size) == ("classifier", 500, 96)
    x, plen = rows(ev), torch.tensor([3, 11, 32])
    for causal, prefix in ((True, None), (False, None), (True, plen)):
        with torch.no_grad():
            want = ev.model(x, causal, None, prefix)
            got = model(x, bidirectional=not causal, prefix_len=prefix).logits
        assert (got - want).abs().max().item() < 1e-5, (causal, prefix)
