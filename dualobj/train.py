"""Train one dual-objective model into a run directory; resume it exactly after any crash.

Everything a step does is a pure function of (config, step): the windows come from the repeated
stream by global sequence index, the AR/MD split from error diffusion, the masks from a generator
seeded by (seed, step), the learning rate from the step. A checkpoint therefore needs only the
model, the optimizer and the step, and a resumed run matches an uninterrupted one bit for bit.

The trainer knows nothing of evaluation: whoever wants scores at the end of training passes an
``after`` hook (``dualobj.evaluate.train_and_evaluate`` does), called with a :class:`Trained` (the model,
its corpus, the run directory and step) before the run is marked done.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dualobj import __version__
from dualobj.budget import Budget
from dualobj.config import Config, run_id, to_yaml
from dualobj.data.repetition import RepeatedStream, val_windows
from dualobj.data.tokens import TokenizedCorpus, prepare_corpus
from dualobj.errors import ConfigError, DualObjError, EvalStopped, RunDirError
from dualobj.faults import maybe_die, maybe_hold
from dualobj.logger import LocalLogger, make_logger
from dualobj.metrics import batch_rows, validation_metrics
from dualobj.model import Transformer, document_ids
from dualobj.objective import Draws, DualObjective, ar_rows_from_prefix, ce_and_lse
from dualobj.optim import build_optimizer, set_lr
from dualobj.run import RunDir, atomic_write, read_json, sha256_file, write_json
from dualobj.runtime import (
    Dist,
    compile_problem,
    isolate_compile_cache,
    native_bf16,
    pick_device,
    precision_note,
    use_bf16,
    where,
)

# SIGTERM / SIGUSR1: what SLURM sends before pre-emption; SIGUSR2: submitit's time-out signal.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
_STEP_DELAY = float(os.environ.get("DUALOBJ_STEP_DELAY", "0") or 0)


class TrainingFailed(DualObjError):
    """The run stopped for a reason recorded in status.json (e.g. a non-finite loss)."""


class Interrupted(DualObjError):
    """Stopped by a signal after saving a checkpoint; re-running resumes."""

    def __init__(self, msg: str, signum: int = 0):
        super().__init__(msg)
        self.signum = signum


class GaveUp(DualObjError):
    """The run failed as many times as it may; it is not retried."""


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 1)


@dataclass
class Trained:
    """What the end-of-training hook is given: the trained model and what it was trained on."""

    model: Transformer
    corpus: TokenizedCorpus
    run_dir: Path
    step: int  # the last training step
    say: Callable[[str], None]  # prints a line where the run's messages go (rank 0 only)
    stopping: Callable[[], bool] = lambda: False  # true once a stop was requested (SIGTERM, Ctrl-C)


AfterHook = Callable[[Trained], dict]  # end-of-training work (evaluation); returns summary fields


class Trainer:
    """Holds everything one run needs; ``run()`` trains to the budget (or resumes) and summarises."""

    def __init__(self, cfg: Config, out: str | Path | None = None, console=None, max_attempts: int = 0,
                 after: AfterHook | None = None):
        self.cfg = cfg
        self.max_attempts = max_attempts  # 0 = unlimited; a sweep sets its retry limit
        self.after = after
        self.run_id = run_id(cfg)
        self.rd = RunDir(out or cfg.out or f"runs/{self.run_id}")
        self.console = console
        self._stop_signal: int | None = None
        self._stop_all = False
        self._last_val: dict | None = None
        self.dist = Dist()
        self.main = self.dist.is_main  # rank 0 alone writes the run directory
        self.budget = Budget(cfg)
        self.timers = {"validate": 0.0, "checkpoint": 0.0, "train": 0.0}  # seconds per activity
        # Built by setup() (runtime, data, model), in this order; None until then.
        self.device: torch.device | None = None
        self.bf16 = False  # bf16 autocast (train.precision and the hardware)
        self.autocast: torch.autocast | None = None
        self.corpus: TokenizedCorpus | None = None
        self.stream: RepeatedStream | None = None  # the repeated training windows
        self.val: torch.Tensor | None = None  # in-training validation windows
        self.model: Transformer | None = None
        self.forward_eval = None  # the model's forward (compiled when train.compile)
        self.forward = None  # the training forward (DDP-wrapped under data parallelism)
        self.ddp = None
        self.objective: DualObjective | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.total_steps = 0
        self.eval_every = 0
        # Set as training goes.
        self.t_start = 0.0  # wall clock at the start of this attempt's training
        self._last_ckpt_time = 0.0

    def say(self, msg: str) -> None:
        if self.main:
            (self.console.print if self.console else print)(msg)

    def status(self, **fields) -> None:
        if self.main:
            self.rd.set_status(**fields)

    # ------------------------------------------------------------------ setup
    def _setup_runtime(self) -> None:
        t, world = self.cfg.train, self.dist.world
        if t.batch_size % world or (t.batch_size // world) % (t.micro_batch_size or t.batch_size // world):
            raise ConfigError(f"train.batch_size={t.batch_size} must split evenly over {world} processes "
                              f"and into micro-batches of train.micro_batch_size={t.micro_batch_size}")
        threads = t.threads or (max(1, (os.cpu_count() or 1) // self.dist.local_world) if self.dist.enabled else 0)
        if threads:
            torch.set_num_threads(threads)
        self.device = self.dist.device() if self.dist.enabled else pick_device()
        self.bf16 = use_bf16(t.precision, self.device)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else None
        if note := precision_note(t.precision, self.device):
            self.say(note)

    def _setup_data(self) -> None:
        cfg, m = self.cfg, self.cfg.model
        self.corpus = prepare_corpus(cfg.data, m.vocab_size)
        self.stream = RepeatedStream(self.corpus.train, self.corpus.train_starts, self.budget.unique_tokens,
                                     m.seq_len, cfg.seed, repetitions=cfg.data.repetitions)
        self.val = torch.from_numpy(val_windows(self.corpus.val, m.seq_len, cfg.data.val_sequences))

    def _setup_model(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        torch.manual_seed(cfg.seed)
        self.model = Transformer(cfg.model).to(self.device)
        self.model.check_attention(self.device, compiled=t.compile)  # a wrong flex kernel falls back to dense
        if t.compile:  # a sweep worker trains many runs in one process: start each with a fresh
            torch._dynamo.reset()  # recompile budget, or later runs silently fall back to eager
            isolate_compile_cache()
        self.forward_eval = torch.compile(self.model) if t.compile else self.model
        self.forward = self.forward_eval
        if self.dist.enabled:  # DDP averages gradients over ranks; each rank's loss is scaled to a sum
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                           broadcast_buffers=False, gradient_as_bucket_view=True)
            self.forward = torch.compile(self.ddp) if t.compile else self.ddp
        compiled = t.compile and self._compiled_model_ok()
        # The loss tail (fp32 log-softmax over the vocabulary, CE and z-loss) compiles to a third of its
        # eager cost, which is a sixth of a `tiny` bf16 step on a CPU.
        c = self.corpus
        self.objective = DualObjective(cfg.objective, bos_id=c.bos_id, mask_id=c.mask_id,
                                       special_ids=torch.tensor(c.special_ids, dtype=torch.long),
                                       token_losses=torch.compile(ce_and_lse, dynamic=False) if compiled else None)
        self.opt = build_optimizer(self.model, t, bf16=native_bf16(self.device))

    def _compiled_model_ok(self) -> bool:
        """Compiled kernels are checked before they are trusted: the compiled model's logits on the first
        micro-batch's windows (half the rows causal, half bidirectional, packed documents) must match the
        eager model's (``compile_problem``); if not, one line says so and the run trains eager."""
        t = self.cfg.train
        mb = t.micro_batch_size or t.batch_size // self.dist.world
        x = torch.from_numpy(self.stream.get(np.arange(mb)))[:, :-1]
        args = (x.to(self.device), (torch.arange(mb) % 2 == 0).to(self.device),
                document_ids(x, self.corpus.bos_id).to(self.device))
        problem = compile_problem(self.model, self.forward_eval, args, self.autocast)
        if problem is None:
            return True
        self.say(f"compile: the compiled model {problem} on a probe batch ({where(self.device)}); "
                 f"training eager instead, as with train.compile=false")
        self.forward_eval = self.model
        self.forward = self.ddp if self.ddp is not None else self.model
        return False

    def setup(self) -> None:
        self._setup_runtime()
        self._setup_data()
        self._setup_model()
        self.total_steps = self.budget.total_steps
        self.eval_every = self.cfg.train.eval_every or max(1, math.ceil(self.total_steps / 8))

    # ------------------------------------------------------------------ validation
    def validate(self, seed: int = 0) -> dict:
        t0 = time.perf_counter()
        self.model.eval()
        try:
            cfg = self.cfg
            v = validation_metrics(self.forward_eval, self.val, self.corpus,
                                   batch_size=batch_rows(cfg.model.seq_len, cfg.model.vocab_size, cfg.eval.batch_size),
                                   md_samples=cfg.train.val_md_samples, seed=seed, autocast=self.autocast)
        finally:
            self.model.train()
            self.timers["validate"] += time.perf_counter() - t0
        return {f"val/{k}": v[k] for k in ("ar_nll", "ar_ppl", "ar_bpb", "md_elbo", "md_elbo_se", "md_bpb")}

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> dict:
        """One optimizer step over the global batch; this rank computes its contiguous share of rows."""
        cfg, t = self.cfg, self.cfg.train
        b, world, rank = t.batch_size, self.dist.world, self.dist.rank
        local = b // world
        mb = t.micro_batch_size or local
        n_ar = ar_rows_from_prefix(self.budget.alpha_sum, step, b)  # the global batch's first n_ar rows are AR
        lo = rank * local
        windows = torch.from_numpy(self.stream.get(np.arange(step * b + lo, step * b + lo + local)))
        draws = Draws.sample(b, cfg.model.seq_len, step_generator(cfg.seed, step))[lo:lo + local]
        sums = [0.0, 0.0, 0.0, 0.0]  # loss, AR CE, MD loss, z-loss
        for i in range(0, local, mb):
            n_ar_part = int(min(max(n_ar - lo - i, 0), mb))
            last = i + mb >= local
            sync = contextlib.nullcontext() if (last or not self.dist.enabled) else self.ddp.no_sync()
            with sync:
                out = self.objective.loss(self.forward, windows[i:i + mb], n_ar_part, draws=draws[i:i + mb],
                                          denom_rows=b, autocast=self.autocast)
                (out.loss * world).backward()  # DDP averages over ranks: undo it to get the global sum
            for j, v in enumerate((out.loss.detach(), out.ar_ce_sum, out.md_loss_sum, out.z_loss_sum)):
                sums[j] += float(v)
        stop = 1.0 if self._stop_signal is not None else 0.0
        total_loss, ar_sum, md_sum, z_sum, stops = self.dist.sum([*sums, stop], self.device)
        self._stop_all = stops > 0  # every rank stops at the same step
        if not math.isfinite(total_loss):
            raise TrainingFailed(f"loss became {total_loss} at step {step}; lower train.lr or check the data")
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip or float("inf"))
        lr = set_lr(self.opt, t, step, self.total_steps)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        length = cfg.model.seq_len
        return {
            "train/loss": total_loss,
            "train/ar_loss": ar_sum / (n_ar * length) if n_ar else None,
            "train/md_loss": md_sum / (b - n_ar) if b - n_ar else None,
            "train/z_loss": z_sum / b,
            "train/ar_rows": n_ar,
            "train/alpha": self.budget.alpha_sum[step + 1] - self.budget.alpha_sum[step],
            "train/grad_norm": float(gnorm),
            "train/lr": lr,
        }

    # ------------------------------------------------------------------ bookkeeping
    def checkpoint(self, step: int) -> None:
        if not self.main:
            return
        t0 = time.perf_counter()
        state = {
            "step": torch.tensor(step),
            "optimizer": self.opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        self.rd.save_checkpoint(step, self.model, state, self.cfg.train.keep_checkpoints)
        self.timers["checkpoint"] += time.perf_counter() - t0

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self._stop_signal is not None:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once (the last checkpoint stays valid)
        self._stop_signal = signum

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        self.dist.start()
        try:
            with contextlib.ExitStack() as stack:
                ok, err = True, None
                if self.main:  # rank 0 owns the run directory and its lock
                    try:
                        self.rd.create()
                        stack.enter_context(self.rd.lock())
                    except DualObjError as e:
                        ok, err = False, e
                where = torch.device("cpu") if not torch.cuda.is_available() else self.dist.device()
                if not self.dist.agree(ok, where):
                    raise err or RunDirError(f"rank 0 could not take {self.rd.path}; see its message")
                result = self._run_locked()
            self.dist.barrier()  # after rank 0 has written the summary and released the lock
            return result
        finally:
            self.dist.stop()

    def _finished_summary(self, status: dict) -> dict | None:
        """The summary of a run that is already done (and intact), or None if it must (re)compute."""
        rd = self.rd
        if status.get("state") == "failed" and self.max_attempts and status.get("attempts", 0) >= self.max_attempts:
            raise GaveUp(f"run {self.run_id} failed {status['attempts']} times (last: {status.get('error')}); "
                         f"not retried. Fix the cause, then delete {rd.status_path} to try again")
        if status.get("state") != "done":
            return None
        problem = rd.summary_problem(status)
        if problem is None:
            self.say(f"run {self.run_id} is already done: {rd.path}")
            return read_json(rd.summary_path)
        self.say(f"run {self.run_id} was done but its {problem}; recomputing it from the last good checkpoint")
        return None

    def _resume(self) -> int:
        """Load the newest intact checkpoint (if any); return the step to start from."""
        state = self.rd.load_latest(self.model, warn=self.say)
        if state is None:
            return 0
        start = int(state["step"])
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.say(f"resuming run {self.run_id} from step {start}/{self.total_steps}")
        return start

    def _run_locked(self) -> dict:
        cfg, rd = self.cfg, self.rd
        rd.check_identity(self.run_id)
        status = rd.status()
        done = self._finished_summary(status)
        if done is not None:
            return done
        self.setup()
        if self.main:
            atomic_write(rd.config_path, f"# dualobj {__version__}\nrun_id: '{self.run_id}'\n" + to_yaml(cfg))
        start = self._resume()
        if self.main:
            rd.truncate_metrics(start)
        attempts = int(status.get("attempts", 0)) + 1
        self.status(state="running", step=start, total_steps=self.total_steps, attempts=attempts,
                    run_id=self.run_id, error=None, world_size=self.dist.world)
        logger = make_logger(cfg, self.run_id, rd.path) if self.main else LocalLogger()
        old = {s: signal.signal(s, self._on_signal) for s in _STOP_SIGNALS}
        try:
            return self._train_and_finish(start, logger)
        except KeyboardInterrupt:
            self.status(state="interrupted", error="interrupted by Ctrl-C")
            raise
        except Interrupted:
            raise  # status already says interrupted, with a checkpoint at the step it stopped
        except TrainingFailed as e:
            self.status(state="failed", error=str(e))
            raise
        except Exception as e:
            self.status(state="failed", error=f"{e.__class__.__name__}: {e}")
            raise
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            logger.finish()

    def _train_and_finish(self, start: int, logger) -> dict:
        self.t_start = time.time()
        last = self._loop(start, logger)
        if not self.main:
            return {}
        summary = build_summary(self, start, last, self._last_val or self.validate())
        write_json(self.rd.summary_path, summary)
        maybe_die("summary_write")
        if self.after:  # before "done", so a run killed while evaluating redoes its evaluation
            self.rd.set_status(phase="eval")
            t0 = time.perf_counter()
            summary.update(self._evaluate())
            summary["eval_time_s"] = time.perf_counter() - t0
            self.say(f"evaluation: {summary['eval_time_s']:.0f} s (training: {summary['train_time_s']:.0f} s)")
        write_json(self.rd.summary_path, summary)  # with the evaluation's headline scores
        self.rd.set_status(state="done", phase=None, step=self.total_steps, train_time_s=summary["train_time_s"],
                           summary_sha256=sha256_file(self.rd.summary_path))
        logger.summary(summary)
        return summary

    def _evaluate(self) -> dict:
        """The end-of-training hook; a stop request during it ends the run as interrupted, keeping the
        tasks it finished (a re-run evaluates the rest)."""
        try:
            return self.after(Trained(self.model, self.corpus, self.rd.path, self.total_steps, self.say,
                                      stopping=lambda: self._stop_signal is not None))
        except EvalStopped as e:
            name = signal.Signals(self._stop_signal or signal.SIGTERM).name
            msg = (f"stopped by {name} during the evaluation, {len(e.done)} task(s) kept; "
                   f"re-run the same command to evaluate the rest")
            self.status(state="interrupted", phase="eval", error=msg)
            raise Interrupted(msg, self._stop_signal or signal.SIGTERM) from None

    def _loop(self, start: int, logger) -> dict:
        """Train from ``start`` to the last step; return the newest train/* values."""
        last = {}  # newest train/* values; a resumed run starts from what metrics.jsonl already holds
        for row in self.rd.metrics() if self.main else []:
            last.update({k: v for k, v in row.items() if k.startswith("train/") and v is not None})
        self._last_ckpt_time = time.time()
        with _progress(self.cfg.train.progress and self.console is not None and self.main, self.console) as bar:
            task = bar.add_task(f"run {self.run_id}", total=self.total_steps, completed=start,
                                tps="", ar="", md="") if bar else None
            for step in range(start, self.total_steps):
                maybe_hold("step", self.run_id, step, stopping=lambda: self._stop_signal is not None)
                t0 = time.perf_counter()
                row = self.train_step(step)
                self.timers["train"] += time.perf_counter() - t0
                if _STEP_DELAY:  # fault-injection tests need a run slow enough to kill mid-way
                    time.sleep(_STEP_DELAY)
                maybe_die("step", step + 1)
                last.update({k: v for k, v in row.items() if v is not None})
                tps = (step + 1 - start) * self.budget.step_tokens / max(self.timers["train"], 1e-9)
                if bar:
                    bar.update(task, completed=step + 1, tps=f"{tps:,.0f} tok/s",
                               ar=_fmt("AR", last.get("train/ar_loss")), md=_fmt("MD", last.get("train/md_loss")))
                self._after_step(step + 1, row, tps, logger)
        return last

    def _after_step(self, done: int, row: dict, tps: float, logger) -> None:
        """Log, validate and checkpoint as due after step ``done``; stop here if a signal asked to."""
        t = self.cfg.train
        log_now = done % t.log_every == 0 or done == self.total_steps
        eval_now = done % self.eval_every == 0 or done == self.total_steps
        if (log_now or eval_now) and self.main:
            full = {**self.budget.accounting(done), **row, "tokens_per_s": tps}
            if eval_now:
                self._last_val = self.validate()
                full.update(self._last_val)
            self.rd.append_metrics(full)
            logger.log(full, done)
            self.rd.set_status(step=done)
        stop = self._stop_all
        time_ckpt = t.checkpoint_every == 0 and time.time() - self._last_ckpt_time > 600
        if (t.checkpoint_every and done % t.checkpoint_every == 0) or time_ckpt or stop or done == self.total_steps:
            self.checkpoint(done)
            self._last_ckpt_time = time.time()
        if stop:
            name = signal.Signals(self._stop_signal or signal.SIGTERM).name  # another rank may have been signalled
            self.status(state="interrupted", step=done, error=f"stopped by {name} at step {done}; re-run to resume")
            raise Interrupted(f"stopped by {name} at step {done} after saving a checkpoint; "
                              f"re-run the same command to resume", self._stop_signal or signal.SIGTERM)


def build_summary(tr: Trainer, start: int, last: dict, final_val: dict) -> dict:
    """summary.json of a finished run: identity, budget accounting, timings, last train/* and val/* values."""
    cfg, bud = tr.cfg, tr.budget
    train_time = tr.timers["train"]
    prev_time = float(tr.rd.status().get("train_time_s", 0.0)) if start else 0.0
    total, non_emb = tr.model.num_params(), tr.model.num_params(non_embedding=True)
    return {
        "run_id": tr.run_id,
        "version": __version__,
        "model": cfg.model.name,
        "alpha": cfg.objective.alpha,
        "alpha_schedule": cfg.objective.alpha_schedule,
        "alpha_mean": bud.alpha_mean(),
        "ar_share": bud.ar_share,  # the AR share of the gradient weight: α with objective.ar_loss_scale applied
        "repetitions": int(cfg.data.repetitions),
        "seed": cfg.seed,
        **bud.accounting(bud.total_steps),
        "unique_tokens": bud.unique_tokens,
        "total_steps": bud.total_steps,
        "params": total,
        "params_non_embedding": non_emb,
        "flops": bud.flops(),
        "train_time_s": prev_time + train_time,
        "wall_time_s": time.time() - tr.t_start,
        "validate_time_s": tr.timers["validate"],
        "checkpoint_time_s": tr.timers["checkpoint"],
        "tokens_per_s": (bud.total_steps - start) * bud.step_tokens / max(train_time, 1e-9),
        "precision": "bf16" if tr.bf16 else "fp32",
        "device": tr.device.type,
        **{k: v for k, v in last.items() if k.startswith("train/")},
        **final_val,
    }


def _fmt(name: str, v) -> str:
    return f"{name} {v:.3f}" if v is not None else ""


def _progress(enabled: bool, console):
    if not enabled:
        return contextlib.nullcontext()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[tps]}"),
        TextColumn("{task.fields[ar]}"), TextColumn("{task.fields[md]}"), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=console, transient=False,
    )


def train(cfg: Config, out: str | Path | None = None, console=None, max_attempts: int = 0,
          after: AfterHook | None = None) -> dict:
    """Train (or resume, or skip if done) the run for ``cfg``; return its summary."""
    return Trainer(cfg, out, console, max_attempts, after).run()
