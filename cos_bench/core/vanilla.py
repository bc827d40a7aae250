"""Vanilla collaborative decoding: every model one forward step per token.

The reference every other method must match: each step feeds every model
the tokens its cache lacks, combines their next-token logits with the rule,
and draws the next token from the combined distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cos_bench.core.records import DecodeResult
from cos_bench.core.runner import ModelRunner
from cos_bench.core.sampling import sample
from cos_bench.core.settings import DecodeSettings
from cos_bench.core.stopping import StopRule
from cos_bench.core.transcript import DraftCounters, Transcript, finish


def decode(
    runners: Sequence[ModelRunner],
    prompt_ids: torch.Tensor,  # [P]
    settings: DecodeSettings,
    stop: StopRule,
    generator: torch.Generator | None = None,
) -> DecodeResult:
    for runner in runners:
        runner.reset()
    transcript = Transcript(prompt_ids, stop)
    while True:
        end = transcript.length
        logits = [runner.feed(transcript.tokens[runner.cache_len : end], keep=1)[0] for runner in runners]  # n × [V]
        token = sample(settings.rule.combine(logits, settings.temperature), generator)
        if transcript.commit(int(token)):
            break
    return finish("vanilla", transcript, runners, [DraftCounters() for _ in runners], direct_samples=len(transcript.generated))
