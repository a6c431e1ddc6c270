"""``dualobj eval``: score a trained run in AR, MD and prefix-LM modes and keep the recipe with the numbers.

Each task writes ``eval/<task>.json`` in the run directory (scores per mode, item counts, items/s and
the full recipe); headline scores are merged into ``summary.json`` as ``eval/<task>/<mode>`` (the
chance-normalised score, 0 = chance, 100 = perfect) and ``eval/avg/<mode>`` (mean over the
downstream tasks and probes run), which is what ``dualobj report`` tabulates.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dualobj import __version__
from dualobj import config as C
from dualobj.errors import DataError, EvalStopped, RunDirError
from dualobj.metrics import batch_rows
from dualobj.run import RunDir, atomic_write, read_json, sha256_file, write_json
from dualobj.runtime import pick_device, use_bf16

REPO = Path(__file__).resolve().parents[2]

# eval/val.json's names for the keys of dualobj.metrics.validation_metrics, per mode
VAL_KEYS = {"ar": {"nll": "ar_nll", "ppl": "ar_ppl", "bpb": "ar_bpb"},
            "md": {"elbo": "md_elbo", "elbo_se": "md_elbo_se", "bpb": "md_bpb", "bpb_se": "md_bpb_se"}}
VAL_UNITS = {"ar": "nll: exact, nats per target token; bpb: total nats / ln 2 / UTF-8 bytes of the targets",
             "md": "elbo: unbiased MC estimate of the negative ELBO (an upper bound on the NLL), nats per "
                   "maskable target token; bpb: total nats / ln 2 / UTF-8 bytes of the targets; *_se: standard error"}
# recipe fields that decide the numbers (not the code version or the time): a re-run that differs in one of
# them would replace scores made another way, which needs --overwrite
RECIPE_KEYS = ("mode", "estimator", "samples", "seed", "limit", "subset", "precision", "checkpoint_step",
               "tokenizer_sha256")
RECIPE_DEFAULTS = {"subset": "random"}  # what scores stored before a recipe key existed were made with
MODES = ("ar", "md", "prefix")  # the order of the modes in eval/<task>.json and eval/<task>.items.jsonl


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
                raise RunDirError(f"{run_dir} has no intact checkpoint; train it first "
                                  f"(`dualobj train ... out={run_dir}`)")
            step = int(state["step"])
        self.model, self.step = model.eval(), step
        self.corpus = corpus or prepare_corpus(self.cfg.data, self.cfg.model.vocab_size)
        bf16 = use_bf16(self.cfg.train.precision, self.device)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else None
        self.precision = "bf16" if bf16 else "fp32"
        from tokenizers import Tokenizer

        from dualobj.evaluate.scoring import Scorer

        self.tokenizer = Tokenizer.from_file(self.corpus.tokenizer_path)
        m = self.cfg.model
        self.rows = batch_rows(m.seq_len, m.vocab_size, self.e.batch_size)
        self.scorer = Scorer(self.model, self.tokenizer, bos_id=self.corpus.bos_id, mask_id=self.corpus.mask_id,
                             seq_len=m.seq_len, autocast=self.autocast, batch_size=self.rows,
                             max_tokens=self.rows * m.seq_len)

    # ----------------------------------------------------------------- tasks
    def _task(self, name: str):
        from dualobj.evaluate.registry import get_task

        return get_task(name, self.e.benchmark_dir, data=self.cfg.data, n_items=self.e.probe_items, seed=self.e.seed,
                        task_files=dict(self.e.task_files))

    def recipe(self, mode: str) -> dict:
        md = mode == "md"
        return {
            "mode": mode,
            "estimator": (self.e.md_estimator if md else "exact"),
            "samples": self.e.md_samples if md and self.e.md_estimator == "mc" else None,
            "seed": self.e.seed, "limit": self.e.limit, "subset": self.e.subset, "precision": self.precision,
            "md_masks": ("shared by the requests of one item (common random numbers)"
                         if md and self.e.md_estimator == "mc" else None),
            "prompt_format": "<s> context continuation (context and continuation tokenised jointly)",
            "attention": {"ar": "causal", "md": "bidirectional, continuation masked",
                          "prefix": "bidirectional over <s>+context, causal over the continuation"}[mode],
            "code_version": code_version(), "checkpoint_step": self.step,
            "tokenizer_sha256": sha256_file(Path(self.corpus.tokenizer_path)),
        }

    def run_task(self, name: str) -> dict:
        """One task in every mode asked for: {"task", "n_items", "results": {mode: numbers}, "task_recipe"},
        and under "item_rows" what eval/<task>.items.jsonl keeps of each item (see ``item_rows``)."""
        if name == "val":
            return self.run_val()
        task = self._task(name)
        index = task.indices(self.e.limit, self.e.seed, self.e.subset)
        items = task.take(index)
        pairs = [(r.context, r.continuation) for it in items for r in it.requests]
        groups = [i for i, it in enumerate(items) for _ in it.requests]  # an item's requests share MD masks
        results, rows = {}, []
        for mode in self.e.modes:
            t0 = time.perf_counter()
            flat = self.scorer.score(pairs, mode, self.e.md_estimator, self.e.md_samples, self.e.seed,
                                     greedy=task.exact_match, groups=groups)
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
            res["indices"] = "all" if len(index) == len(task) else index
            results[mode] = res
            rows += item_rows(mode, index, items, per_item, task.outcomes(items, per_item))
        return {"task": task.name, "n_items": len(items), "results": results, "task_recipe": task.recipe(),
                "item_rows": rows}

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
            if self.scorer.stopping():
                raise EvalStopped()
            t0 = time.perf_counter()
            got = validation_metrics(self.model, win, c, modes=(mode,), batch_size=self.rows,
                                     md_samples=self.e.md_samples, seed=self.e.seed, autocast=self.autocast)
            res = {name: got[key] for name, key in VAL_KEYS[mode].items()}
            res["windows"], res["bytes"] = len(win), got["bytes"]
            res["items_per_s"] = len(win) / max(time.perf_counter() - t0, 1e-9)
            res["recipe"] = {**self.recipe(mode), "unit": VAL_UNITS[mode]}
            results[mode] = res
        return {"task": "val", "n_items": len(win), "results": results, "task_recipe": {"split": "validation"}}

    # ----------------------------------------------------------------- all
    def run(self, skip_missing: bool = False, say=print, overwrite: bool = False,
            stopping: Callable[[], bool] | None = None, keep_done: bool = False) -> dict:
        """Run every task; write eval/<task>.json; merge headline scores into summary.json.

        Scores already on disk that were made with another recipe (limit, seed, samples, checkpoint, ...)
        are never replaced silently: without ``overwrite`` that is a ConfigError before anything runs.
        ``stopping``: checked between tasks and between batches; when true, EvalStopped is raised and the
        tasks finished so far stay on disk. ``keep_done``: a task whose file holds every requested mode with
        this recipe (an earlier, stopped attempt) is kept, not scored again.
        """
        from dualobj.evaluate.registry import expand_tasks
        from dualobj.faults import maybe_die, maybe_hold

        stopping = stopping or (lambda: False)
        self.scorer.stopping = stopping
        names = expand_tasks(list(self.e.tasks))
        self._check_recipes(names, overwrite, say)
        headline: dict[str, float] = {}
        done = []
        for i, name in enumerate(names):
            if i == 1:
                maybe_die("eval")
            maybe_hold("eval", C.run_id(self.cfg), i, stopping=stopping)
            if stopping():
                raise EvalStopped(done)
            res = self._stored_task(name) if keep_done else None
            if res is None:
                try:
                    res = self.run_task(name)
                except DataError as err:
                    if skip_missing and "not found" in str(err):
                        say(f"eval: skipping {name} ({err})")
                        continue
                    raise
                except EvalStopped as err:
                    raise EvalStopped(done) from err
                res = self._write_task(res)
            done.append(res["task"])
            headline.update(headline_of(res))
            say(f"eval: {res['task']}: " + ", ".join(
                f"{m} {r.get('score', r.get('bpb')):.2f}" for m, r in res["results"].items()))
        headline.update(self._average({**self._stored_scores(), **headline}))
        self._merge_summary(headline)
        return {"tasks": done, "headline": headline}

    def _stored_scores(self) -> dict:
        """Scores an earlier evaluation of this run left in summary.json (same recipe: see _check_recipes)."""
        try:
            summary = read_json(self.rd.summary_path)
        except FileNotFoundError:
            return {}
        return {k: v for k, v in summary.items() if k.startswith(("eval/", "eval_se/", "eval_n/", "eval_acc"))}

    def _stored(self, name: str) -> dict | None:
        """What eval/<task>.json holds (with its ``results`` per mode), or None when there is none."""
        try:
            res = read_json(self.rd.path / "eval" / f"{Path(name).stem}.json")
            return res if isinstance(res["results"], dict) else None
        except (FileNotFoundError, KeyError, TypeError, RunDirError):
            return None

    def _recipe_diff(self, mode: str, theirs: dict) -> list[str]:
        """The recipe keys where stored scores of ``mode`` differ from this evaluation's, as key=their value."""
        mine = self.recipe(mode)
        theirs = {**RECIPE_DEFAULTS, **theirs}
        return [f"{k}={theirs.get(k)!r}" for k in RECIPE_KEYS if theirs.get(k) != mine.get(k)]

    def _stored_task(self, name: str) -> dict | None:
        """eval/<task>.json when it holds every requested mode made with this recipe, else None."""
        res = self._stored(name)
        if res is None:
            return None
        for mode in self.e.modes:
            if name == "val" and mode not in VAL_KEYS:
                continue  # validation has no prefix mode
            if mode not in res["results"] or self._recipe_diff(mode, res["results"][mode].get("recipe", {})):
                return None
        return res

    def _write_task(self, res: dict) -> dict:
        """Write eval/<task>.json (and eval/<task>.items.jsonl) with this evaluation's modes merged into what
        is stored: the modes not evaluated now keep their scores (their recipes were checked per mode by
        ``_check_recipes``), so any sequence of per-mode runs ends with the files one run of all modes
        writes. Returns the merged result."""
        rows = res.pop("item_rows", None)
        old = self._stored(res["task"]) or {"results": {}}
        merged = {**old["results"], **res["results"]}
        res["results"] = {m: merged[m] for m in sorted(merged, key=_mode_order)}
        counts = {r.get("n", r.get("windows")) for r in res["results"].values()}
        res["n_items"] = counts.pop() if len(counts) == 1 else max(counts)  # per mode: results[mode]["n"]
        res.update(run_id=C.run_id(self.cfg), written=time.time())
        folder = self.rd.path / "eval"
        if rows is not None:
            self._write_item_rows(folder / f"{res['task']}.items.jsonl", rows, set(self.e.modes))
        write_json(folder / f"{res['task']}.json", res)
        return res

    @staticmethod
    def _write_item_rows(path: Path, rows: list[dict], modes: set[str]) -> None:
        """eval/<task>.items.jsonl: the stored rows of other modes kept, this evaluation's replacing its modes';
        ordered by mode, then by position in the evaluated subset."""
        kept = []
        if path.exists():
            kept = [r for r in map(json.loads, path.read_text().splitlines()) if r.get("mode") not in modes]
        rows = sorted(kept + rows, key=lambda r: (_mode_order(r["mode"]), r["position"]))
        atomic_write(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))

    def _check_recipes(self, names: list[str], overwrite: bool, say) -> None:
        """Refuse (or, with ``overwrite``, announce) replacing scores that were made with another recipe."""
        clashes = []
        for name in names:
            old = self._stored(name)
            for mode, r in (old or {}).get("results", {}).items():
                if mode in self.e.modes and (diff := self._recipe_diff(mode, r.get("recipe", {}))):
                    clashes.append(f"eval/{Path(name).stem}.json ({mode}: {', '.join(diff)})")
        if clashes and not overwrite:
            raise C.ConfigError(f"{len(clashes)} stored score(s) were made with another recipe, e.g. {clashes[0]}; "
                                f"add --overwrite to replace them, or evaluate with the same settings")
        for c in clashes:
            say(f"eval: replacing {c}")

    def _average(self, scores: dict[str, float]) -> dict:
        """eval/avg/<mode> over exactly the tasks of eval.task_set, for each mode in which all of them have a
        score, with its standard error (tasks independent); otherwise the missing tasks are named."""
        from dualobj.evaluate.registry import TASK_SETS

        members = TASK_SETS[self.e.task_set]
        out: dict = {"eval/task_set": self.e.task_set, "eval/task_set_missing": ""}
        for mode in [m for m in MODES if any(k.startswith("eval/") and k.endswith(f"/{m}") for k in scores)]:
            missing = [t for t in members if f"eval/{t}/{mode}" not in scores]
            if missing:
                out["eval/task_set_missing"] = ",".join(missing)
                continue
            out[f"eval/avg/{mode}"] = sum(scores[f"eval/{t}/{mode}"] for t in members) / len(members)
            se2 = sum(scores.get(f"eval_se/{t}/{mode}", float("nan")) ** 2 for t in members)
            out[f"eval_se/avg/{mode}"] = math.sqrt(se2) / len(members)
        return out

    def _merge_summary(self, headline: dict) -> None:
        if not self.rd.summary_path.exists():
            return
        summary = read_json(self.rd.summary_path)
        for k in [k for k in summary if k.startswith(("eval/avg/", "eval_se/avg/"))]:
            summary.pop(k)  # an average describes exactly the task set named beside it
        for k in [k for k in headline if k.startswith("eval/")]:
            summary.pop("eval_mc_se/" + k[len("eval/"):], None)  # a re-scored task's MC SE is its new one or none
        summary.update(headline)
        write_json(self.rd.summary_path, summary)
        if self.rd.status().get("summary_sha256"):  # keep the done run's checksum true
            self.rd.set_status(summary_sha256=sha256_file(self.rd.summary_path))


