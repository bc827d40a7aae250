"""Model runners: one model and its own KV cache, advanced and cropped only here.

The decoding loops talk to models through this narrow seam. A runner knows
how many tokens its cache holds; `feed` appends tokens and returns logits,
`crop` rolls the cache back after a rejection. Two runners wrap a Hugging
Face causal LM: `HFRunner` (eager forwards, a DynamicCache that grows) and
`StaticRunner` (a StaticCache allocated once, optionally compiled, with CUDA
graphs on CUDA). Tests also use table-driven runners with the same interface.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from cos_bench.errors import CosBenchError

# A compiled runner pads long feeds (prefills) up to a multiple of this, so a run with many
# prompt lengths records a handful of CUDA graphs instead of one per length.
PREFILL_BUCKET = 64
# Static caches are sized in steps of this, so sweep cells with similar prompts share compiled runners.
CAPACITY_STEP = 256


@dataclass(frozen=True)
class ForwardStats:
    calls: int
    tokens: int
    seconds: float


class ForwardTimer:
    """Time spent in forward calls, without a host-device sync per call.

    On CUDA and MPS, where calls return before the device has run them, each call is
    bracketed by device events that are only read (one sync) when the total is asked
    for; on the CPU the calls are synchronous, so a monotonic clock around them is exact.
    """

    def __init__(self, device: torch.device):
        self._event_type = {"cuda": getattr(torch.cuda, "Event", None), "mps": getattr(torch.mps, "Event", None)}.get(device.type)
        self._seconds = 0.0
        self._events: list[tuple] = []
        self._started = None

    def start(self) -> None:
        if self._event_type is not None:
            self._started = self._event_type(enable_timing=True)
            self._started.record()
        else:
            self._started = time.perf_counter()

    def stop(self) -> None:
        if self._event_type is not None:
            end = self._event_type(enable_timing=True)
            end.record()
            self._events.append((self._started, end))
        else:
            self._seconds += time.perf_counter() - self._started

    def seconds(self) -> float:
        if self._events:
            self._events[-1][1].synchronize()
            self._seconds += sum(a.elapsed_time(b) for a, b in self._events) / 1000.0
            self._events.clear()
        return self._seconds


class ModelRunner(Protocol):
    """What the decoding loops need of a model."""

    name: str
    cache_len: int  # tokens fed into the cache so far

    def reset(self) -> None:
        """Empty the cache and the forward statistics (start of a decode)."""

    def feed(self, tokens: torch.Tensor, keep: int) -> torch.Tensor:
        """Append tokens [k] to the cache; return logits [keep, V] predicting the
        positions after the last `keep` fed tokens."""

    def crop(self, length: int) -> None:
        """Drop cached tokens beyond `length`."""

    def stats(self) -> ForwardStats:
        """Forward calls, tokens fed and seconds since the last reset."""


class _CacheRunner:
    """What both Hugging Face runners share: a transformers cache cropped back after a
    rejection, and the forward statistics of the current decode."""

    cache: Any
    device: torch.device

    def _clear_counts(self) -> None:
        self.cache_len = 0
        self._calls = 0
        self._tokens = 0
        self._timer = ForwardTimer(self.device)

    def _count_feed(self, k: int) -> None:
        self._calls += 1
        self._tokens += k
        self.cache_len += k

    def crop(self, length: int) -> None:
        if length < self.cache_len:
            # transformers 5: crop takes the (negative) number of tokens to remove. A static
            # cache only moves each layer's length tensor: no buffer changes address.
            self.cache.crop(length - self.cache_len)
            self.cache_len = length

    def stats(self) -> ForwardStats:
        return ForwardStats(self._calls, self._tokens, self._timer.seconds())


class HFRunner(_CacheRunner):
    """A Hugging Face causal LM with its own DynamicCache.

    Logits are cut to `vocab_size`, the shared tokenizer's real vocabulary, so
    models of one family whose embedding matrices are padded to different
    sizes combine position for position.
    """

    def __init__(self, name: str, model: torch.nn.Module, vocab_size: int):
        from transformers import DynamicCache  # deferred: the core's pure parts don't need transformers

        self._cache_type = DynamicCache
        self.name = name
        self.model = model
        self.vocab_size = vocab_size
        self.device = next(model.parameters()).device
        self.reset()

    def reset(self) -> None:
        self.cache = self._cache_type(config=self.model.config)
        self._clear_counts()

    @torch.inference_mode()
    def feed(self, tokens: torch.Tensor, keep: int) -> torch.Tensor:
        self._timer.start()
        out = self.model(
            input_ids=tokens.unsqueeze(0),  # [1, k]
            cache=self.cache,
            use_cache=True,
            logits_to_keep=keep,  # the lm head runs only where logits are needed
        )
        self._timer.stop()
        self._count_feed(tokens.shape[0])
        return out.logits[0, -keep:, : self.vocab_size]  # [keep, V]


class StaticRunner(_CacheRunner):
    """A Hugging Face causal LM with a StaticCache allocated once, optionally compiled.

    Eager forwards through a Hugging Face model at batch 1 are bound by the host
    launching kernels, not by the GPU: a 0.5B and a 7B model step at the same speed,
    which hides exactly what speculation trades on (issue 12). This runner keeps every
    buffer at a fixed address — the cache is sized once for the longest decode,
    `crop` only moves each layer's length tensor, `reset` zeroes in place — so the
    compiled forward can replay CUDA graphs (`torch.compile(mode="reduce-overhead")`).

    The fed length is left dynamic: one graph for single tokens and one for longer
    blocks (torch specialises on length 1), so compile time does not grow with γ; on
    CUDA a graph is then recorded per distinct length, and `warm_up` records them before
    any clock is read. Feeds longer than `max_block` (prefills) are padded up to a
    multiple of PREFILL_BUCKET and cropped back, so prompt lengths share graphs:
    causal attention makes the real positions' logits and cache entries independent of
    the padding after them. Uncompiled (`compiled=False`), the same cache logic runs
    eagerly: that is how the CPU tests check it.
    """

    def __init__(self, name: str, model: torch.nn.Module, vocab_size: int, capacity: int, max_block: int, compiled: bool):
        from transformers import StaticCache  # deferred: the core's pure parts don't need transformers

        self.name = name
        self.model = model
        self.vocab_size = vocab_size
        self.capacity = capacity
        self.max_block = max_block
        self.compiled = compiled
        self.device = next(model.parameters()).device
        self.cache = StaticCache(config=model.config, max_cache_len=capacity)
        forward = _forward_function(model, self.cache)
        self._forward = _compile(forward, self.device) if compiled else forward
        self._initialise_cache()
        self.reset()

    def _initialise_cache(self) -> None:
        """Allocate the cache's tensors with one eager token: allocated inside a compiled
        region they would not be marked as static addresses, and CUDA graphs would be skipped."""
        with torch.no_grad():
            self.model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=self.device), cache=self.cache, use_cache=True)

    def reset(self) -> None:
        self.cache.reset()  # zeroes in place: the buffers keep their addresses
        self._clear_counts()

    def padded_length(self, k: int) -> int:
        """How many positions a feed of k tokens occupies while it runs."""
        return padded_length(k, self.max_block) if self.compiled else k

    @torch.no_grad()
    def feed(self, tokens: torch.Tensor, keep: int) -> torch.Tensor:
        k = tokens.shape[0]
        padded = self.padded_length(k)
        if self.cache_len + padded > self.capacity:
            raise CosBenchError(
                f"{self.name}: {self.cache_len + padded} positions needed but its static cache holds {self.capacity}; "
                "size the runner for the longest prompt + max_new_tokens + the largest draft block"
            )
        if padded > k:
            tokens = torch.cat([tokens, tokens.new_zeros(padded - k)])
        self._timer.start()
        if self.compiled:
            # Each call starts a new CUDA-graph generation: the previous call's outputs were
            # copied out below, so their memory may be reused.
            torch.compiler.cudagraph_mark_step_begin()
        logits = self._forward(tokens.unsqueeze(0))  # [1, padded, V']
        # A clone: a replayed graph overwrites its output buffer on the next replay.
        kept = logits[0, k - keep : k, : self.vocab_size].clone()  # [keep, V]
        self._timer.stop()
        if padded > k:
            self.cache.crop(k - padded)  # drop the padding: the next feed overwrites it
        self._count_feed(k)
        return kept

    def warm_up(self, lengths: Sequence[int], rounds: int = 3) -> float:
        """Run every fed length `rounds` times, untimed: the first call of a length compiles, the
        next ones record its CUDA graph. Returns the seconds it took."""
        started = time.perf_counter()
        for k in sorted(set(lengths)):
            for _ in range(rounds):
                self.reset()
                self.feed(torch.zeros(k, dtype=torch.long, device=self.device), keep=1)
                self.feed(torch.zeros(1, dtype=torch.long, device=self.device), keep=1)  # a step after a block
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.reset()
        return time.perf_counter() - started


def round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def padded_length(k: int, max_block: int) -> int:
    """Positions a compiled runner's feed of k tokens occupies: blocks as they are, prefills in buckets."""
    return k if k <= max_block else round_up(k, PREFILL_BUCKET)


