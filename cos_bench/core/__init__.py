"""The decoding core: pure tensor functions and the loops that own the KV caches. No I/O."""

from __future__ import annotations

from collections.abc import Callable

from cos_bench.core import cos, sd, vanilla
from cos_bench.core.combine import CombinationRule, Contrastive, WeightedEnsemble
from cos_bench.core.drafting import (
    DRAFT_POLICIES,
    AutoDraft,
    ConfidenceDraft,
    DraftPolicy,
    FixedDraft,
    HeuristicDraft,
    MarginalDraft,
    PassCost,
)
from cos_bench.core.records import DecodeResult, ModelAccounting
from cos_bench.core.runner import HFRunner, ModelRunner
from cos_bench.core.settings import DecodeSettings
from cos_bench.core.stopping import StopRule
from cos_bench.errors import CosBenchError

# name -> decode(runners, prompt_ids, settings, stop, generator) -> DecodeResult
CORE_METHODS: dict[str, Callable[..., DecodeResult]] = {
    "vanilla": vanilla.decode,
    "sd": sd.decode,
    "cos": cos.decode,
}
# The methods whose proposal runs follow DecodeSettings.draft: the speculative engine's.
DRAFT_POLICY_METHODS = ("sd", "cos")


def get_method(name: str) -> Callable[..., DecodeResult]:
    if name not in CORE_METHODS:
        raise CosBenchError(f"unknown decoding method {name!r}: choose from {', '.join(CORE_METHODS)}")
    return CORE_METHODS[name]


__all__ = [
    "CORE_METHODS",
    "DRAFT_POLICIES",
    "DRAFT_POLICY_METHODS",
    "AutoDraft",
    "CombinationRule",
    "ConfidenceDraft",
    "Contrastive",
    "DecodeResult",
    "DecodeSettings",
    "DraftPolicy",
    "FixedDraft",
    "HeuristicDraft",
    "MarginalDraft",
    "PassCost",
    "HFRunner",
    "ModelAccounting",
    "ModelRunner",
    "StopRule",
    "WeightedEnsemble",
    "get_method",
]
