"""``dualobj eval``: score a trained run in AR, MD and prefix-LM modes and keep the recipe with the numbers.

Each task writes ``eval/<task>.json`` in the run directory (scores per mode, item counts, items/s and
the full recipe); headline scores are merged into ``summary.json`` as ``eval/<task>/<mode>`` (the
chance-normalised score, 0 = chance, 100 = perfect) and ``eval/avg/<mode>`` (mean over the
downstream tasks and probes run), which is what ``dualobj report`` tabulates.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import torch

from dualobj import __version__
from dualobj import config as C
from dualobj.errors import DataError, RunDirError
from dualobj.run import RunDir, read_json, sha256_file, write_json
from dualobj.runtime import pick_device, use_bf16

REPO = Path(__file__).resolve().parents[2]

# eval/val.json's names for the keys of dualobj.metrics.validation_metrics, per mode
VAL_KEYS = {"ar": {"nll": "ar_nll", "ppl": "ar_ppl", "bpb": "ar_bpb"},
            "md": {"elbo": "md_elbo", "elbo_se": "md_elbo_se", "bpb": "md_bpb", "bpb_se": "md_bpb_se"}}


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"dualobj {__version__}" + (f" ({sha})" if sha else "")


def load_run_config(run_dir: Path) -> C.Config:
    from omegaconf import OmegaConf

    rd = RunDir(run_dir)
    if not Path(run_dir).is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist; give one written by `dualobj train`")
    if not rd.config_path.exists():
        raise RunDirError(f"{run_dir} has no config.yaml: not a run directory; give one written by `dualobj train`")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(rd.config_path))
    except Exception as e:
        raise RunDirError(f"{rd.config_path} is damaged ({e.__class__.__name__}); re-train into a new out=") from e
    raw.pop("run_id", None)
    return C.from_dict(raw)


class Evaluator:
    """A trained run, ready to score: model from its newest intact checkpoint, tokenizer from the cache."""

    def __init__(self, run_dir: str | Path, eval_cfg: C.EvalConfig | None = None, cfg: C.Config | None = None,
                 model=None, corpus=None, step: int | None = None):
        from dualobj.data.tokens import prepare_corpus
        from dualobj.model import Transformer

        self.rd = RunDir(run_dir)
        self.cfg = cfg or load_run_config(self.rd.path)
        self.e = eval_cfg or self.cfg.eval
        self.device = pick_device()
        if model is None:
            model = Transformer(self.cfg.model).to(self.device)
            state = self.rd.load_latest(model)
            if state is None:
                raise RunDirError(f"{run_dir} has no intact checkpoint; train it first (`dualobj train ... out={run_dir}`)")
            step = int(state["step"])
        self.model, self.step = model.eval(), step
        self.corpus = corpus or prepare_corpus(self.cfg.data, self.cfg.model.vocab_size)
        bf16 = use_bf16(self.cfg.train.precision, self.device)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else None
        self.precision = "bf16" if bf16 else "fp32"
        from tokenizers import Tokenizer

        from dualobj.evaluate.scoring import Scorer

        self.tokenizer = Tokenizer.from_file(self.corpus.tokenizer_path)
        self.scorer = Scorer(self.model, self.tokenizer, bos_id=self.corpus.bos_id, mask_id=self.corpus.mask_id,
                             seq_len=self.cfg.model.seq_len, autocast=self.autocast, batch_size=self.e.batch_size)

    # ----------------------------------------------------------------- tasks
    def _task(self, name: str):
        from dualobj.evaluate.registry import get_task

        return get_task(name, self.e.benchmark_dir, data=self.cfg.data, n_items=self.e.probe_items, seed=self.e.seed)

    def recipe(self, mode: str) -> dict:
        md = mode == "md"
        return {
            "mode": mode,
            "estimator": (self.e.md_estimator if md else "exact"),
            "samples": self.e.md_samples if md and self.e.md_estimator == "mc" else None,
            "seed": self.e.seed, "limit": self.e.limit, "precision": self.precision,
            "prompt_format": "<s> context continuation (context and continuation tokenised jointly)",
            "attention": {"ar": "causal", "md": "bidirectional, continuation masked",
                          "prefix": "bidirectional over <s>+context, causal over the continuation"}[mode],
            "code_version": code_version(), "checkpoint_step": self.step,
            "tokenizer_sha256": sha256_file(Path(self.corpus.tokenizer_path)),
        }

    def run_task(self, name: str) -> dict:
        if name == "val":
            return self.run_val()
        task = self._task(name)
        items = task.items(self.e.limit, self.e.seed)
        pairs = [(r.context, r.continuation) for it in items for r in it.requests]
        results = {}
        for mode in self.e.modes:
            t0 = time.perf_counter()
            flat = self.scorer.score(pairs, mode, self.e.md_estimator, self.e.md_samples, self.e.seed)
            elapsed = time.perf_counter() - t0
            per_item, k = [], 0
            for it in items:
                per_item.append(flat[k:k + len(it.requests)])
                k += len(it.requests)
            res = task.score(items, per_item)
            res["items_per_s"] = len(items) / max(elapsed, 1e-9)
            if mode == "md" and self.e.md_estimator == "mc":
                res["mean_logprob_se"] = sum(s.se for s in flat) / max(len(flat), 1)
            res["recipe"] = self.recipe(mode)
            results[mode] = res
        return {"task": name, "n_items": len(items), "results": results, "task_recipe": task.recipe()}

    def run_val(self) -> dict:
        """Validation NLL / ELBO over the fixed validation split, in nats per token and bits per byte."""
        from dualobj.data.repetition import val_windows
        from dualobj.metrics import validation_metrics

        c = self.corpus
        win = torch.from_numpy(val_windows(c.val, self.cfg.model.seq_len, self.e.val_windows))
        results = {}
        for mode in self.e.modes:
            if mode not in VAL_KEYS:
                continue  # prefix-LM needs a context/continuation split; val windows have none
            t0 = time.perf_counter()
            got = validation_metrics(self.model, win, c, modes=(mode,), batch_size=self.e.batch_size,
                                     md_samples=self.e.md_samples, seed=self.e.seed,
                                     min_mask_frac=self.cfg.objective.min_mask_frac, autocast=self.autocast)
            res = {name: got[key] for name, key in VAL_KEYS[mode].items()}
            res["windows"] = len(win)
            res["items_per_s"] = len(win) / max(time.perf_counter() - t0, 1e-9)
            res["recipe"] = {**self.recipe(mode), "unit": "nats per token (bpb: bits per UTF-8 byte)"}
            results[mode] = res
        return {"task": "val", "n_items": len(win), "results": results, "task_recipe": {"split": "validation"}}

    # ----------------------------------------------------------------- all
    def run(self, skip_missing: bool = False, say=print) -> dict:
        """Run every task; write eval/<task>.json; merge headline scores into summary.json."""
        out_dir = self.rd.path / "eval"
        headline: dict[str, float] = {}
        done = []
        from dualobj.faults import maybe_die

        for i, name in enumerate(self.e.tasks):
            if i == 1:
                maybe_die("eval")
            try:
                res = self.run_task(name)
            except DataError as err:
                if skip_missing and "not found" in str(err):
                    say(f"eval: skipping {name} ({err})")
                    continue
                raise
            res.update(run_id=C.run_id(self.cfg), written=time.time())
            write_json(out_dir / f"{name}.json", res)
            done.append(name)
            for mode, r in res["results"].items():
                if name == "val":
                    headline[f"eval/val/{mode}_bpb"] = r["bpb"]
                else:
                    headline[f"eval/{name}/{mode}"] = r["score"]
            say(f"eval: {name}: " + ", ".join(
                f"{m} {r.get('score', r.get('bpb')):.2f}" for m, r in res["results"].items()))
        for mode in self.e.modes:
            vals = [v for k, v in headline.items() if k.endswith(f"/{mode}") and not k.startswith("eval/val/")]
            if vals:
                headline[f"eval/avg/{mode}"] = sum(vals) / len(vals)
        if self.rd.summary_path.exists():
            summary = read_json(self.rd.summary_path)
            summary.update(headline)
            write_json(self.rd.summary_path, summary)
            if self.rd.status().get("summary_sha256"):  # keep the done run's checksum true
                self.rd.set_status(summary_sha256=sha256_file(self.rd.summary_path))
        return {"tasks": done, "headline": headline}


def evaluate(run_dir: str | Path, overrides: list[str] | None = None, skip_missing: bool = False, say=print) -> dict:
    """``dualobj eval RUN_DIR eval.key=value ...``: only eval.* keys may change (the model is fixed)."""
    from omegaconf import OmegaConf

    cfg = load_run_config(Path(run_dir))
    overrides = list(overrides or [])
    bad = [o for o in overrides if not o.startswith("eval.")]
    if bad:
        raise C.ConfigError(f"dualobj eval takes only eval.* overrides, got {bad}; the trained model is fixed")
    if overrides:
        try:
            merged = OmegaConf.merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist(overrides))
            cfg = C.validate(OmegaConf.to_object(merged))
        except C.ConfigError:
            raise
        except Exception as e:
            raise C.ConfigError(f"bad eval override(s) {overrides}: {' '.join(str(e).split())}") from e
    return Evaluator(run_dir, cfg.eval, cfg).run(skip_missing=skip_missing, say=say)
