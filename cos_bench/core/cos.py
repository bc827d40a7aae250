"""`cos`: collaborative decoding via speculation — Naive-CoS plus the alternate
proposal framework (the paper's Algorithm 1 for two models, Algorithm 2 for n).

After a verifying pass with no rejection, the model that just scored turns its
extra next-position distribution into a bonus draft and proposes γ_i − 1 more.
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
    return SpeculativeEngine(runners, prompt_ids, settings, stop, generator).run("cos", alternate=True)
