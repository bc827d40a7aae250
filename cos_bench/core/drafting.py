"""Draft-length policies: how many tokens a proposer drafts in each run (docs/design.md §9).

A policy is frozen configuration, validated when built; `start` gives the mutable plan of one
decode, which the speculative engine asks before each proposal run (`run_length`), after each
drafted token (`stops_after`) and when a run's last draft is accepted or one of its drafts is
rejected (`run_verified`). A run opened by a verifier's bonus token (`cos`) is a run like any
other: the policy sets its length, bonus included.

Why every policy is exact: speculative sampling emits each position's token from the combined
distribution, conditionally on everything before it, whatever distribution the draft came from
and however many drafts the run holds. So a run's length may depend on anything already
decided — the drafter's own distributions and tokens, the verdicts of earlier runs — but
never on the randomness that verifies the current run, and no policy draws a random number:
under `fixed` the engine's random stream is the one it always was.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from cos_bench.core.combine import model_probs
from cos_bench.core.speedup import apf_speedup, naive_cos_speedup
from cos_bench.core.transcript import DraftCounters
from cos_bench.errors import CosBenchError

DEFAULT_CONFIDENCE_THRESHOLD = 0.4  # transformers' `assistant_confidence_threshold` default
# heuristic: transformers' schedule for `num_assistant_tokens` ("heuristic"): +2 after a fully accepted run, −1 otherwise.
HEURISTIC_GROWTH, HEURISTIC_SHRINK = 2, 1
# Without `gamma_max`, a model may draft up to this many times its configured γ: each model's range follows
# its role (paper: small 5 → 10, large 1 → 2), where one shared cap would let the large model draft as long as the small one.
DEFAULT_CAP_SCALE = 2
# `auto` keeps a proposer's configured γ until this many of its drafts have a verdict: α from fewer is noise.
AUTO_MIN_VERDICTS = 4


@dataclass(frozen=True)
class PassCost:
    """A verifier's measured pass costs: feeding `tokens[i]` tokens costs `ratios[i]` single steps.

    Other lengths are charged by linear interpolation through (1, 1) and the measured points, and
    past the longest by its last segment's slope. On a GPU a pass costs about one step whatever its
    length (ratio ≈ 1); on a CPU it grows with the tokens fed, but not in proportion: a 2-token pass
    already leaves the single-token kernels (1.33 steps for the 1.5B on a 2-core EPYC, where a line
    through its 6-token pass, 1.46, charges 1.09), so one measured length makes short runs look
    cheaper than they are. Calibration measures every length `auto` may draft for that reason.

    The points are charged as a non-decreasing fit (pool adjacent violators): feeding more tokens
    does at least the work of feeding fewer, so a dip is timing noise, and left in it steers `auto`:
    a 6-token pass timed at 1.90 steps against 1.64 and 1.62 for 7 and 8 tokens made γ = 6 and 7
    look cheaper than γ = 5 (results/cpu-auto-pass-curve, T = 1).
    """

    tokens: tuple[int, ...]
    ratios: tuple[float, ...]

    def __post_init__(self) -> None:
        lengths_ok = all(isinstance(k, int) and k >= 1 for k in self.tokens) and list(self.tokens) == sorted(set(self.tokens))
        if len(self.tokens) != len(self.ratios) or not lengths_ok or not all(0 < r < math.inf for r in self.ratios):
            raise CosBenchError(
                f"pass cost: need increasing token counts ≥ 1 with one positive finite ratio each, got {self.tokens} and {self.ratios}"
            )

    def at(self, tokens: int) -> float:
        points = self._fitted
        if len(points) == 1:
            return 1.0  # nothing measured past one token: the paper's one step
        # The segment holding `tokens`, or the last one to extend past the longest measured pass.
        (x0, y0), (x1, y1) = next(
            (points[i - 1], points[i]) for i in range(1, len(points)) if tokens <= points[i][0] or i == len(points) - 1
        )
        return max(1.0, y0 + (y1 - y0) * (tokens - x0) / (x1 - x0))

    @functools.cached_property
    def _fitted(self) -> tuple[tuple[int, float], ...]:
        """(1, 1) and the measured points, ratios made non-decreasing by pooling each run of violators into its mean."""
        points = sorted({1: 1.0, **dict(zip(self.tokens, self.ratios))}.items())
        blocks: list[list[float]] = []  # [sum, count] per pooled run, means non-decreasing
        for _, ratio in points:
            blocks.append([ratio, 1])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
                total, count = blocks.pop()
                blocks[-1][0] += total
                blocks[-1][1] += count
        means = [total / count for total, count in blocks for _ in range(int(count))]
        return tuple((k, mean) for (k, _), mean in zip(points, means))


class DraftPlan:
    """One decode's drafting decisions under `fixed`: every run is the model's configured γ."""

    def __init__(self, gammas: Sequence[int]):
        self.current = list(gammas)  # the γ each model drafts in its next run

    def run_length(self, index: int, counters: Sequence[DraftCounters]) -> int:
        """The longest run model `index` drafts now; `counters` hold only earlier rounds' verdicts."""
        return self.current[index]

    def stops_after(self, logits: torch.Tensor, draft_probs: torch.Tensor, token: torch.Tensor) -> bool:
        """True to end the run after `token` (drawn from `draft_probs` [V], the drafter's `logits` [V])."""
        return False

    def run_verified(self, index: int, fully_accepted: bool) -> None:
        """A run of model `index` was fully accepted, or one of its drafts rejected."""

    def draft_verified(self, index: int, run: int, run_position: int, accepted: bool) -> None:
        """The draft at `run_position` (1-based) of model `index`'s run number `run` got its verdict
        (runs numbered from 1 in the order `run_length` was asked)."""


