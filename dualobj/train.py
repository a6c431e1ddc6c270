"""Train one dual-objective model into a run directory; resume it exactly after any crash.

Everything a step does is a pure function of (config, step): the windows come from the repeated
stream by global sequence index, the AR/MD split from error diffusion, the masks from a generator
seeded by (seed, step), the learning rate from the step. A checkpoint therefore needs only the
model, the optimizer and the step, and a resumed run matches an uninterrupted one bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch

from dualobj import __version__
from dualobj.config import Config, run_id, to_yaml
from dualobj.data.repetition import RepeatedStream, val_windows
from dualobj.data.tokens import prepare_corpus
from dualobj.distributed import Dist
from dualobj.errors import ConfigError, DualObjError, RunDirError
from dualobj.faults import maybe_die
from dualobj.logger import make_logger
from dualobj.model import Transformer, flops_per_token
from dualobj.objective import Draws, alpha_prefix, ar_nll, ar_rows_from_prefix, ce_and_lse, dual_loss, md_elbo
from dualobj.optim import build_optimizer, set_lr
from dualobj.rundir import RunDir, sha256_file, write_json

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


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # CPUs with AVX512-BF16 / AMX run bf16 matmuls several times faster than fp32
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 1)


class Trainer:
    """Holds everything one run needs; ``run()`` trains to the budget (or resumes) and summarises."""

    def __init__(self, cfg: Config, out: str | Path | None = None, console=None, max_attempts: int = 0):
        self.cfg = cfg
        self.max_attempts = max_attempts  # 0 = unlimited; a sweep sets its retry limit
        self.run_id = run_id(cfg)
        self.rd = RunDir(out or cfg.out or f"runs/{self.run_id}")
        self.console = console
        self._stop_signal: int | None = None
        self.dist = Dist()
        self.main = self.dist.is_main  # rank 0 alone writes the run directory
        self.timers = {"validate": 0.0, "checkpoint": 0.0}  # seconds spent outside training steps

    def say(self, msg: str) -> None:
        if self.main:
            (self.console.print if self.console else print)(msg)

    def status(self, **fields) -> None:
        if self.main:
            self.rd.set_status(**fields)

    # ------------------------------------------------------------------ setup
    def _check_identity(self) -> None:
        """Refuse to mix two different runs in one directory."""
        if not self.rd.config_path.exists():
            return
        from omegaconf import OmegaConf

        try:
            saved = OmegaConf.to_container(OmegaConf.load(self.rd.config_path))
        except Exception as e:
            raise RunDirError(f"{self.rd.config_path} is damaged ({e.__class__.__name__}); delete the run directory or choose another out=") from e
        other = saved.get("run_id") if isinstance(saved, dict) else None
        if other is not None and str(other) != self.run_id:  # an all-digit id reads back as a number
            raise RunDirError(
                f"{self.rd.path} holds run {other}, but this config is run {self.run_id}; "
                f"choose another out=DIR or delete that directory"
            )

    def setup(self) -> None:
        cfg, m, t = self.cfg, self.cfg.model, self.cfg.train
        world = self.dist.world
        if t.batch_size % world or (t.batch_size // world) % (t.micro_batch_size or t.batch_size // world):
            raise ConfigError(f"train.batch_size={t.batch_size} must split evenly over {world} processes "
                              f"and into micro-batches of train.micro_batch_size={t.micro_batch_size}")
        threads = t.threads or (max(1, (os.cpu_count() or 1) // self.dist.local_world) if self.dist.enabled else 0)
        if threads:
            torch.set_num_threads(threads)
        self.device = self.dist.device() if self.dist.enabled else pick_device()
        self.bf16 = use_bf16(t.precision, self.device)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else None
        self.corpus = prepare_corpus(cfg.data, m.vocab_size)
        self.unique_tokens = int(t.tokens // int(cfg.data.repetitions))
        self.stream = RepeatedStream(self.corpus.train, self.corpus.train_starts, self.unique_tokens, m.seq_len,
                                     cfg.seed, repetitions=cfg.data.repetitions)
        self.val = torch.from_numpy(val_windows(self.corpus.val, m.seq_len, cfg.data.val_sequences))
        self.special = torch.tensor(self.corpus.special_ids, dtype=torch.long)
        torch.manual_seed(cfg.seed)
        self.model = Transformer(m).to(self.device)
        if t.compile:  # a sweep worker trains many runs in one process: start each with a fresh
            torch._dynamo.reset()  # recompile budget, or later runs silently fall back to eager
        self.forward_eval = torch.compile(self.model) if t.compile else self.model
        self.forward = self.forward_eval
        # The loss tail (fp32 log-softmax over the vocabulary, CE and z-loss) compiles to a third of its
        # eager cost, which is a sixth of a `tiny` bf16 step on a CPU.
        self.token_losses = torch.compile(ce_and_lse, dynamic=False) if t.compile else None
        if self.dist.enabled:  # DDP averages gradients over ranks; each rank's loss is scaled to a sum
            from torch.nn.parallel import DistributedDataParallel as DDP

            ddp = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                      broadcast_buffers=False, gradient_as_bucket_view=True)
            self.ddp = ddp
            self.forward = torch.compile(ddp) if t.compile else ddp
        self.opt = build_optimizer(self.model, t)
        self.total_steps = t.tokens // (t.batch_size * m.seq_len)
        self.eval_every = t.eval_every or max(1, math.ceil(self.total_steps / 8))
        step_tokens = t.batch_size * m.seq_len
        # Σ α over the steps so far: the AR/MD split of every step and the AR-epochs, for any α schedule.
        self.alpha_sum = alpha_prefix(cfg.objective, self.total_steps, lambda s: s * step_tokens / self.unique_tokens)
        self.n_params = self.model.num_params()
        self.n_params_ne = self.model.num_params(non_embedding=True)
        self.flops_tok = flops_per_token(m, self.n_params_ne)

    # ------------------------------------------------------------------ validation
    def validate(self, seed: int = 0) -> dict:
        t0 = time.perf_counter()
        try:
            return self._validate(seed)
        finally:
            self.timers["validate"] += time.perf_counter() - t0

    def _validate(self, seed: int) -> dict:
        self.model.eval()
        c = self.corpus
        nll, n = 0.0, 0
        for chunk in self.val.split(self.cfg.train.micro_batch_size or self.cfg.train.batch_size):
            s, k = ar_nll(self.forward_eval, chunk, c.bos_id, self.autocast)
            nll, n = nll + s, n + k
        elbo, se = md_elbo(self.forward_eval, self.val, bos_id=c.bos_id, mask_id=c.mask_id, special_ids=self.special,
                           samples=self.cfg.train.val_md_samples, seed=seed, autocast=self.autocast,
                           min_mask_frac=self.cfg.objective.min_mask_frac)
        self.model.train()
        ar = nll / n
        bpt = c.bytes_per_token_val
        return {
            "val/ar_nll": ar, "val/ar_ppl": math.exp(min(ar, 50)), "val/ar_bpb": ar / math.log(2) / bpt,
            "val/md_elbo": elbo, "val/md_elbo_se": se, "val/md_bpb": elbo / math.log(2) / bpt,
        }

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> dict:
        """One optimizer step over the global batch; this rank computes its contiguous share of rows."""
        cfg, t = self.cfg, self.cfg.train
        b, world, rank = t.batch_size, self.dist.world, self.dist.rank
        local = b // world
        mb = t.micro_batch_size or local
        n_ar = ar_rows_from_prefix(self.alpha_sum, step, b)  # the global batch's first n_ar rows are AR
        lo = rank * local
        windows = torch.from_numpy(self.stream.get(np.arange(step * b + lo, step * b + lo + local)))
        draws = Draws.sample(b, cfg.model.seq_len, step_generator(cfg.seed, step))[lo:lo + local]
        sums = [0.0, 0.0, 0.0, 0.0]  # loss, AR CE, MD loss, z-loss
        for i in range(0, local, mb):
            n_ar_part = int(min(max(n_ar - lo - i, 0), mb))
            last = i + mb >= local
            sync = contextlib.nullcontext() if (last or not self.dist.enabled) else self.ddp.no_sync()
            with sync:
                out = dual_loss(
                    self.forward, windows[i:i + mb], n_ar_part, bos_id=self.corpus.bos_id,
                    mask_id=self.corpus.mask_id, special_ids=self.special, draws=draws[i:i + mb],
                    ar_loss_scale=cfg.objective.ar_loss_scale, z_loss=cfg.objective.z_loss,
                    min_mask_frac=cfg.objective.min_mask_frac, denom_rows=b, autocast=self.autocast,
                    token_losses=self.token_losses,
                )
                (out.loss * world).backward()  # DDP averages over ranks: undo it to get the global sum
            for j, v in enumerate((out.loss.detach(), out.ar_ce_sum, out.md_loss_sum, out.z_loss_sum)):
                sums[j] += float(v)
        stop = 1.0 if self._stop_signal is not None else 0.0
        total_loss, ar_sum, md_sum, z_sum, stops = self.dist.sum([*sums, stop], self.device)
        self._stop_all = stops > 0  # every rank stops at the same step
        if not math.isfinite(total_loss):
            raise TrainingFailed(f"loss became {total_loss} at step {step}; lower train.lr or check the data")
        gnorm = (torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip or float("inf")))
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
            "train/alpha": self.alpha_sum[step + 1] - self.alpha_sum[step],
            "train/grad_norm": float(gnorm),
            "train/lr": lr,
        }

    # ------------------------------------------------------------------ bookkeeping
    def accounting(self, step: int) -> dict:
        cfg = self.cfg
        seen = step * cfg.train.batch_size * cfg.model.seq_len
        epochs = seen / self.unique_tokens
        return {
            "step": step,
            "tokens_seen": seen,
            "epochs": epochs,
            "ar_epochs": self.alpha_sum[step] * cfg.train.batch_size * cfg.model.seq_len / self.unique_tokens,
        }

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
                if not self.dist.agree(ok, torch.device("cpu") if not torch.cuda.is_available() else self.dist.device()):
                    raise err or RunDirError(f"rank 0 could not take {self.rd.path}; see its message")
                return self._run_locked()
        finally:
            self.dist.stop()

    def _run_locked(self) -> dict:
        cfg, rd = self.cfg, self.rd
        self._check_identity()
        status = rd.status()
        if status.get("state") == "failed" and self.max_attempts and status.get("attempts", 0) >= self.max_attempts:
            raise GaveUp(f"run {self.run_id} failed {status['attempts']} times (last: {status.get('error')}); "
                         f"not retried. Fix the cause, then delete {rd.status_path} to try again")
        if status.get("state") == "done":
            problem = rd.summary_problem(status)
            if problem is None:
                self.say(f"run {self.run_id} is already done: {rd.path}")
                from dualobj.rundir import read_json

                return read_json(rd.summary_path)
            self.say(f"run {self.run_id} was done but its {problem}; recomputing it from the last good checkpoint")
        self.setup()
        if self.main:
            from dualobj.rundir import atomic_write

            atomic_write(rd.config_path, f"# dualobj {__version__}\nrun_id: '{self.run_id}'\n" + to_yaml(cfg))

        state = rd.load_latest(self.model, warn=self.say)
        start = 0
        if state is not None:
            start = int(state["step"])
            self.opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            self.say(f"resuming run {self.run_id} from step {start}/{self.total_steps}")
        if self.main:
            rd.truncate_metrics(start)
        attempts = int(status.get("attempts", 0)) + 1
        self.status(state="running", step=start, total_steps=self.total_steps, attempts=attempts,
                    run_id=self.run_id, error=None, world_size=self.dist.world)
        logger = make_logger(cfg, self.run_id, rd.path) if self.main else _NoLogger()
        old = {s: signal.signal(s, self._on_signal) for s in _STOP_SIGNALS}
        try:
            summary = self._loop(start, logger)
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
        return summary

    def _loop(self, start: int, logger) -> dict:
        cfg, rd, t = self.cfg, self.rd, self.cfg.train
        self._t_start = time.time()
        tokens_per_step = t.batch_size * cfg.model.seq_len
        ckpt_every = t.checkpoint_every
        last_ckpt_time = time.time()
        train_time = 0.0
        last = {}  # newest train/* values; a resumed run starts from what metrics.jsonl already holds
        for row in rd.metrics() if self.main else []:
            last.update({k: v for k, v in row.items() if k.startswith("train/") and v is not None})
        with _progress(t.progress and self.console is not None and self.main, self.console) as bar:
            task = bar.add_task(f"run {self.run_id}", total=self.total_steps, completed=start,
                                tps="", ar="", md="") if bar else None
            for step in range(start, self.total_steps):
                t0 = time.perf_counter()
                row = self.train_step(step)
                train_time += time.perf_counter() - t0
                if _STEP_DELAY:  # fault-injection tests need a run slow enough to kill mid-way
                    time.sleep(_STEP_DELAY)
                maybe_die("step", step + 1)
                done = step + 1
                last.update({k: v for k, v in row.items() if v is not None})
                tps = (done - start) * tokens_per_step / max(train_time, 1e-9)
                if bar:
                    bar.update(task, completed=done, tps=f"{tps:,.0f} tok/s",
                               ar=_fmt("AR", last.get("train/ar_loss")), md=_fmt("MD", last.get("train/md_loss")))
                log_now = done % t.log_every == 0 or done == self.total_steps
                eval_now = done % self.eval_every == 0 or done == self.total_steps
                if (log_now or eval_now) and self.main:
                    full = {**self.accounting(done), **row, "tokens_per_s": tps}
                    if eval_now:
                        self._last_val = self.validate()
                        full.update(self._last_val)
                    rd.append_metrics(full)
                    logger.log(full, done)
                    rd.set_status(step=done)
                stop = self._stop_all
                time_ckpt = ckpt_every == 0 and time.time() - last_ckpt_time > 600
                if (ckpt_every and done % ckpt_every == 0) or time_ckpt or stop or done == self.total_steps:
                    self.checkpoint(done)
                    last_ckpt_time = time.time()
                if stop:
                    signum = self._stop_signal or signal.SIGTERM  # another rank may have been signalled
                    name = signal.Signals(signum).name
                    self.status(state="interrupted", step=done, error=f"stopped by {name} at step {done}; re-run to resume")
                    raise Interrupted(f"stopped by {name} at step {done} after saving a checkpoint; "
                                      f"re-run the same command to resume", signum)
        if not self.main:
            return {}
        final = getattr(self, "_last_val", None) or self.validate()
        prev_time = float(rd.status().get("train_time_s", 0.0)) if start else 0.0
        summary = {
            "run_id": self.run_id,
            "version": __version__,
            "model": cfg.model.name,
            "alpha": cfg.objective.alpha,
            "alpha_schedule": cfg.objective.alpha_schedule,
            "alpha_mean": self.alpha_sum[self.total_steps] / self.total_steps,
            "repetitions": int(cfg.data.repetitions),
            "seed": cfg.seed,
            **self.accounting(self.total_steps),
            "unique_tokens": self.unique_tokens,
            "total_steps": self.total_steps,
            "params": self.n_params,
            "params_non_embedding": self.n_params_ne,
            "flops": self.flops_tok * self.total_steps * tokens_per_step,
            "train_time_s": prev_time + train_time,
            "wall_time_s": time.time() - self._t_start,
            "validate_time_s": self.timers["validate"],
            "checkpoint_time_s": self.timers["checkpoint"],
            "tokens_per_s": (self.total_steps - start) * tokens_per_step / max(train_time, 1e-9),
            "precision": "bf16" if self.bf16 else "fp32",
            "device": self.device.type,
            **{k: v for k, v in last.items() if k.startswith("train/")},
            **final,
        }
        write_json(rd.summary_path, summary)
        maybe_die("summary_write")
        if cfg.eval.at_end:  # before "done", so a run killed while evaluating redoes its evaluation
            from dualobj.evaluate.run import Evaluator

            rd.set_status(phase="eval")
            ev = Evaluator(rd.path, cfg.eval, cfg, model=self.model, corpus=self.corpus, step=self.total_steps)
            summary.update(ev.run(skip_missing=True, say=self.say)["headline"])
        write_json(rd.summary_path, summary)  # with the evaluation's headline scores
        rd.set_status(state="done", phase=None, step=self.total_steps, train_time_s=summary["train_time_s"],
                      summary_sha256=sha256_file(rd.summary_path))
        logger.summary(summary)
        return summary


def _fmt(name: str, v) -> str:
    return f"{name} {v:.3f}" if v is not None else ""


class _NoLogger:
    def log(self, row, step):
        pass

    def summary(self, summary):
        pass

    def finish(self):
        pass


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def _progress(enabled: bool, console):
    if not enabled:
        return _NoBar()
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


def train(cfg: Config, out: str | Path | None = None, console=None, max_attempts: int = 0) -> dict:
    """Train (or resume, or skip if done) the run for ``cfg``; return its summary."""
    return Trainer(cfg, out, console, max_attempts).run()


