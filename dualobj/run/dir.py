"""The run directory: every file a run leaves, written atomically (write to a temp file, then rename).

    config.yaml      resolved config (with run_id)
    status.json      state (running|interrupted|failed|done), step, heartbeat, attempts, error
    metrics.jsonl    one JSON line per log / validation step
    summary.json     final metrics and accounting
    checkpoints/step_XXXXXXX/{model.safetensors, state.pt, meta.json}

Checkpoints carry sha256 checksums in meta.json and load only through safe loaders
(safetensors, ``torch.load(weights_only=True)``); a damaged one is skipped for the previous one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from dualobj.errors import RunDirError
from dualobj.faults import maybe_die
from dualobj.run.files import atomic_write, jsonable, read_json, sha256_file, write_json

FORMAT_VERSION = 1


class RunDirLocked(RunDirError):
    """Another live process holds this run directory."""


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # ----------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self):
        """Hold an exclusive lock on the run for the life of this process (released by the OS if it dies).

        A dead run therefore never blocks a resume, and two live processes never train one run.
        """
        self.create()
        f = open(self.path / ".lock", "a+")
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunDirLocked(
                    f"{self.path} is being trained by another live process; wait for it or stop it first"
                ) from None
            yield
        finally:
            f.close()

    def is_locked(self) -> bool:
        """True while some live process holds the run's lock."""
        lock = self.path / ".lock"
        if not lock.exists():
            return False
        with open(lock) as f:  # read-only is enough for flock, and works on a read-only copy
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    # ----------------------------------------------------------------- files
    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def ckpt_root(self) -> Path:
        return self.path / "checkpoints"

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write_probe"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"cannot write to run directory {self.path} ({e.strerror}); "
                              "choose another out=DIR") from e

    def check_identity(self, run_id: str) -> None:
        """Refuse to mix two different runs in one directory (config.yaml names the run it holds)."""
        if not self.config_path.exists():
            return
        try:
            saved = yaml.safe_load(self.config_path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise RunDirError(f"{self.config_path} is damaged ({e.__class__.__name__}); delete the run directory "
                              f"or choose another out=") from e
        other = saved.get("run_id") if isinstance(saved, dict) else None
        if other is not None and str(other) != run_id:  # an all-digit id reads back as a number
            raise RunDirError(f"{self.path} holds run {other}, but this config is run {run_id}; "
                              f"choose another out=DIR or delete that directory")

    # ----------------------------------------------------------------- status
    def status(self) -> dict:
        if not self.status_path.exists():
            return {"state": "pending", "attempts": 0}
        st = read_json(self.status_path)
        if not isinstance(st, dict):
            raise RunDirError(f"{self.status_path} is damaged (not a JSON object); "
                              "delete it to let the run redo that part")
        version = st.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise RunDirError(f"{self.path} was written by an incompatible dualobj version (format {version}, "
                              f"this is {FORMAT_VERSION}); choose another out= or delete it")
        return st

    def set_status(self, **fields) -> dict:
        st = self.status() if self.status_path.exists() else {"attempts": 0}
        st.update(fields)
        st["heartbeat"] = time.time()
        st["host"] = socket.gethostname()
        st["pid"] = os.getpid()
        st["format_version"] = FORMAT_VERSION
        write_json(self.status_path, st)
        return st

    def summary_problem(self, status: dict | None = None) -> str | None:
        """None if summary.json is intact (its checksum, when recorded, matches), else what is wrong."""
        if not self.summary_path.exists():
            return "summary.json is missing"
        digest = (status or {}).get("summary_sha256")
        if digest and sha256_file(self.summary_path) != digest:
            return "summary.json does not match its checksum"
        try:
            obj = json.loads(self.summary_path.read_text())
        except (ValueError, UnicodeDecodeError):
            return "summary.json is not valid JSON"
        return None if isinstance(obj, dict) else "summary.json is not a JSON object"

    # ----------------------------------------------------------------- metrics
    def append_metrics(self, row: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row, default=jsonable) + "\n")
            f.flush()

    def truncate_metrics(self, after_step: int) -> None:
        """Drop lines past ``after_step`` (written after the checkpoint a resume starts from)."""
        if not self.metrics_path.exists():
            return
        keep = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
            if row.get("step", 0) <= after_step:
                keep.append(json.dumps(row))
        atomic_write(self.metrics_path, "".join(k + "\n" for k in keep))

    def metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    # ----------------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int, model: torch.nn.Module, state: dict, keep: int) -> Path:
        """Write model (safetensors) + training state (torch, tensors only) into a temp dir, then rename."""
        self.ckpt_root.mkdir(parents=True, exist_ok=True)
        final = self.ckpt_root / f"step_{step:07d}"
        tmp = Path(tempfile.mkdtemp(dir=self.ckpt_root, prefix=".tmp_"))
        try:
            tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            save_file(tensors, tmp / "model.safetensors")
            torch.save(state, tmp / "state.pt")
            meta = {
                "step": step,
                "format_version": FORMAT_VERSION,
                "sha256": {n: sha256_file(tmp / n) for n in ("model.safetensors", "state.pt")},
            }
            write_json(tmp / "meta.json", meta)
            maybe_die("checkpoint_write", step)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self.checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def checkpoints(self) -> list[Path]:
        if not self.ckpt_root.exists():
            return []
        return sorted(p for p in self.ckpt_root.glob("step_*") if p.is_dir())

    def verify_checkpoint(self, ckpt: Path) -> str | None:
        """None if intact, else why not."""
        try:
            meta = json.loads((ckpt / "meta.json").read_text())
        except (OSError, json.JSONDecodeError):
            return "meta.json missing or unreadable"
        if meta.get("format_version") != FORMAT_VERSION:
            return f"format version {meta.get('format_version')} (this version reads {FORMAT_VERSION})"
        for name, digest in meta.get("sha256", {}).items():
            f = ckpt / name
            if not f.exists() or sha256_file(f) != digest:
                return f"{name} does not match its checksum"
        return None

    def load_latest(self, model: torch.nn.Module, warn=print) -> dict | None:
        """Load the newest intact checkpoint into ``model``; return its training state, or None."""
        for tmp in self.ckpt_root.glob(".tmp_*") if self.ckpt_root.exists() else []:
            shutil.rmtree(tmp, ignore_errors=True)  # a write cut short by a crash (we hold the run's lock)
        for ckpt in reversed(self.checkpoints()):
            problem = self.verify_checkpoint(ckpt)
            if problem:
                warn(f"checkpoint {ckpt.name} is damaged ({problem}); falling back to an earlier one")
                continue
            model.load_state_dict(load_file(ckpt / "model.safetensors"))
            state = torch.load(ckpt / "state.pt", weights_only=True)
            return state
        return None
