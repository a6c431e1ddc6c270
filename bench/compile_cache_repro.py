"""Self-contained check: torch.compile's CPU cache reused across vector ISAs (torch alone, for a report upstream).

    python bench/compile_cache_repro.py

On a CPU with AVX-512, one small function (a per-row attention mask built in the graph, then
scaled_dot_product_attention) is compiled three times, each in a fresh process, against an eager run:

1. with ``ATEN_CPU_CAPABILITY=avx2`` into a fresh ``TORCHINDUCTOR_CACHE_DIR``;
2. without it, into the same folder: torch reuses the code made for AVX2 (its cache key leaves the ISA
   out) but builds it for AVX-512, so loops that step 8 floats store 16: wrong numbers or a heap-corruption
   abort;
3. without it, into a fresh folder: right.

Seen with torch 2.13.0+cpu on a 2-core AMD EPYC (Zen 4): step 2 aborts ("malloc(): unaligned tcache chunk
detected") or returns wrong numbers (up to 1.7); 1 and 3 match eager. dualobj gives the cache a folder per
CPU capability (``dualobj.runtime.isolate_compile_cache``). Exits 1 if step 1 or 3 goes wrong, or step 2
does (the bug is there).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

CHILD = r"""
import json, torch, torch.nn.functional as F
from torch._inductor.cpu_vec_isa import pick_vec_isa
B, H, T, D = 4, 2, 32, 16
torch.manual_seed(0)
q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
causal = torch.tensor([True, False, True, False])

def attend(q, k, v, causal):
    pos = torch.arange(T)
    m = (pos[None, :] <= pos[:, None])[None] | ~causal[:, None, None]
    add = torch.zeros(m.shape, dtype=q.dtype).masked_fill(~m, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=add[:, None])

compiled = torch.compile(attend)
diffs = [float((compiled(q, k, v, causal) - attend(q, k, v, causal)).abs().max()) for _ in range(4)]
print(json.dumps({"diff": max(diffs), "nan": any(d != d for d in diffs), "isa": str(pick_vec_isa())}))
"""


def run(cache: str, avx2: bool) -> str:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TORCH_LOGS": "output_code"}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if avx2:
        env["ATEN_CPU_CAPABILITY"] = "avx2"
    p = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env)
    steps = sorted({int(s) for s in re.findall(r"x\d\+=static_cast<int64_t>\((\d+)L\)", p.stderr)})
    where = f"loop steps {steps}" if steps else "code from the cache"
    if p.returncode != 0:
        last = [ln for ln in p.stderr.strip().splitlines() if "output_code" not in ln][-1:] or ["(no message)"]
        return f"WRONG: process died, exit {p.returncode}: {last[0].strip()[:70]} ({where})"
    r = json.loads(p.stdout.strip().splitlines()[-1])
    bad = r["nan"] or r["diff"] > 1e-4
    return f"{'WRONG' if bad else 'ok'}: max |diff| {r['diff']:.3g}, inductor ISA {r['isa']} ({where})"


def main() -> int:
    import torch

    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    if "avx512f" not in flags:
        print("this CPU has no AVX-512: ATEN_CPU_CAPABILITY=avx2 changes nothing here, nothing to show")
        return 0
    with tempfile.TemporaryDirectory() as shared, tempfile.TemporaryDirectory() as fresh:
        results = [("1. ATEN_CPU_CAPABILITY=avx2, fresh cache", run(shared, avx2=True)),
                   ("2. native, the same cache", run(shared, avx2=False)),
                   ("3. native, a fresh cache", run(fresh, avx2=False))]
    for name, verdict in results:
        print(f"{name:42s} {verdict}")
    wrong = [v.startswith("WRONG") for _, v in results]
    return 1 if any(wrong) else 0


if __name__ == "__main__":
    sys.exit(main())
