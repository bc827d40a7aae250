"""Fair clocks: device-synchronised monotonic timing and the measured cost ratio c.

c is measured, never assumed: each model's single-step forward time is timed
on the run's own prompts (prefill, then one-token steps), and
c = step time of the proposer / step time of the verifier (DESIGN.md §4).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import torch

from cos_bench.core.runner import ModelRunner

T = TypeVar("T")

C_HOW = "c = median single-token forward time of the proposer / that of the other model, timed on this run's prompts"


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """Run fn and return (its result, wall seconds), synchronising the device before each clock read."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def step_seconds(runner: ModelRunner, prompts: Sequence[torch.Tensor], device: torch.device, steps: int = 6) -> float:
    """Median time of one single-token forward call, after a prefill of each prompt."""
    samples = []
    for prompt in prompts:
        runner.reset()
        logits = runner.feed(prompt, keep=1)
        for _ in range(steps):
            token = logits[-1].argmax().reshape(1)
            logits, seconds = timed(lambda: runner.feed(token, keep=1), device)
            samples.append(seconds)
    runner.reset()
    return statistics.median(samples)


def cost_ratio(step: Mapping[str, float], proposer: str) -> float | None:
    """c for a two-model setting; None (n/a) with more models, where the paper defines no c."""
    if len(step) != 2:
        return None
    (other,) = [name for name in step if name != proposer]
    return step[proposer] / step[other]