def _mode_order(mode: str) -> int:
    return MODES.index(mode) if mode in MODES else len(MODES)


def item_rows(mode: str, index: list[int], items: list, scores: list[list], outcomes: list[dict]) -> list[dict]:
    """One row per evaluated item: ``mode``, ``position`` (in the evaluated subset), ``index`` (in the task's
    source, file order: the number to line items up with another tool), ``gold``, the task's decision
    (``pred``, ``correct``; multiple choice also ``pred_norm``, ``correct_norm``) and per request its
    log-likelihood (MD: the ELBO-based estimate) ``logprob`` in nats, ``n_tokens`` and UTF-8 ``bytes``, with the
    estimate's ``se`` in MD mode and ``greedy`` where asked for."""
    from dualobj.evaluate.tasks import choice_bytes

    out = []
    for pos, (i, it, s, o) in enumerate(zip(index, items, scores, outcomes, strict=True)):
        req = [{"logprob": x.logprob, "n_tokens": x.n_tokens, "bytes": choice_bytes(r),
                **({"se": x.se} if x.draws else {}), **({"greedy": x.greedy} if x.greedy is not None else {})}
               for x, r in zip(s, it.requests, strict=True)]
        out.append({"mode": mode, "position": pos, "index": i, "gold": it.gold, **o, "requests": req})
    return out


