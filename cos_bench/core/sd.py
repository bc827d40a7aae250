"""`sd`: speculative decoding against the combined distribution (Naive-CoS).

The default proposer drafts γ tokens, every other model scores them in one
pass, and no roles alternate: the paper's "SD" baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cos_bench.core.records import DecodeResult
from cos_bench.core.runner import ModelRunner
from cos_bench.core.settings import DecodeSettings
from cos_bench.core.speculative import SpeculativeEngine
from cos_bench.core.stopping import StopRule


def decode(
    runners: Sequence[ModelRunner],
    prompt_ids: torch.Tensor,
    settings: DecodeSettings,
    stop: StopRule,
    generator: torch.Generator | None = None,
) -> DecodeResult:
    return SpeculativeEngine(runners, prompt_ids, settings, stop, generator).run("sd", alternate=False)
