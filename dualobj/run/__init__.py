"""The run directory: atomic files, the run's lock, checkpoints, and the one run state everyone reads."""

from dualobj.run.dir import FORMAT_VERSION, RunDir, RunDirLocked
from dualobj.run.files import atomic_write, read_json, sha256_file, write_json
from dualobj.run.state import STATES, RunInfo, read_config, run_info, run_state

__all__ = ["FORMAT_VERSION", "STATES", "RunDir", "RunDirLocked", "RunInfo", "atomic_write", "read_config",
           "read_json", "run_info", "run_state", "sha256_file", "write_json"]