def headline_of(res: dict) -> dict[str, float]:
    """summary.json's keys for one task's results: eval/<task>/<mode> and its SE eval_se/<task>/<mode>
    (chance-normalised scores), the accuracies eval_acc/<task>/<mode> and eval_acc_norm/<task>/<mode>, in MD
    mode (``mc``) also eval_mc_se/<task>/<mode> (the SE over mask draws with
    the items fixed, ``score_mc_se``), and the items scored eval_n/<task>; or eval/val/<mode>_bpb for validation."""
    out = {} if res["task"] == "val" else {f"eval_n/{res['task']}": res["n_items"]}
    for mode, r in res["results"].items():
        if res["task"] == "val":
            out[f"eval/val/{mode}_bpb"] = r["bpb"]
        else:
            out[f"eval/{res['task']}/{mode}"] = r["score"]
            out[f"eval_se/{res['task']}/{mode}"] = r["score_se"]
            for acc in ("acc", "acc_norm"):  # the raw accuracies, beside the chance-normalised score
                if acc in r:
                    out[f"eval_{acc}/{res['task']}/{mode}"] = r[acc]
            if "score_mc_se" in r:
                out[f"eval_mc_se/{res['task']}/{mode}"] = r["score_mc_se"]
    return out


def evaluate(run_dir: str | Path, overrides: list[str] | None = None, skip_missing: bool = False, say=print,
             overwrite: bool = False) -> dict:
    """``dualobj eval RUN_DIR eval.key=value ...``: only eval.* keys may change (the model is fixed)."""
    from dualobj.evaluate.registry import check_task_names

    cfg = load_run_config(Path(run_dir))
    overrides = list(overrides or [])
    bad = [o for o in overrides if not o.lstrip("+").startswith("eval.")]
    if bad:
        raise C.ConfigError(f"dualobj eval takes only eval.* overrides, got {bad}; the trained model is fixed")
    if overrides:  # the same strict keys, number forms and one-line errors as `dualobj train`
        cfg = C.apply_overrides(cfg, overrides)
    check_task_names(list(cfg.eval.tasks), cfg.eval.task_set)
    return Evaluator(run_dir, cfg.eval, cfg).run(skip_missing=skip_missing, say=say, overwrite=overwrite)