class DraftPolicy:
    """How long each proposal run is; one frozen subclass per policy, listed in DRAFT_POLICIES."""

    name: ClassVar[str]
    parameters: ClassVar[tuple[str, ...]] = ()  # the fields a config may set (cos_bench.config reads them)

    def caps(self, gammas: Sequence[int]) -> tuple[int, ...]:
        """The longest run each model may ever draft (the compiled engine sizes its blocks by Σ caps + 1)."""
        return tuple(gammas)

    def check(self, gammas: Sequence[int]) -> None:
        """Refuse settings this policy cannot work with (called by DecodeSettings)."""

    def calibrated(self, step_costs: Sequence[float], pass_costs: Sequence[PassCost] | None = None) -> DraftPolicy:
        """This policy given each model's measured single-step time and verification-pass cost (only `auto` uses them)."""
        return self

    def start(self, gammas: Sequence[int], temperature: float, alternate: bool) -> DraftPlan:
        """The plan of one decode; `alternate` is True for `cos` (roles alternate), False for `sd`."""
        return DraftPlan(gammas)


@dataclass(frozen=True)
class FixedDraft(DraftPolicy):
    """Every run is the model's configured γ (the paper's algorithm)."""

    name: ClassVar[str] = "fixed"


@dataclass(frozen=True)
class ConfidenceDraft(DraftPolicy):
    """The drafter ends its run after a token whose own probability is below `threshold`, or at its γ.

    At T = 0 the draft distribution is one-hot (its token has probability 1), so confidence is read
    from the drafter's untempered softmax there. Reading it costs one host read per drafted token.
    """

    name: ClassVar[str] = "confidence"
    parameters: ClassVar[tuple[str, ...]] = ("threshold",)

    threshold: float = DEFAULT_CONFIDENCE_THRESHOLD

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise CosBenchError(f"confidence threshold must be in (0, 1), got {self.threshold}: e.g. 0.4")

    def start(self, gammas: Sequence[int], temperature: float, alternate: bool) -> DraftPlan:
        return _ConfidencePlan(gammas, self.threshold, temperature)


class _ConfidencePlan(DraftPlan):
    def __init__(self, gammas: Sequence[int], threshold: float, temperature: float):
        super().__init__(gammas)
        self.threshold = threshold
        self.temperature = temperature

    def stops_after(self, logits: torch.Tensor, draft_probs: torch.Tensor, token: torch.Tensor) -> bool:
        return own_probability(logits, draft_probs, token, self.temperature) < self.threshold


def own_probability(logits: torch.Tensor, draft_probs: torch.Tensor, token: torch.Tensor, temperature: float) -> float:
    """The drafter's probability of the token it drafted (one host read): from its draft distribution,
    or at T = 0, where that is one-hot, from its untempered softmax."""
    probs = draft_probs if temperature > 0 else model_probs(logits, 1.0)
    return float(probs[token])


@dataclass(frozen=True)
class _CappedPolicy(DraftPolicy):
    """A policy whose γ moves within [1, cap]: cap = `gamma_max` for every model, else DEFAULT_CAP_SCALE × its γ."""

    parameters: ClassVar[tuple[str, ...]] = ("gamma_max",)

    gamma_max: int | None = None

    def caps(self, gammas: Sequence[int]) -> tuple[int, ...]:
        return tuple(DEFAULT_CAP_SCALE * g if self.gamma_max is None else self.gamma_max for g in gammas)

    def check(self, gammas: Sequence[int]) -> None:
        if self.gamma_max is not None and (int(self.gamma_max) != self.gamma_max or self.gamma_max < max(gammas)):
            raise CosBenchError(
                f"{self.name}: gamma_max must be an integer ≥ every model's gamma (largest {max(gammas)}), got {self.gamma_max}: raise it"
            )