def static_capacity(prompt_lengths: Sequence[int], max_new_tokens: int, max_block: int) -> int:
    """Cache positions a compiled runner needs for these prompts: the longest first pass (a prompt
    plus up to `max_block` drafts), padded, then the token budget; in CAPACITY_STEP steps."""
    longest = padded_length(max(prompt_lengths, default=1) + max_block, max_block)
    return round_up(longest + max_new_tokens, CAPACITY_STEP)


def graph_lengths(prompt_lengths: Sequence[int], max_block: int) -> tuple[int, ...]:
    """Every length a compiled runner is fed: 1 … `max_block` after a prefill, and the bucket of each
    first pass (a prompt plus up to `max_block` drafts fed with it)."""
    prefills = {padded_length(length + extra, max_block) for length in prompt_lengths for extra in range(max_block + 1)}
    return tuple(sorted(set(range(1, max_block + 1)) | prefills))


def _forward_function(model: torch.nn.Module, cache) -> Callable[[torch.Tensor], torch.Tensor]:
    """input_ids [1, k] -> logits [1, k, V'] through `cache`, as a function with a code object of its own.

    torch.compile keeps its graphs per code object, and two models of one architecture
    (Llama-2-7B + Vicuna-7B, Qwen2.5-1.5B + its Coder) would otherwise share one graph
    with the weights as inputs, so their CUDA graphs would be re-recorded at every switch
    of model. A private copy of the code gives each runner its own graphs.
    """

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        # Logits for every fed position: a constant keep count leaves the compiler nothing to specialise on.
        return model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=0).logits

    code = forward.__code__.replace()  # an equal but distinct code object
    return types.FunctionType(code, forward.__globals__, forward.__name__, forward.__defaults__, forward.__closure__)


def _compile(forward, device: torch.device):
    """torch.compile with CUDA graphs on CUDA (plain inductor elsewhere), the fed length dynamic."""
    import torch._inductor.config

    # One CUDA graph per distinct fed length is the design, not a problem worth a warning.
    torch._inductor.config.triton.cudagraph_dynamic_shape_warn_limit = None
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(forward, mode=mode, fullgraph=True)
