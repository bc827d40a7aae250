"""Fair clocks: device-synchronised monotonic timing and the measured cost ratio c.

c is measured, never assumed: each model's single-step forward time is timed
on the run's own prompts (prefill, then one-token steps), and
c = step time of the proposer / step time of the verifier (docs/design.md §4).
The k-token pass a verifier makes is timed the same way, and its cost in
single steps, ρ = pass time / step time, is measured too: the theorems assume
ρ = 1, which a compute-bound CPU breaks (docs/design.md §4).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from cos_bench.core.runner import ModelRunner
from cos_bench.errors import CosBenchError
from cos_bench.models import (
    LONG_FEED_TOKENS,
    LongFeedFloat32,
    SingleTokenOneDNN,
    bf16_products_lack_a_fast_kernel,
    long_feed_float32,
    single_token_onednn,
)

T = TypeVar("T")

C_HOW = "c = median single-token forward time of the proposer / that of the other model, timed on this run's prompts"
PASS_HOW = (
    "pass cost = median time of one forward pass feeding k tokens (k = γ of the model it verifies + 1; with n > 2 "
    "models, the default proposer's γ + 1) / median single-token forward time of the same model, on this run's prompts"
)
PASS_CURVE_HOW = (
    "per model, pass cost at every length it may verify under an `auto` policy (2 to the longest run another model may "
    "draft + 1): median time of a forward feeding k tokens / its median single-token time, on this run's prompts; "
    "`auto` charges each run length its own, the points made non-decreasing (a dip is timing noise)"
)

ONEDNN_HOW = (
    "per model, median single-token forward time with oneDNN on and with it off (6 steps of each after a prefill of "
    "each calibration prompt); the faster is kept for the run's single-token forwards, longer feeds keep torch's default"
)

LONG_FEED_PROBE_TOKENS = 128  # a prefill this long decides: fp32's lead grows with the rows, its weight upcast does not
LONG_FEED_HOW = (
    f"per bf16 model on a CPU without oneDNN's bf16 kernels, the time of one prefill of the first calibration prompt's "
    f"first {LONG_FEED_PROBE_TOKENS} tokens with the linear layers in bf16 and in fp32 (weights upcast per layer); the faster "
    f"is kept for every feed of ≥ {LONG_FEED_TOKENS} tokens (prefills), shorter feeds stay bf16"
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


@dataclass(frozen=True)
class Feed:
    """A forward to time: `tokens` fed at once (logits kept for each, as a verifier does), after
    `prepare()` (e.g. a library switch set for it)."""

    tokens: int
    prepare: Callable[[], None] = lambda: None


def feed_seconds(
    runner: ModelRunner, prompts: Sequence[torch.Tensor], device: torch.device, feeds: Mapping[str, Feed], repeats: int = 6
) -> dict[str, float]:
    """Median time of each named feed, `repeats` times per prompt after one prefill of each prompt
    (untimed, shared by all feeds: a prefill costs far more than the feeds timed after it). The
    cache is cropped back after every timed feed, so each sees the prompt as its context. The
    runner is reset at the end."""
    for feed in feeds.values():
        if isinstance(feed.tokens, bool) or not isinstance(feed.tokens, int) or feed.tokens < 1:
            raise CosBenchError(f"timing: tokens must be an integer ≥ 1 (got {feed.tokens!r}); pass the verification pass length γ + 1")
    samples: dict[str, list[float]] = {name: [] for name in feeds}
    for prompt in prompts:
        runner.reset()
        logits = runner.feed(prompt, keep=1)
        context = runner.cache_len
        token = logits[-1].argmax()  # the ids do not change the cost
        for name, feed in feeds.items():
            feed.prepare()
            block = token.repeat(feed.tokens)
            for _ in range(repeats):
                _, seconds = timed(functools.partial(runner.feed, block, keep=feed.tokens), device)
                samples[name].append(seconds)
                runner.crop(context)
    runner.reset()
    return {name: statistics.median(times) for name, times in samples.items()}


def step_seconds(runner: ModelRunner, prompts: Sequence[torch.Tensor], device: torch.device, steps: int = 6) -> float:
    """Median time of one single-token forward call, after a prefill of each prompt."""
    return feed_seconds(runner, prompts, device, {"step": Feed(1)}, steps)["step"]


@dataclass(frozen=True)
class ForwardTimes:
    """One model's calibrated forwards: its single step, its verification pass, a pass of each length
    asked for ({tokens: seconds}), and, where the CPU gives a choice, the single-token library kept
    ({onednn, on_ms, off_ms, kept_ms})."""

    step: float
    pass_: float
    onednn: dict | None
    curve: dict[int, float] = dataclasses.field(default_factory=dict)


def time_forwards(
    runner: ModelRunner,
    model: torch.nn.Module,
    prompts: Sequence[torch.Tensor],
    device: torch.device,
    tokens: int,
    choose_onednn: bool,
    curve: Sequence[int] = (),
) -> ForwardTimes:
    """Time a model's single step, its `tokens`-token pass and a pass of each length in `curve`, after
    one prefill per prompt. With `choose_onednn` on a CPU with oneDNN, the step is timed with oneDNN on
    and off and the faster is kept (`models.SingleTokenOneDNN` says why): a vanilla step slower than the
    hardware allows would inflate every speedup."""
    switch = single_token_onednn(model)
    choose = choose_onednn and device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    feeds = {f"pass-{k}": Feed(k) for k in dict.fromkeys((tokens, *curve))}  # the verification pass first, each length once
    if choose:
        feeds |= {"on": Feed(1, functools.partial(switch.set, True)), "off": Feed(1, functools.partial(switch.set, False))}
    else:
        feeds["step"] = Feed(1)
    seconds = feed_seconds(runner, prompts, device, feeds)
    lengths = {k: seconds[f"pass-{k}"] for k in curve}
    if not choose:
        return ForwardTimes(seconds["step"], seconds[f"pass-{tokens}"], None, lengths)
    keep = _keep_faster(switch, {True: seconds["on"], False: seconds["off"]}, default=True)
    kept = seconds["on"] if keep else seconds["off"]
    choice = {"onednn": keep, "on_ms": seconds["on"] * 1e3, "off_ms": seconds["off"] * 1e3, "kept_ms": kept * 1e3}
    return ForwardTimes(kept, seconds[f"pass-{tokens}"], choice, lengths)


def _keep_faster(switch: SingleTokenOneDNN | LongFeedFloat32, seconds: Mapping[bool, float], default: bool) -> bool:
    """Set `switch` to the setting that timed faster and return it. A tie keeps `default`, the
    setting torch would use on its own: a choice the timing cannot justify is not made."""
    keep = default if seconds[default] <= seconds[not default] else not default
    switch.set(keep)
    return keep


def choose_long_feed_float32(runner: ModelRunner, model: torch.nn.Module, prompt: torch.Tensor, device: torch.device) -> dict:
    """On a CPU without a fast bf16 matrix product, time a prefill of the prompt's first
    LONG_FEED_PROBE_TOKENS tokens with the model's linear layers in bf16 and in fp32 and keep the
    faster for its long feeds (`models.LongFeedFloat32` says why). Returns {float32, bf16_ms,
    float32_ms, probe_tokens}; {} where there is no choice (a GPU, an fp32 model, oneDNN's bf16
    kernels, a prompt shorter than LONG_FEED_TOKENS)."""
    probe = prompt[:LONG_FEED_PROBE_TOKENS]
    if device.type != "cpu" or probe.shape[0] < LONG_FEED_TOKENS or not bf16_products_lack_a_fast_kernel(model):
        return {}
    switch = long_feed_float32(model)
    runner.reset()
    runner.feed(probe[:8], keep=1)  # untimed: a model's first forward pays one-time costs neither setting should carry
    seconds = {}
    for enabled in (False, True):
        switch.set(enabled)
        runner.reset()
        _, seconds[enabled] = timed(functools.partial(runner.feed, probe, keep=1), device)
    runner.reset()
    keep = _keep_faster(switch, seconds, default=False)
    return {"float32": keep, "bf16_ms": seconds[False] * 1e3, "float32_ms": seconds[True] * 1e3, "probe_tokens": int(probe.shape[0])}


def pass_tokens(gammas: Mapping[str, int], proposer: str) -> dict[str, int]:
    """k per model: the length of the verification pass it makes, γ of the model it verifies + 1.

    With two models each verifies the other's run; with more, the default proposer's drafts.
    """
    if len(gammas) == 2:
        return {name: gammas[other] + 1 for name, other in zip(gammas, reversed(list(gammas)))}
    return {name: gammas[proposer] + 1 for name in gammas}


def curve_tokens(longest: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Per model, every pass length it may make verifying another's run of at most `longest[other]`
    drafts: 2 … (the longest of the others' runs) + 1."""
    return {name: tuple(range(2, max(n for other, n in longest.items() if other != name) + 2)) for name in longest}


def cost_ratio(step: Mapping[str, float], proposer: str) -> float | None:
    """c for a two-model setting; None (n/a) with more models, where the paper defines no c."""
    if len(step) != 2:
        return None
    (other,) = [name for name in step if name != proposer]
    return step[proposer] / step[other]
