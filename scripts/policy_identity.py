"""Greedy identity of `sd` and `cos` under every draft policy, against vanilla, on real models.

Usage: python scripts/policy_identity.py OUT_DIR [--config CONFIG] [--limit 6] [--max-new-tokens 48]
       [--dtype float32] [--data-dir ../shared/data] [--policies fixed,marginal]

Loads the config's models once, decodes each prompt greedily with vanilla once per combination,
then with `sd` and `cos` under each policy (fixed, confidence, heuristic, auto — `auto` given this
run's calibrated step and pass costs, as `cos-bench run` does) and compares the token ids.
Float32 by default: greedy identity is exact in exact arithmetic, and float32 keeps ties that bf16
rounds apart rare (results/cpu-fp32-identity). Writes OUT_DIR/identity.json (every decode's ids,
mean draft length, first differing position) and prints a Markdown table; nothing is assumed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console

from cos_bench.config import apply_overrides, load_config
from cos_bench.core.drafting import DRAFT_POLICIES
from cos_bench.engine import build_prompts, build_runners, decode_one, load_engine, stop_for, use_chat
from cos_bench.run import calibrate, job_settings
from cos_bench.tasks import get_task
from cos_bench.tasks.data import resolve_data_source


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two id lists differ (a length difference counts); None when equal."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--limit", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--policies", default=",".join(DRAFT_POLICIES), help="comma-separated, default every policy")
    args = parser.parse_args(argv)
    policies = [name.strip() for name in args.policies.split(",") if name.strip()]
    unknown = [name for name in policies if name not in DRAFT_POLICIES]
    if unknown or not policies:
        parser.error(f"--policies: {', '.join(unknown) or 'none given'} not among {', '.join(DRAFT_POLICIES)}; pick from those")
    console = Console(stderr=True)
    overrides = {"dtype": args.dtype, "limit": args.limit, "max_new_tokens": args.max_new_tokens, "data_dir": args.data_dir}
    cfg = apply_overrides(load_config(args.config), overrides)
    engine = load_engine(cfg, console)
    chat = use_chat(cfg, engine.tokenizer)
    source = resolve_data_source(cfg.data_dir)
    prompts = [
        (task, p)
        for task in map(get_task, cfg.tasks)
        for p in build_prompts(task, task.load(source, cfg.limit, cfg.offset, cfg.seed, cfg.subjects), engine, chat)
    ]
    build_runners(cfg, engine, [int(p.ids.shape[0]) for _, p in prompts], console, {})
    # Calibrated as a run with an `auto` policy is, so `auto` is charged every run length's measured pass cost.
    calibration = calibrate(apply_overrides(cfg, {"draft": "auto"}), engine, [p.ids for _, p in prompts][:2], console)
    rows = []
    started = time.perf_counter()
    for task, prompt in prompts:
        stop = stop_for(task, engine, chat, cfg.budget(task.name))
        for combination in cfg.combinations:
            vanilla = list(decode_one(engine, "vanilla", prompt.ids, job_settings(cfg, combination, calibration), stop, seed=0).token_ids)
            for policy in policies:
                settings = job_settings(apply_overrides(cfg, {"draft": policy}), combination, calibration)
                for method in ("sd", "cos"):
                    result = decode_one(engine, method, prompt.ids, settings, stop, seed=0)
                    ids = list(result.token_ids)
                    proposer = result.models[cfg.model_names.index(cfg.proposer)]
                    rows.append(
                        {
                            "task": task.name,
                            "example_id": str(prompt.example.example_id),
                            "setting": combination.label,
                            "policy": policy,
                            "method": method,
                            "identical": ids == vanilla,
                            "first_difference": first_difference(ids, vanilla),
                            "tokens": len(ids),
                            "mean_draft_length_proposer": proposer.mean_draft_length,
                            "token_ids": ids,
                            "vanilla_token_ids": vanilla,
                        }
                    )
                    console.print(
                        f"{task.name} {prompt.example.example_id} {combination.label} {policy:10} {method:3}: identical={ids == vanilla}"
                    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "command": "python " + shlex.join(sys.argv),
        "dtype": args.dtype,
        "models": [m.source for m in cfg.models],
        "calibration": {k: calibration[k] for k in ("step_seconds", "pass_tokens", "pass_cost", "pass_curve")},
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    (args.out_dir / "identity.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(markdown(rows, summary["command"]))
    return 0


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        f"`{command}`",
        "",
        "| setting | policy | method | identical to vanilla | mean draft length (proposer) |",
        "|---|---|---|---|---|",
    ]
    keys = dict.fromkeys((r["setting"], r["policy"], r["method"]) for r in rows)
    for setting, policy, method in keys:
        group = [r for r in rows if (r["setting"], r["policy"], r["method"]) == (setting, policy, method)]
        same = sum(r["identical"] for r in group)
        lengths = [r["mean_draft_length_proposer"] for r in group if r["mean_draft_length_proposer"] is not None]
        mean = f"{sum(lengths) / len(lengths):.2f}" if lengths else "n/a"
        lines.append(f"| {setting} | {policy} | {method} | {same} / {len(group)} | {mean} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
