"""What every decoding method is told: the rule, temperature, γ per model, proposer, draft-length policy."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cos_bench.core.combine import CombinationRule
from cos_bench.core.drafting import DraftPolicy, FixedDraft
from cos_bench.errors import CosBenchError


@dataclass(frozen=True)
class DecodeSettings:
    rule: CombinationRule
    temperature: float
    gammas: tuple[int, ...]  # draft length per model, in role order
    proposer: int = 0  # index of the default proposer (normally the smallest model)
    draft: DraftPolicy = FixedDraft()  # how long each proposal run is (`sd`, `cos`); fixed = γ every run

    def __post_init__(self) -> None:
        if math.isnan(self.temperature) or self.temperature < 0:
            raise CosBenchError(f"temperature must be >= 0, got {self.temperature}: use 0 for greedy or a positive value")
        if len(self.gammas) != self.rule.n_models:
            raise CosBenchError(f"need one gamma per model ({self.rule.n_models}), got {len(self.gammas)}: set gamma for every model")
        if any(int(g) != g or g < 1 for g in self.gammas):
            raise CosBenchError(f"every gamma must be an integer >= 1, got {list(self.gammas)}: raise it to at least 1")
        if not 0 <= self.proposer < self.rule.n_models:
            raise CosBenchError(f"proposer index {self.proposer} is out of range for {self.rule.n_models} models: pick one of the models")
        self.draft.check(self.gammas)
