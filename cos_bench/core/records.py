"""Frozen result records returned by every decoding method.

The core knows nothing of tasks or storage; these records are all it hands
outwards. `to_dict` gives the JSON-ready form the results files store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelAccounting:
    """What one model did during one decode.

    Drafting counts are per *proposal position*: position 1 is the first token
    of a proposal run (for `cos`, the verifier's bonus token opens its run).
    """

    name: str
    forward_calls: int
    tokens_fed: int
    forward_seconds: float
    drafted: int  # ordinary draft tokens this model proposed (bonus excluded)
    accepted: int  # of those, accepted and committed
    bonus_drafted: int  # `cos` only: bonus tokens taken from this model's verification pass
    bonus_accepted: int
    verified: int  # this model's drafts (bonus included) that reached a verdict
    alpha_sum: float  # Σ over those verified positions of Σ_x min(draft(x), combined(x))
    drafted_by_position: tuple[int, ...]
    accepted_by_position: tuple[int, ...]

    @property
    def expected_acceptance(self) -> float | None:
        """α = mean of Σ_x min(q, r) over this model's verified drafts; None when it drafted nothing."""
        return self.alpha_sum / self.verified if self.verified else None

    @property
    def draft_runs(self) -> int:
        """Proposal runs this model opened (bonus runs included): every run drafts position 1."""
        return self.drafted_by_position[0] if self.drafted_by_position else 0

    @property
    def mean_draft_length(self) -> float | None:
        """Tokens drafted per proposal run (bonus included); None when it drafted nothing."""
        return (self.drafted + self.bonus_drafted) / self.draft_runs if self.draft_runs else None


@dataclass(frozen=True)
class DecodeResult:
    """One decode of one prompt by one method."""

    method: str
    token_ids: tuple[int, ...]  # generated ids only, prompt excluded
    stop_reason: str  # "eos" | "stop_string" | "max_new_tokens"
    models: tuple[ModelAccounting, ...]
    corrections: int  # tokens drawn from the residual after a rejection
    direct_samples: int  # tokens drawn straight from the combined distribution (vanilla)
    first_token_seconds: float  # prefill + first committed token, wall clock
    # Whole decode by the loop's own clock, read without a device sync; `run.run_job` stores the
    # synchronised `timing.timed` wall time here instead, so a stored record holds one total.
    total_seconds: float

    @property
    def accepted_tokens(self) -> int:
        return sum(m.accepted + m.bonus_accepted for m in self.models)

    @property
    def drafted_tokens(self) -> int:
        return sum(m.drafted + m.bonus_drafted for m in self.models)

    @property
    def expected_acceptance(self) -> float | None:
        """α pooled over every verified draft of every model."""
        verified = sum(m.verified for m in self.models)
        return sum(m.alpha_sum for m in self.models) / verified if verified else None

    def to_dict(self) -> dict:
        return asdict(self)
