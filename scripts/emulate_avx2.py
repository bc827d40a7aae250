"""Run a Python script, or `cos-bench`, as on an x86 CPU with AVX2 and no native bf16 (issue 16's first host).

Usage: python scripts/emulate_avx2.py SCRIPT.py [ARGS...]
       python scripts/emulate_avx2.py cos-bench run --dtype bfloat16 [ARGS...]

This host has AVX-512 and AVX512-BF16. Before torch loads, the script caps ATen's kernels at their
avx2 build (ATEN_CPU_CAPABILITY=avx2), MKL at AVX2 (MKL_ENABLE_INSTRUCTIONS) and oneDNN at AVX2
(ONEDNN_MAX_CPU_ISA); then it turns oneDNN off, because PyTorch sends bf16 matmuls to oneDNN only on
CPUs with AVX-512 (BW/VL/DQ) or native bf16: on an AVX2 host they take ATen's own bf16 kernels, as
here. It is an emulation: memory, cores and clock stay this host's, so it says how the dtypes rank
on an AVX2 host and roughly by how much, not that host's times. cos-bench's `auto` dtype reads
/proc/cpuinfo and still sees native bf16: pass --dtype.
"""

from __future__ import annotations

import os
import runpy
import sys

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    os.environ.update(AVX2_ENV)  # read once, when torch, MKL and oneDNN first dispatch: before any import of torch
    import torch

    torch.backends.mkldnn.enabled = False
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX2":
        raise SystemExit(f"emulate_avx2: torch dispatches {capability} kernels, not AVX2; run this script before anything imports torch")
    print(f"emulating an AVX2 CPU without native bf16: torch {capability} kernels, oneDNN off", file=sys.stderr)
    sys.argv = list(argv)
    if argv[0] == "cos-bench":
        from cos_bench.cli import app

        app(argv[1:])
        return 0
    runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
