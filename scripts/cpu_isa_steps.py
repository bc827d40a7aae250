"""Per-model forward times and peak memory of a config's models in one dtype on a CPU (issue 16: which
dtype the first run should take on a host without native bf16).

Usage: python scripts/cpu_isa_steps.py --dtype bfloat16|float32|auto [--config CONFIG] [--data-dir ../shared/data] [--json OUT.json]
       python scripts/emulate_avx2.py scripts/cpu_isa_steps.py --dtype ...   # as on an AVX2 CPU

Prints and writes: the CPU capability torch used, each model's single-token step time and its
verification-pass time (k = γ + 1 tokens, as `cos-bench run` calibrates them), the prefill choice
(bf16 or fp32 linear layers) where the CPU gives one, and the process's peak resident memory with
both models loaded.
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

import torch
from rich.console import Console

from cos_bench.config import apply_overrides, load_config
from cos_bench.run import calibrated_engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    cfg = apply_overrides(load_config(args.config), {"dtype": args.dtype, "data_dir": args.data_dir, "device": "cpu"})
    engine, _, calibration = calibrated_engine(cfg, cfg.tasks[0], 2, console)
    result = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_enabled": torch.backends.mkldnn.enabled,
        "dtype": str(engine.models[0].dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "step_ms": {name: round(s * 1e3, 1) for name, s in calibration["step_seconds"].items()},
        "pass_tokens": calibration["pass_tokens"],
        "pass_ms": {name: round(s * 1e3, 1) for name, s in calibration["pass_seconds"].items()},
        "c": round(calibration["c"], 3) if calibration["c"] is not None else None,
        "long_feed_float32": calibration.get("long_feed_float32"),  # the prefill choice, where the CPU gives one
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),  # Linux: KiB
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
