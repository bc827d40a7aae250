"""Fair clocks: device-synchronised monotonic timing and the measured cost ratio c.

c is measured, never assumed: each model's single-step forward time is timed
on the run's own prompts (prefill, then one-token steps), and
c = step time of the proposer / step time of the verifier (docs/design.md §4).
The k-token pass a verifier makes is timed the same way, and its cost in
single steps, ρ = pass time / step time, is measured too: the theorems assume
ρ = 1, which a compute-bound CPU breaks (docs/design.md §4).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import torch

from cos_bench.core.runner import ModelRunner
from cos_bench.errors import CosBenchError
from cos_bench.models import single_token_onednn

T = TypeVar("T")

C_HOW = "c = median single-token forward time of the proposer / that of the other model, timed on this run's prompts"
PASS_HOW = (
    "pass cost = median time of one forward pass feeding k tokens (k = γ of the model it verifies + 1; with n > 2 "
    "models, the default proposer's γ + 1) / median single-token forward time of the same model, on this run's prompts"
)

ONEDNN_HOW = (
    "per model, median single-token forward time with oneDNN on and with it off (6 steps after a prefill of each "
    "calibration prompt); the faster is kept for the run's single-token forwards, longer feeds keep torch's default"
)


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
    return pass_seconds(runner, prompts, device, tokens=1, repeats=steps)


def pass_seconds(runner: ModelRunner, prompts: Sequence[torch.Tensor], device: torch.device, tokens: int, repeats: int = 6) -> float:
    """Median time of one forward pass feeding `tokens` tokens (logits kept for each, as a verifier does),
    after a prefill of each prompt; the cache is cropped back after every timed pass, so each sees the
    prompt as its context. The runner is reset at the end."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise CosBenchError(f"timing: tokens must be an integer ≥ 1 (got {tokens!r}); pass the verification pass length γ + 1")
    samples = []
    for prompt in prompts:
        runner.reset()
        logits = runner.feed(prompt, keep=1)
        context = runner.cache_len
        block = logits[-1].argmax().repeat(tokens)  # [tokens]; the ids do not change the cost
        for _ in range(repeats):
            _, seconds = timed(functools.partial(runner.feed, block, keep=tokens), device)
            samples.append(seconds)
            runner.crop(context)
    runner.reset()
    return statistics.median(samples)


def pass_tokens(gammas: Mapping[str, int], proposer: str) -> dict[str, int]:
    """k per model: the length of the verification pass it makes, γ of the model it verifies + 1.

    With two models each verifies the other's run; with more, the default proposer's drafts.
    """
    if len(gammas) == 2:
        return {name: gammas[other] + 1 for name, other in zip(gammas, reversed(list(gammas)))}
    return {name: gammas[proposer] + 1 for name in gammas}


def cost_ratio(step: Mapping[str, float], proposer: str) -> float | None:
    """c for a two-model setting; None (n/a) with more models, where the paper defines no c."""
    if len(step) != 2:
        return None
    (other,) = [name for name in step if name != proposer]
    return step[proposer] / step[other]


def choose_single_token_onednn(
    runners: Sequence[ModelRunner], models: Sequence[torch.nn.Module], prompts: Sequence[torch.Tensor], device: torch.device
) -> dict[str, dict]:
    """On the CPU, per model: time a single-token forward with oneDNN on and off and keep the faster
    (`models.SingleTokenOneDNN` says why). A vanilla step slower than the hardware allows would
    inflate every speedup. Returns {model: {onednn, on_ms, off_ms, kept_ms}}; {} where there is no choice."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available() or not torch.backends.mkldnn.enabled:
        return {}
    chosen = {}
    for runner, model in zip(runners, models, strict=True):
        switch = single_token_onednn(model)
        seconds = {}
        for enabled in (True, False):
            switch.set(enabled)
            seconds[enabled] = step_seconds(runner, prompts, device)
        keep = seconds[True] <= seconds[False]  # a tie keeps torch's own default
        switch.set(keep)
        chosen[runner.name] = {"onednn": keep, "on_ms": seconds[True] * 1e3, "off_ms": seconds[False] * 1e3, "kept_ms": seconds[keep] * 1e3}
    return chosen
