"""Why vanilla's decode time per token exceeds the calibrated steps (the report's `overhead` column)
while the loop itself costs little (`loop overhead`): single-token forwards timed four ways.

Usage: python scripts/decode_step_probe.py [--config configs/default.yaml] [--task mmlu] [--prompts 2]
                                           [--steps 60] [--data-dir ../shared/data] [--json OUT.json]

The run's calibration times each model alone, back to back, with its cache cropped back to the
prompt after every step (`timing.feed_seconds`). A vanilla decode instead alternates the models
and grows their caches by a token a step. The probe calibrates as `cos-bench run` does (so the
same oneDNN choice is in force), then times each model's single-token forwards on the task's
prompts in four patterns that separate the two differences:

  alone_cropped        one model, cache cropped back each step (the calibration's pattern)
  alone_growing        one model, cache growing (a decode of that model alone)
  alternating_cropped  the models in turn, caches cropped back
  alternating_growing  the models in turn, caches growing (vanilla's pattern)

and prints each pattern's median and mean ms per model and their ratio to the calibrated step.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console

from cos_bench.config import apply_overrides, load_config
from cos_bench.core.runner import ModelRunner
from cos_bench.run import calibrated_engine
from cos_bench.timing import timed

PATTERNS = ("alone_cropped", "alone_growing", "alternating_cropped", "alternating_growing")


def _step(runner: ModelRunner, token: torch.Tensor) -> tuple[torch.Tensor, float]:
    """One single-token forward: the next greedy token and the forward's seconds (`timing.timed`, as calibration times it)."""
    logits, seconds = timed(functools.partial(runner.feed, token.view(1), keep=1), token.device)
    return logits[-1].argmax(), seconds


def time_pattern(runners: Sequence[ModelRunner], prompt: torch.Tensor, steps: int, pattern: str) -> dict[str, list[float]]:
    """Seconds of each model's `steps` single-token forwards after a prefill of `prompt`, in `pattern`."""
    alternating, growing = pattern.startswith("alternating"), pattern.endswith("growing")
    times: dict[str, list[float]] = {runner.name: [] for runner in runners}
    groups = [list(runners)] if alternating else [[runner] for runner in runners]
    for group in groups:
        tokens = {}
        for runner in group:
            runner.reset()
            tokens[runner.name] = runner.feed(prompt, keep=1)[-1].argmax()
        context = len(prompt)
        token = tokens[group[-1].name]
        for _ in range(steps):
            for runner in group:
                next_token, seconds = _step(runner, token)
                times[runner.name].append(seconds)
                if not growing:
                    runner.crop(context)
            if growing:
                token = next_token  # the last model's greedy token feeds every model next, as in a decode
    for runner in runners:
        runner.reset()
    return times


def summarise(times: dict[str, list[float]], step_seconds: dict[str, float]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "median_ms": round(statistics.median(values) * 1e3, 2),
            "mean_ms": round(statistics.mean(values) * 1e3, 2),
            "mean_over_calibrated": round(statistics.mean(values) / step_seconds[name], 3),
        }
        for name, values in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--task", default="mmlu")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    cfg = apply_overrides(load_config(args.config), {"data_dir": args.data_dir, "device": "cpu", "engine": "eager"})
    # The calibration also sets each model's single-token oneDNN choice, as a run does.
    engine, built, calibration = calibrated_engine(cfg, args.task, args.prompts, console)
    prompts = [p.ids for p in built]
    step_seconds = calibration["step_seconds"]
    result: dict = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "task": args.task,
        "prompt_tokens": [int(p.shape[0]) for p in prompts],
        "steps": args.steps,
        "calibrated_step_ms": {name: round(s * 1e3, 2) for name, s in step_seconds.items()},
        "patterns": {},
    }
    times: dict[str, dict[str, list[float]]] = {pattern: {} for pattern in PATTERNS}
    for prompt in prompts:  # patterns interleaved per prompt, as a run interleaves methods: drift hits all alike
        for pattern in PATTERNS:
            for name, values in time_pattern(engine.runners, prompt, args.steps, pattern).items():
                times[pattern].setdefault(name, []).extend(values)
    for pattern in PATTERNS:
        result["patterns"][pattern] = summarise(times[pattern], step_seconds)
        console.print(pattern, result["patterns"][pattern])
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