@dataclass(frozen=True)
class HeuristicDraft(_CappedPolicy):
    """Each model's γ starts at its configured value, +2 after a fully accepted run, −1 after a rejection."""

    name: ClassVar[str] = "heuristic"

    def start(self, gammas: Sequence[int], temperature: float, alternate: bool) -> DraftPlan:
        return _HeuristicPlan(gammas, self.caps(gammas))


class _HeuristicPlan(DraftPlan):
    def __init__(self, gammas: Sequence[int], caps: Sequence[int]):
        super().__init__(gammas)
        self.caps = caps

    def run_verified(self, index: int, fully_accepted: bool) -> None:
        step = HEURISTIC_GROWTH if fully_accepted else -HEURISTIC_SHRINK
        self.current[index] = min(self.caps[index], max(1, self.current[index] + step))


@dataclass(frozen=True)
class AutoDraft(_CappedPolicy):
    """Before each run, the γ in [1, cap] that maximises the paper's speedup for this proposer.

    α is the proposer's own so far (Σ overlaps / verified drafts, from earlier rounds), c its step
    time over the other models' (`step_costs`, calibrated). `cos` with two models maximises Thm 3.6
    (the other model's current γ as γp), `sd` and n > 2 models the Thm 3.1 form with c over every
    other model. Where calibration measured the verifiers' pass costs (`pass_costs`), the
    (γ+1)-token pass is charged what it costs (the dearest verifier's, `PassCost.at`) instead of
    the paper's one step. Without `step_costs`, or before `min_verdicts` verdicts, the configured γ.
    """

    name: ClassVar[str] = "auto"

    step_costs: tuple[float, ...] | None = None  # seconds of one single-token step per model, in role order
    pass_costs: tuple[PassCost, ...] | None = None  # per model, its measured verification-pass cost
    min_verdicts: int = AUTO_MIN_VERDICTS  # verified drafts of a proposer before its α is trusted

    def check(self, gammas: Sequence[int]) -> None:
        super().check(gammas)
        if int(self.min_verdicts) != self.min_verdicts or self.min_verdicts < 1:
            raise CosBenchError(f"auto: min_verdicts must be an integer ≥ 1, got {self.min_verdicts}")
        if self.step_costs is not None and (len(self.step_costs) != len(gammas) or not all(0 < c < math.inf for c in self.step_costs)):
            raise CosBenchError(f"auto: need one positive step cost per model ({len(gammas)}), got {list(self.step_costs)}")

    def calibrated(self, step_costs: Sequence[float], pass_costs: Sequence[PassCost] | None = None) -> DraftPolicy:
        return dataclasses.replace(
            self, step_costs=tuple(float(c) for c in step_costs), pass_costs=None if pass_costs is None else tuple(pass_costs)
        )

    def start(self, gammas: Sequence[int], temperature: float, alternate: bool) -> DraftPlan:
        return _AutoPlan(gammas, self.caps(gammas), self.step_costs, self.pass_costs, self.min_verdicts, alternate)


class _AutoPlan(DraftPlan):
    def __init__(
        self,
        gammas: Sequence[int],
        caps: Sequence[int],
        step_costs: Sequence[float] | None,
        pass_costs: Sequence[PassCost] | None,
        min_verdicts: int,
        alternate: bool,
    ):
        super().__init__(gammas)
        self.caps = caps
        self.step_costs = step_costs
        self.pass_costs = pass_costs
        self.min_verdicts = min_verdicts
        self.alternate = alternate

    def run_length(self, index: int, counters: Sequence[DraftCounters]) -> int:
        alpha = self.trusted_alpha(index, counters)
        if alpha is None:
            return self.current[index]
        c = self.c(index)
        self.current[index] = max(range(1, self.caps[index] + 1), key=lambda gamma: self.speedup(index, alpha, c, gamma))
        return self.current[index]

    def trusted_alpha(self, index: int, counters: Sequence[DraftCounters]) -> float | None:
        """Model `index`'s α so far, once costs are calibrated and it has `min_verdicts` verdicts; else None."""
        own = counters[index]
        if self.step_costs is None or own.verified < self.min_verdicts:
            return None
        return min(1.0, own.alpha_sum / own.verified)  # a sum of overlaps in float can pass 1 by rounding

    def c(self, index: int) -> float:
        """Model `index`'s step time over the other models' together (calibrated)."""
        return self.step_costs[index] / sum(cost for other, cost in enumerate(self.step_costs) if other != index)

    def speedup(self, index: int, alpha: float, c: float, gamma: int) -> float:
        rho = self.pass_cost(index, gamma + 1)
        if self.alternate and len(self.current) == 2:
            return apf_speedup(alpha, c, gamma, self.current[1 - index], pass_cost=rho)
        return naive_cos_speedup(alpha, c, gamma, pass_cost=rho)

    def pass_cost(self, index: int, tokens: int) -> float:
        """What verifying a run from model `index` costs, in single steps: the dearest other model's pass."""
        if self.pass_costs is None:
            return 1.0
        return max(cost.at(tokens) for other, cost in enumerate(self.pass_costs) if other != index)


