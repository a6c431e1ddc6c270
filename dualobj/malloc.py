"""The allocator every dualobj process runs with, chosen before torch loads (the command line calls
:func:`tune_malloc` first thing; bench scripts do too)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def tune_malloc() -> None:
    """Re-exec once with an allocator that is fast for torch and gives memory back (glibc's default malloc
    makes training 1.4-2.6x slower; glibc kept for speed never frees: a tiny run's evaluation grew to 9 GB).

    mimalloc from the ``cmeel-mimalloc`` wheel, else tcmalloc, else glibc with transparent huge pages for
    its heap and large blocks (settings must be in place before the process starts). DUALOBJ_MALLOC=off
    skips this; DUALOBJ_MALLOC=mimalloc|tcmalloc|glibc asks for one (falling back down that list).
    """
    want = os.environ.get("DUALOBJ_MALLOC", "auto")
    if sys.platform != "linux" or want not in ("auto", "mimalloc", "tcmalloc", "glibc"):
        return  # off, or this is the re-executed process (DUALOBJ_MALLOC names the allocator in use)

    def mimalloc() -> str | None:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            lib = Path(distribution("cmeel-mimalloc").locate_file("cmeel.prefix/lib/libmimalloc.so"))
        except PackageNotFoundError:
            return None
        return str(lib) if lib.exists() else None

    def tcmalloc() -> str | None:
        return next((p for p in ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
                                 "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4") if Path(p).exists()), None)

    env = dict(os.environ)
    order = {"auto": (mimalloc, tcmalloc), "mimalloc": (mimalloc, tcmalloc), "tcmalloc": (tcmalloc, mimalloc)}
    for find in order.get(want, ()):
        if lib := find():
            env["LD_PRELOAD"] = ":".join(filter(None, [env.get("LD_PRELOAD"), lib]))
            env["DUALOBJ_MALLOC"] = f"{find.__name__}-preloaded"
            break
    else:  # THP: far fewer page faults on fresh blocks; glibc's own thresholds still hand memory back
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), "glibc.malloc.hugetlb=1"]))
        env["DUALOBJ_MALLOC"] = "glibc-tuned"
    try:
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    except OSError:
        pass  # keep going with the default allocator
