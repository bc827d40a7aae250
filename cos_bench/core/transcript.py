"""The committed sequence of one decode, and the accounting every method shares."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from cos_bench.core.records import DecodeResult, ModelAccounting
from cos_bench.core.runner import ModelRunner
from cos_bench.core.stopping import StopRule


class Transcript:
    """Prompt plus committed tokens, kept on the device (so drafts are fed without
    host round-trips) and mirrored on the host (for stop checks)."""

    def __init__(self, prompt_ids: torch.Tensor, stop: StopRule):
        prompt_len = prompt_ids.shape[0]
        # Drafts never run past max_new_tokens, so this buffer holds every position ever written.
        self.tokens = torch.empty(prompt_len + stop.max_new_tokens, dtype=torch.long, device=prompt_ids.device)
        self.tokens[:prompt_len] = prompt_ids
        self.length = prompt_len  # committed positions
        self.generated: list[int] = []
        self.stop = stop
        self.stop_reason: str | None = None
        self.started = time.perf_counter()
        self.first_token_at: float | None = None

    @property
    def remaining(self) -> int:
        return self.stop.max_new_tokens - len(self.generated)

    def commit(self, token: int, write: bool = True) -> bool:
        """Append one token (already in the buffer when `write` is False); True once generation must stop."""
        if write:
            self.tokens[self.length] = token
        self.length += 1
        self.generated.append(token)
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.stop_reason = self.stop.reason(self.generated)
        return self.stop_reason is not None


@dataclass
class DraftCounters:
    """Drafting bookkeeping of one model during one decode."""

    drafted: int = 0
    accepted: int = 0
    bonus_drafted: int = 0
    bonus_accepted: int = 0
    verified: int = 0
    alpha_sum: float = 0.0
    drafted_by_position: list[int] = field(default_factory=list)
    accepted_by_position: list[int] = field(default_factory=list)

    def count_draft(self, run_position: int, bonus: bool) -> None:
        if bonus:
            self.bonus_drafted += 1
        else:
            self.drafted += 1
        _bump(self.drafted_by_position, run_position)

    def count_accept(self, run_position: int, bonus: bool) -> None:
        if bonus:
            self.bonus_accepted += 1
        else:
            self.accepted += 1
        _bump(self.accepted_by_position, run_position)


def _bump(counts: list[int], run_position: int) -> None:
    while len(counts) < run_position:
        counts.append(0)
    counts[run_position - 1] += 1


def finish(
    method: str,
    transcript: Transcript,
    runners: Sequence[ModelRunner],
    counters: Sequence[DraftCounters],
    corrections: int = 0,
    direct_samples: int = 0,
) -> DecodeResult:
    """Freeze one decode into its record."""
    ended = time.perf_counter()
    models = []
    for runner, count in zip(runners, counters):
        stats = runner.stats()
        models.append(
            ModelAccounting(
                name=runner.name,
                forward_calls=stats.calls,
                tokens_fed=stats.tokens,
                forward_seconds=stats.seconds,
                drafted=count.drafted,
                accepted=count.accepted,
                bonus_drafted=count.bonus_drafted,
                bonus_accepted=count.bonus_accepted,
                verified=count.verified,
                alpha_sum=count.alpha_sum,
                drafted_by_position=tuple(count.drafted_by_position),
                accepted_by_position=tuple(count.accepted_by_position),
            )
        )
    return DecodeResult(
        method=method,
        token_ids=tuple(transcript.generated),
        stop_reason=transcript.stop_reason or "max_new_tokens",
        models=tuple(models),
        corrections=corrections,
        direct_samples=direct_samples,
        first_token_seconds=(transcript.first_token_at or ended) - transcript.started,
        total_seconds=ended - transcript.started,
    )