@dataclass(frozen=True)
class MarginalDraft(AutoDraft):
    """Runs that end where the next draft stops paying for itself, judged token by token (up to the cap).

    After each drafted token the plan estimates P, the chance that every draft of the run so far is
    accepted: the product of each draft's acceptance rate at the drafter's own probability of it
    (read as `confidence` reads it), learned in this decode from earlier verdicts at that probability
    (CONFIDENCE_BINS bins, each starting as CONFIDENCE_PRIOR verdicts at the proposer's α). One more
    draft adds P·α expected tokens (all so far accepted, then it) and costs c plus the pass's growth
    ρ(k+2) − ρ(k+1); the run goes on while that ratio reaches the best whole run's tokens per cost
    (`auto`'s optimum: its speedup / (1 + c)). So a run ends right after a draft the drafter was
    unsure of, where a rejection is likely, and runs long through text it is sure of; where its
    probabilities tell nothing (P = α^k), about where `auto`'s γ would. Before `min_verdicts`, or
    without calibrated costs, the configured γ.
    """

    name: ClassVar[str] = "marginal"

    def start(self, gammas: Sequence[int], temperature: float, alternate: bool) -> DraftPlan:
        return _MarginalPlan(gammas, self.caps(gammas), self.step_costs, self.pass_costs, self.min_verdicts, alternate, temperature)


# `marginal`: drafter probabilities are binned this finely, and each bin's acceptance rate starts as
# this many verdicts at the proposer's α, so a bin with few verdicts leans on α.
CONFIDENCE_BINS = 10
CONFIDENCE_PRIOR = 4.0


class _MarginalPlan(_AutoPlan):
    def __init__(self, gammas, caps, step_costs, pass_costs, min_verdicts: int, alternate: bool, temperature: float):
        super().__init__(gammas, caps, step_costs, pass_costs, min_verdicts, alternate)
        self.temperature = temperature
        self.verdicts = [[[0, 0] for _ in range(CONFIDENCE_BINS)] for _ in gammas]  # per model, per bin: [accepted, verified]
        self.run_bins: list[list[int]] = []  # per run so far, its drafts' bins by run position
        self.drafter = 0
        self.run: tuple[float, float, float] | None = None  # the open run's α, c and tokens-per-cost bar, once trusted
        self.survival = 1.0

    def run_length(self, index: int, counters: Sequence[DraftCounters]) -> int:
        self.drafter, self.survival = index, 1.0
        self.run_bins.append([])
        alpha = self.trusted_alpha(index, counters)
        if alpha is None:
            self.run = None
            return self.current[index]
        c = self.c(index)
        best = max(self.speedup(index, alpha, c, gamma) for gamma in range(1, self.caps[index] + 1))
        self.run = (alpha, c, best / (1 + c))
        return self.caps[index]

    def stops_after(self, logits: torch.Tensor, draft_probs: torch.Tensor, token: torch.Tensor) -> bool:
        index, bins = self.drafter, self.run_bins[-1]
        confidence = own_probability(logits, draft_probs, token, self.temperature)
        bins.append(min(CONFIDENCE_BINS - 1, int(confidence * CONFIDENCE_BINS)))
        if self.run is None:
            return False
        alpha, c, bar = self.run
        accepted, verified = self.verdicts[index][bins[-1]]
        self.survival *= (accepted + CONFIDENCE_PRIOR * alpha) / (verified + CONFIDENCE_PRIOR)
        k = len(bins)
        growth = self.pass_cost(index, k + 2) - self.pass_cost(index, k + 1)
        return self.survival * alpha < bar * (c + growth)

    def draft_verified(self, index: int, run: int, run_position: int, accepted: bool) -> None:
        counts = self.verdicts[index][self.run_bins[run - 1][run_position - 1]]
        counts[0] += accepted
        counts[1] += 1


# Policy name (a config's `draft:`) -> class: the registry cos_bench.config takes its choices from.
DRAFT_POLICIES: dict[str, type[DraftPolicy]] = {
    cls.name: cls for cls in (FixedDraft, ConfidenceDraft, HeuristicDraft, AutoDraft, MarginalDraft)
}
