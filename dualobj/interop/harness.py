"""lm-evaluation-harness model ``dualobj``: a finished run scored by lm-eval in AR, MD or prefix-LM mode.

Needs the ``harness`` extra (``pip install 'dualobj[harness]'``). Importing this module registers the model
with lm-eval under the name ``dualobj``; ``dualobj harness RUN_DIR --mode md [lm-eval arguments]`` does that
and hands the rest of its arguments to lm-eval's own command line. In Python::

    import lm_eval
    from dualobj.interop.harness import DualobjLM

    lm_eval.simple_evaluate(model=DualobjLM("runs/demo", mode="md"), tasks=[...], task_manager=...)

or, once this module is imported, ``model="dualobj", model_args="pretrained=runs/demo,mode=md"``.

Every number comes from the run's one scorer (``dualobj.evaluate.scoring``), exactly as ``dualobj eval``:

* ``loglikelihood``: each (context, continuation) request is ``<s> context continuation`` scored in the
  chosen mode (``md``: the unbiased Monte-Carlo ELBO estimate with the run's ``eval.md_samples`` and
  ``eval.seed`` unless ``samples``/``seed``/``estimator`` are given). The MD noise is drawn for the
  requests in the order lm-eval hands them over, as ``dualobj eval`` draws it for a task's requests in item
  order, so the same items in the same order get the same estimates.
* ``loglikelihood_rolling`` (perplexity tasks): exact, in ``ar`` (or ``prefix``) mode, over disjoint windows
  of the model's context (lm-eval's own window rule: every token predicted once, the last window with a
  full context), each window scored after ``<s>`` like a training document. MD has no exact likelihood:
  refused with one line.
* ``generate_until``: greedy (temperature 0) generation with ``dualobj.evaluate.generate`` in the chosen mode
  (``md``: ``gen_steps`` unmasking rounds), cut at the first stop string.

lm-eval's ``--batch_size`` and ``--device`` are ignored: the scorer batches by a memory budget
(the run's ``eval.batch_size``) and runs where ``dualobj eval`` runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from dualobj.errors import ConfigError
from dualobj.interop.runs import check_mode, done_run

NAME = "dualobj"
DEFAULT_GEN_TOKENS = 256  # lm-eval's default max_gen_toks, capped by the model's context
# what lm-eval hands every model besides its model_args: accepted, recorded, not used (see the module doc)
LM_EVAL_SETTINGS = {"batch_size", "max_batch_size", "device", "trust_remote_code"}


def doc_groups(requests) -> list[int]:
    """The document of each request (lm-eval's task name and doc_id), numbered in order of appearance: the
    answer choices of one document share their MD mask draws, as in `dualobj eval`."""
    ids: dict = {}
    return [ids.setdefault((getattr(r, "task_name", None), getattr(r, "doc_id", i)), len(ids))
            for i, r in enumerate(requests)]


@register_model(NAME)
class DualobjLM(LM):
    """A finished dualobj run as an lm-eval model (see the module doc)."""

    def __init__(self, pretrained: str, mode: str = "ar", estimator: str | None = None, samples: int | None = None,
                 seed: int | None = None, gen_steps: int = 32, **lm_eval_settings):
        super().__init__()
        from dualobj.evaluate.evaluator import Evaluator

        self.mode = check_mode(str(mode))
        if unknown := sorted(set(lm_eval_settings) - LM_EVAL_SETTINGS):
            raise ConfigError(f"model_args {unknown} mean nothing to dualobj; it takes pretrained, mode, estimator, "
                              "samples, seed, gen_steps")
        self.ev = Evaluator(done_run(pretrained))  # lm-eval's name for where a model is: here a run directory
        e = self.ev.e
        self.estimator = str(estimator or e.md_estimator)
        self.samples = int(e.md_samples if samples is None else samples)
        self.seed = int(e.seed if seed is None else seed)
        self.gen_steps = int(gen_steps)
        if self.estimator not in ("mc", "pll"):
            raise ConfigError(f"estimator={self.estimator!r} is not one of mc, pll")
        if self.samples < 1 or self.gen_steps < 1:
            raise ConfigError(f"samples={self.samples} and gen_steps={self.gen_steps} must both be >= 1")
        self.ignored = {k: v for k, v in lm_eval_settings.items() if v is not None}

    # ----------------------------------------------------------------- what lm-eval asks
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [tuple(r.args[:2]) for r in requests]
        scores = self.ev.scorer.score(pairs, self.mode, self.estimator, self.samples, self.seed,
                                      groups=doc_groups(requests))
        out = [(s.logprob, s.greedy) for s in scores]
        for pair, res in zip(pairs, out, strict=True):
            self.cache_hook.add_partial("loglikelihood", pair, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        if self.mode == "md":
            raise ConfigError("loglikelihood_rolling (perplexity tasks) needs an exact likelihood, which MD mode "
                              "does not have; score those tasks with --mode ar (or prefix)")
        texts = [r.args[0] for r in requests]
        windows = [self.windows(t) for t in texts]
        flat = [w for ws in windows for w in ws]
        scores = self.ev.scorer._exact(flat, prefix=self.mode == "prefix") if flat else []
        out, k = [], 0
        for text, ws in zip(texts, windows, strict=True):
            out.append(float(sum(s.logprob for s in scores[k:k + len(ws)])))
            k += len(ws)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), out[-1])
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from dualobj.evaluate.generate import generate

        out = []
        for r in requests:
            context, kwargs = r.args[0], dict(r.args[1] or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            n = min(int(kwargs.get("max_gen_toks", DEFAULT_GEN_TOKENS)), self.ev.cfg.model.seq_len - 1)
            text = generate(self.ev, context, mode=self.mode, max_tokens=n, steps=min(self.gen_steps, n),
                            temperature=0.0, top_k=0, top_p=1.0, seed=self.seed)
            out.append(cut_at_stop(text, until))
            self.cache_hook.add_partial("generate_until", (context, r.args[1]), out[-1])
        return out

    # ----------------------------------------------------------------- helpers
    def windows(self, text: str) -> list[tuple[list[int], list[int]]]:
        """(context ids, continuation ids) of each disjoint window of ``text``: every token predicted once,
        the first after ``<s>``, rows at most the model's context long."""
        tok = self.ev.tokenizer
        tok.encode_special_tokens = True  # "<s>" typed in a text is text, as in the scorer
        ids = tok.encode(text, add_special_tokens=False).ids
        bos, seq_len = self.ev.corpus.bos_id, self.ev.cfg.model.seq_len
        # the model reads rows of seq_len tokens; a row is the window's input plus its last predicted token
        return [make_disjoint_window(w) for w in get_rolling_token_windows(ids, bos, seq_len - 1, 1)]

    def get_model_info(self) -> dict:
        """Recorded by lm-eval in its results' config: which run, checkpoint and scoring recipe."""
        return {"dualobj_run": str(self.ev.rd.path), "dualobj_mode": self.mode,
                "dualobj_recipe": {**self.ev.recipe(self.mode), "estimator": self.estimator if self.mode == "md"
                                   else "exact", "samples": self.samples if self.mode == "md" else None,
                                   "seed": self.seed},
                "dualobj_ignored_lm_eval_settings": self.ignored}


def cut_at_stop(text: str, until: list[str]) -> str:
    """``text`` up to (not including) the earliest of the stop strings."""
    ends = [text.find(s) for s in until if s and s in text]
    return text[: min(ends)] if ends else text


def run_cli(run_dir: Path, mode: str, args: list[str]) -> int:
    """``dualobj harness``: lm-eval's command line with ``--model dualobj`` and this run as its model_args;
    returns lm-eval's exit code."""
    from lm_eval.__main__ import cli_evaluate

    if any(a in ("--model", "-M") or a.startswith("--model=") for a in args):
        raise ConfigError("dualobj harness sets lm-eval's --model itself; drop --model (pass other settings of "
                          "the model with --model_args key=value)")
    model_args = json.dumps({"pretrained": str(Path(run_dir).resolve()), "mode": mode})
    argv = sys.argv
    sys.argv = ["lm-eval", "run", "--model", NAME, "--model_args", model_args, *args]
    try:
        cli_evaluate()
    except SystemExit as e:  # argparse and lm-eval end with sys.exit
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return 0
