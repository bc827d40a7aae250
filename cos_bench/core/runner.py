"""Model runners: one model and its own KV cache, advanced and cropped only here.

The decoding loops talk to models through this narrow seam. A runner knows
how many tokens its cache holds; `feed` appends tokens and returns logits,
`crop` rolls the cache back after a rejection. `HFRunner` wraps a Hugging
Face causal LM; tests also use table-driven runners with the same interface.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class ForwardStats:
    calls: int
    tokens: int
    seconds: float


class ForwardTimer:
    """Time spent in forward calls, without a host-device sync per call.

    On CUDA each call is bracketed by events that are only read (one sync) when
    the total is asked for; on the CPU the calls are synchronous, so a
    monotonic clock around them is exact.
    """

    def __init__(self, device: torch.device):
        self._cuda = device.type == "cuda"
        self._seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._started: float | torch.cuda.Event | None = None

    def start(self) -> None:
        if self._cuda:
            self._started = torch.cuda.Event(enable_timing=True)
            self._started.record()
        else:
            self._started = time.perf_counter()

    def stop(self) -> None:
        if self._cuda:
            end = torch.cuda.Event(enable_timing=True)
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


class HFRunner:
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
        self.cache_len = 0
        self._calls = 0
        self._tokens = 0
        self._timer = ForwardTimer(self.device)

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
        self._calls += 1
        self._tokens += tokens.shape[0]
        self.cache_len += tokens.shape[0]
        return out.logits[0, -keep:, : self.vocab_size]  # [keep, V]

    def crop(self, length: int) -> None:
        if length < self.cache_len:
            # transformers 5: crop takes the (negative) number of tokens to remove.
            self.cache.crop(length - self.cache_len)
            self.cache_len = length

    def stats(self) -> ForwardStats:
        return ForwardStats(self._calls, self._tokens, self._timer.seconds())
