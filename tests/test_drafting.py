"""Draft-length policies (core/drafting.py): each changes run lengths the way it says, `fixed`
changes nothing, and the engine's bookkeeping stays right under variable γ.

Exactness under every policy is tested with the other exactness tests: greedy identity in
test_core_greedy.py, the chi-square test and its wrong-verifier control in test_core_sampling.py.
"""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from test_core_units import DeviceOnlyRunner, HostReads
from tiny import ADAPTIVE_POLICIES, TableRunner, draft_policy

from cos_bench.core import (
    CORE_METHODS,
    AutoDraft,
    ConfidenceDraft,
    Contrastive,
    DecodeSettings,
    FixedDraft,
    HeuristicDraft,
    MarginalDraft,
    PassCost,
    StopRule,
    WeightedEnsemble,
)
from cos_bench.core.drafting import DraftPlan
from cos_bench.core.sampling import verify_block
from cos_bench.core.transcript import DraftCounters
from cos_bench.errors import CosBenchError
from cos_bench.theory import apf_speedup, naive_cos_speedup

WE = WeightedEnsemble([0.5, 0.5])


def decode(method, runners, policy, gammas=(2, 1), temperature=0.0, tokens=40, seed=0, rule=WE):
    settings = DecodeSettings(rule, temperature, gammas, draft=policy)
    return CORE_METHODS[method](runners, torch.tensor([1, 2]), settings, StopRule(tokens), torch.Generator().manual_seed(seed))


def identical():
    return [TableRunner("a", 7, 8), TableRunner("b", 7, 8)]  # same table: every draft accepted


def disagreeing():
    return [TableRunner("a", 1, 8), TableRunner("b", 2, 8)]


def run_lengths(model) -> list[int]:
    """How many runs reached each length exactly (from drafted_by_position: runs reaching position k)."""
    reached = list(model.drafted_by_position) + [0]
    return [reached[k] - reached[k + 1] for k in range(len(reached) - 1)]


# --- fixed: nothing changes --------------------------------------------------------------------


def fixed_trace() -> str:
    """Ids, per-model schedule and the generator's next draw of a few sampled decodes."""
    cases = [
        ("sd", WE, (3, 1)),
        ("cos", WE, (3, 1)),
        ("cos", Contrastive(0.5), (2, 2)),
        ("cos", WeightedEnsemble([0.4, 0.4, 0.2]), (3, 2, 1)),
    ]
    lines = []
    for method, rule, gammas in cases:
        runners = [TableRunner(f"m{i}", 100 + i, 6) for i in range(len(gammas))]
        generator = torch.Generator().manual_seed(7)
        results = []
        for _ in range(3):
            r = CORE_METHODS[method](runners, torch.tensor([0, 4]), DecodeSettings(rule, 1.0, gammas), StopRule(12), generator)
            results.append((r.token_ids, tuple((m.forward_calls, m.drafted_by_position, m.accepted_by_position) for m in r.models)))
        lines.append(f"{method} {gammas} {results} {torch.rand(1, generator=generator, dtype=torch.float64).item()}")
    return "\n".join(lines)


def test_fixed_policy_leaves_ids_schedule_and_random_stream_unchanged():
    # Digest of fixed_trace() computed with the code before draft policies existed (commit ee36824):
    # the same ids, the same forward calls and drafts per position, and the same number of random
    # draws (the generator's next number is the same).
    trace = fixed_trace()
    assert trace.splitlines()[0].startswith("sd (3, 1) [((3, 1, 1, 2, 3, 3, 0, 3, 0, 3, 0, 1), ")
    assert trace.splitlines()[0].endswith(" 0.4586415082097094")
    assert hashlib.sha256(trace.encode()).hexdigest()[:16] == "7039d813adda27de"


def test_fixed_is_the_default_policy():
    assert DecodeSettings(WE, 0.0, (2, 1)).draft == FixedDraft()


# --- heuristic ----------------------------------------------------------------------------------


def test_heuristic_plan_grows_by_two_after_a_full_run_and_shrinks_by_one_within_bounds():
    plan = HeuristicDraft().start((3, 1), 0.0, alternate=True)  # caps: 2 × γ = (6, 2)
    counters = [DraftCounters(), DraftCounters()]
    steps = []
    for fully_accepted in (True, True, True, False, False, False, False, False):
        plan.run_verified(0, fully_accepted)
        steps.append(plan.run_length(0, counters))
    assert steps == [5, 6, 6, 5, 4, 3, 2, 1]
    plan.run_verified(0, False)
    assert plan.run_length(0, counters) == 1  # never below 1
    plan.run_verified(1, True)
    assert plan.run_length(1, counters) == 2  # the large model's cap is 2 × its γ of 1
    assert HeuristicDraft(gamma_max=4).caps((3, 1)) == (4, 4)


@pytest.mark.parametrize("method", ["sd", "cos"])
def test_heuristic_lengthens_runs_when_everything_is_accepted(method):
    fixed = decode(method, identical(), FixedDraft())
    grown = decode(method, identical(), HeuristicDraft())
    assert grown.token_ids == fixed.token_ids and grown.corrections == 0
    assert len(fixed.models[0].drafted_by_position) == 2  # fixed: never past γ = 2
    assert len(grown.models[0].drafted_by_position) == 4  # 2, then 4 = its cap, and it stays there
    assert run_lengths(grown.models[0])[3] >= 5


def test_heuristic_shortens_runs_after_rejections():
    fixed = decode("sd", disagreeing(), FixedDraft(), gammas=(4, 1), temperature=1.0)
    shrunk = decode("sd", disagreeing(), HeuristicDraft(), gammas=(4, 1), temperature=1.0)
    assert fixed.corrections > 0
    # Fixed runs are 4 long except where the token budget cuts the last ones; the heuristic's fall to 1.
    assert run_lengths(fixed.models[0])[0] <= 2 < run_lengths(shrunk.models[0])[0]
    assert shrunk.models[0].mean_draft_length < fixed.models[0].mean_draft_length


# --- confidence ---------------------------------------------------------------------------------


def test_confidence_plan_stops_after_a_draft_below_the_threshold():
    plan = ConfidenceDraft(0.4).start((3, 1), 1.0, alternate=False)
    probs = torch.tensor([0.3, 0.7])
    assert plan.stops_after(probs.log(), probs, torch.tensor(0))
    assert not plan.stops_after(probs.log(), probs, torch.tensor(1))
    # T = 0: the one-hot draft distribution says nothing; the untempered softmax does.
    greedy = ConfidenceDraft(0.4).start((3, 1), 0.0, alternate=False)
    one_hot = torch.tensor([0.0, 1.0, 0.0, 0.0])
    assert greedy.stops_after(torch.tensor([0.0, 0.2, 0.2, 0.2]), one_hot, torch.tensor(1))  # softmax: 0.26
    assert not greedy.stops_after(torch.tensor([0.0, 3.0, 0.0, 0.0]), one_hot, torch.tensor(1))  # softmax: 0.87


@pytest.mark.parametrize("method", ["sd", "cos"])
def test_confidence_cuts_runs_of_an_unsure_drafter_only(method):
    sure = [TableRunner("a", 7, 8, scale=30.0), TableRunner("b", 7, 8, scale=30.0)]  # peaked: its draft's p ≈ 1
    unsure = [TableRunner("a", 7, 8, scale=0.05), TableRunner("b", 7, 8, scale=0.05)]  # flat: p ≈ 1/8 < 0.4
    policy = ConfidenceDraft(0.4)
    assert decode(method, sure, policy, gammas=(3, 1)).models[0].drafted_by_position == (
        decode(method, sure, FixedDraft(), gammas=(3, 1)).models[0].drafted_by_position
    )
    cut = decode(method, unsure, policy, gammas=(3, 1))
    assert len(cut.models[0].drafted_by_position) == 1 and cut.models[0].mean_draft_length == 1.0


# --- auto ---------------------------------------------------------------------------------------


def counters_with(alpha: float, verified: int) -> DraftCounters:
    return DraftCounters(verified=verified, alpha_sum=alpha * verified)


def auto_choice(alpha: float, costs: tuple[float, float], alternate: bool = True, gammas=(5, 1), **policy) -> int:
    plan = AutoDraft(step_costs=costs, **policy).start(gammas, 0.0, alternate)
    return plan.run_length(0, [counters_with(alpha, 20), counters_with(alpha, 20)])


def test_auto_picks_the_gamma_that_maximises_the_papers_speedup():
    for alpha in (0.2, 0.5, 0.8, 0.95):
        for c in (0.05, 0.2, 0.6):
            apf = [apf_speedup(alpha, c, gamma, 1) for gamma in range(1, 11)]
            assert auto_choice(alpha, (c, 1.0)) == 1 + apf.index(max(apf))
            naive = [naive_cos_speedup(alpha, c, gamma) for gamma in range(1, 11)]
            assert auto_choice(alpha, (c, 1.0), alternate=False) == 1 + naive.index(max(naive))


def test_auto_drafts_longer_for_higher_alpha_and_shorter_for_larger_c():
    assert auto_choice(0.9, (0.1, 1.0)) > auto_choice(0.6, (0.1, 1.0)) > auto_choice(0.3, (0.1, 1.0))
    assert auto_choice(0.9, (0.02, 1.0)) > auto_choice(0.9, (0.3, 1.0)) > auto_choice(0.9, (2.0, 1.0)) == 1
    assert auto_choice(1.0, (0.1, 1.0)) == 10  # every draft accepted: its cap, 2 × γ
    assert auto_choice(1.0, (0.1, 1.0), gamma_max=7) == 7


def test_auto_charges_the_measured_pass_cost_and_drafts_shorter_when_passes_are_dear():
    flat = (PassCost((6,), (1.0,)), PassCost((6,), (1.0,)))  # a GPU-like pass: 6 tokens cost one step
    assert auto_choice(0.8, (0.1, 1.0)) == auto_choice(0.8, (0.1, 1.0), pass_costs=flat)
    # CPU-like passes, in model order: the small model verifies 2 tokens (1.3 steps), the large one 6 (3.5 steps).
    dear = (PassCost((2,), (1.3,)), PassCost((6,), (3.5,)))
    for alpha in (0.5, 0.8, 0.95):
        charged = [apf_speedup(alpha, 0.1, gamma, 1, pass_cost=dear[1].at(gamma + 1)) for gamma in range(1, 11)]
        assert auto_choice(alpha, (0.1, 1.0), pass_costs=dear) == 1 + charged.index(max(charged))
    assert auto_choice(0.8, (0.1, 1.0), pass_costs=dear) < auto_choice(0.8, (0.1, 1.0))


def test_pass_cost_interpolates_through_one_step_and_the_measured_pass():
    cost = PassCost(tokens=(6,), ratios=(3.5,))
    assert cost.at(1) == 1.0 and cost.at(6) == 3.5 and cost.at(11) == 6.0
    assert cost.at(3) == pytest.approx(2.0)
    assert PassCost(tokens=(1,), ratios=(1.0,)).at(9) == 1.0  # nothing measured past one token: the paper's one step
    assert PassCost(tokens=(), ratios=()).at(9) == 1.0
    assert PassCost(tokens=(6,), ratios=(0.8,)).at(6) == 1.0  # a pass never costs less than a step


def test_pass_cost_follows_every_measured_length():
    # A CPU-like curve: leaving the single-token kernels costs most of it, later tokens little.
    cost = PassCost(tokens=(2, 4, 6), ratios=(1.5, 1.6, 2.0))
    assert [cost.at(k) for k in (1, 2, 4, 6)] == [1.0, 1.5, 1.6, 2.0]
    assert cost.at(3) == pytest.approx(1.55) and cost.at(5) == pytest.approx(1.8)
    assert cost.at(8) == pytest.approx(2.4)  # past the longest: the last segment's slope
    # One point at 6 would charge 3 tokens 1.4 steps, not the 1.55 measured.
    assert PassCost(tokens=(6,), ratios=(2.0,)).at(3) == pytest.approx(1.4)


def test_pass_cost_never_falls_with_more_tokens():
    # The 1.5B as one calibration timed it: the 6-token pass read dearer than the 7- and 8-token ones.
    measured = (1.41, 1.50, 1.63, 1.66, 1.90, 1.64, 1.62, 1.87, 1.98, 2.08)
    cost = PassCost(tuple(range(2, 12)), measured)
    charged = [cost.at(k) for k in range(1, 13)]
    assert charged == sorted(charged)  # non-decreasing everywhere, the extrapolation included
    assert cost.at(6) == cost.at(7) == cost.at(8) == pytest.approx((1.90 + 1.64 + 1.62) / 3)  # the dip pooled into its mean
    assert [cost.at(k) for k in (2, 3, 4, 5, 9, 10, 11)] == pytest.approx(
        [1.41, 1.50, 1.63, 1.66, 1.87, 1.98, 2.08]
    )  # the rest as measured
    # A GPU's 2-token pass timed a little under one step is pooled with the step, and charged one step.
    assert PassCost((2, 3), (0.96, 1.02)).at(2) == 1.0
    # At α = 0.8 the raw points send auto into the dip (γ = 6, a 7-token pass); charged the fit, it stays at 4.
    raw = [apf_speedup(0.8, 0.35, gamma, 1, pass_cost=measured[gamma - 1]) for gamma in range(1, 11)]
    assert 1 + raw.index(max(raw)) == 6
    assert auto_choice(0.8, (0.35, 1.0), pass_costs=(PassCost((2,), (1.5,)), cost)) == 4


@pytest.mark.parametrize(
    "tokens, ratios",
    [
        ((2, 2), (1.5, 1.6)),
        ((4, 2), (1.6, 1.5)),
        ((0,), (1.0,)),
        ((2,), (1.5, 1.6)),
        ((2,), (math.nan,)),
        ((2,), (math.inf,)),
        ((2,), (0.0,)),
    ],
)
def test_bad_pass_costs_are_a_one_line_error(tokens, ratios):
    with pytest.raises(CosBenchError) as err:
        PassCost(tokens, ratios)
    assert "pass cost" in str(err.value) and "\n" not in str(err.value)


def test_auto_charges_each_length_its_own_pass_cost():
    # The large model's passes as a CPU measures them: dear to leave one token, nearly flat after.
    curve = PassCost(tuple(range(2, 12)), (1.45, 1.5, 1.52, 1.55, 1.6, 1.63, 1.66, 1.7, 1.75, 1.8))
    line = PassCost((6,), (1.6,))  # the same 6-token pass, other lengths drawn through (1, 1)
    for alpha in (0.8, 0.9, 0.95):
        charged = [apf_speedup(alpha, 0.37, gamma, 1, pass_cost=curve.at(gamma + 1)) for gamma in range(1, 11)]
        assert auto_choice(alpha, (0.37, 1.0), pass_costs=(PassCost((3,), (1.2,)), curve)) == 1 + charged.index(max(charged))
    # The line charges short runs too little against long ones, so it drafts shorter than the curve at the same α.
    assert auto_choice(0.9, (0.37, 1.0), pass_costs=(line, line)) < auto_choice(0.9, (0.37, 1.0), pass_costs=(line, curve))


def test_auto_keeps_the_configured_gamma_until_it_has_verdicts_or_costs():
    early = AutoDraft(step_costs=(0.1, 1.0)).start((5, 1), 0.0, alternate=True)
    assert early.run_length(0, [counters_with(0.0, 3), DraftCounters()]) == 5  # 3 < 4 verdicts: the prior
    assert early.run_length(0, [counters_with(0.0, 4), DraftCounters()]) == 1
    uncalibrated = AutoDraft().start((5, 1), 0.0, alternate=True)
    assert uncalibrated.run_length(0, [counters_with(1.0, 50), DraftCounters()]) == 5


# --- marginal -----------------------------------------------------------------------------------


def sure(p: float) -> torch.Tensor:
    """A drafter's logits over 2 tokens with probability `p` on token 0 (the token it drafts at T = 0)."""
    return torch.log(torch.tensor([p, 1 - p]))


def marginal_run(plan, confidences, verdicts=None, alpha=0.7) -> list[bool]:
    """One run of model 0: its length is asked, each confidence drafted in turn (stop decisions
    returned), then `verdicts` (True = accepted) given to its drafts by run position."""
    counters = [counters_with(alpha, 10), DraftCounters()]
    plan.run_length(0, counters)
    run = len(plan.run_bins)
    stops = [plan.stops_after(sure(p), torch.tensor([1.0, 0.0]), torch.tensor(0)) for p in confidences]
    for position, accepted in enumerate(verdicts or (), 1):
        plan.draft_verified(0, run, position, accepted)
    return stops


def test_marginal_learns_which_probabilities_get_rejected_and_stops_after_them():
    # α = 0.7, c = 0.2, one-step passes: auto's best run is γ = 4, at 1.53 tokens per large step.
    plan = MarginalDraft(step_costs=(0.2, 1.0), min_verdicts=1).start((5, 1), 0.0, alternate=True)
    assert auto_choice(0.7, (0.2, 1.0), gammas=(5, 1)) == 4
    for _ in range(6):
        marginal_run(plan, [0.95] * 2, verdicts=[True, True])
        marginal_run(plan, [0.15], verdicts=[False])
    # Drafts it is sure of were accepted, so runs go on through them past auto's 4 (P·α stays above 0.2 × 1.53) ...
    assert marginal_run(plan, [0.95] * 6) == [False] * 6
    # ... and a draft at a probability that was rejected every time ends its run at once.
    assert marginal_run(plan, [0.95, 0.15]) == [False, True]
    # Where probabilities tell nothing (no verdicts at them), P = α^k: the run ends at the first k whose
    # next draft adds α^(k+1) tokens for less than its cost c at the best run's rate (here k = 3).
    fresh = MarginalDraft(step_costs=(0.2, 1.0), min_verdicts=1).start((5, 1), 0.0, alternate=True)
    rate = max(apf_speedup(0.7, 0.2, gamma, 1) for gamma in range(1, 11)) / 1.2
    assert marginal_run(fresh, [0.55] * 6).index(True) + 1 == next(k for k in range(1, 11) if 0.7 ** (k + 1) < rate * 0.2) == 3


def test_marginal_drafts_the_configured_gamma_until_it_has_verdicts_or_costs():
    early = MarginalDraft(step_costs=(0.2, 1.0)).start((5, 1), 0.0, alternate=True)
    assert early.run_length(0, [counters_with(0.7, 3), DraftCounters()]) == 5  # 3 < 4 verdicts
    assert not any(early.stops_after(sure(0.05), torch.tensor([1.0, 0.0]), torch.tensor(0)) for _ in range(5))
    uncalibrated = MarginalDraft().start((5, 1), 0.0, alternate=True)
    assert uncalibrated.run_length(0, [counters_with(0.7, 50), DraftCounters()]) == 5
    assert MarginalDraft(step_costs=(0.2, 1.0)).start((5, 1), 0.0, True).run_length(0, [counters_with(0.7, 50), DraftCounters()]) == 10


@pytest.mark.parametrize("method", ["sd", "cos"])
def test_auto_in_the_engine_follows_the_measured_costs(method):
    # Drafters whose drafts are often rejected (α ≈ 0.5): worth drafting long only when drafting is cheap.
    cheap = decode(method, disagreeing(), AutoDraft(step_costs=(0.05, 1.0)), gammas=(2, 1), temperature=1.0)
    dear = decode(method, disagreeing(), AutoDraft(step_costs=(3.0, 1.0)), gammas=(2, 1), temperature=1.0)
    assert len(cheap.models[0].drafted_by_position) == 4  # up to its cap, 2 × γ
    assert run_lengths(dear.models[0])[0] > 3 * sum(run_lengths(dear.models[0])[1:])  # mostly runs of 1


# --- bookkeeping under variable γ ---------------------------------------------------------------

POLICIES = {name: draft_policy(name, 2, cheap=0.2) for name in ADAPTIVE_POLICIES}


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("method", ["sd", "cos"])
def test_counts_add_up_under_variable_gamma(method, policy):
    for seed in range(5):
        result = decode(method, disagreeing(), POLICIES[policy], gammas=(3, 1), temperature=1.0, seed=seed)
        assert sum(m.accepted + m.bonus_accepted for m in result.models) + result.corrections == len(result.token_ids)
        for m in result.models:
            assert sum(m.drafted_by_position) == m.drafted + m.bonus_drafted
            assert sum(m.accepted_by_position) == m.accepted + m.bonus_accepted
            assert all(a <= d for a, d in zip(m.accepted_by_position, m.drafted_by_position))
            assert list(m.drafted_by_position) == sorted(m.drafted_by_position, reverse=True)  # a run reaching k passed k − 1
            if m.draft_runs:
                assert m.mean_draft_length == pytest.approx(sum(k * n for k, n in enumerate(run_lengths(m), 1)) / m.draft_runs)


@pytest.mark.parametrize("policy", ["heuristic", "auto"])
@pytest.mark.parametrize("method", ["sd", "cos"])
def test_adaptive_lengths_read_nothing_from_the_device_and_keep_feeds_within_the_caps(method, policy, monkeypatch):
    # heuristic and auto decide from verdicts the host already holds: still one read per verified block.
    # And no feed after the prefill is longer than Σ caps + 1 (the compiled engine's largest block).
    import cos_bench.core.speculative as speculative

    blocks = []
    monkeypatch.setattr(speculative, "verify_block", lambda *args: blocks.append(1) or verify_block(*args))
    runners = [FeedRecorder("a", 1), FeedRecorder("b", 2)]
    with HostReads() as reads:
        decode(method, runners, POLICIES[policy], gammas=(3, 2), temperature=1.0)
    assert reads.count == len(blocks) > 0
    assert max(max(r.fed[1:]) for r in runners) <= sum(POLICIES[policy].caps((3, 2))) + 1


def test_confidence_reads_one_probability_per_drafted_token():
    runners = [DeviceOnlyRunner("a", 1), DeviceOnlyRunner("b", 2)]
    with HostReads() as reads:
        result = decode("cos", runners, ConfidenceDraft(0.4), gammas=(3, 2), temperature=1.0)
    blocks = reads.count - result.drafted_tokens
    assert 0 < blocks < len(result.token_ids)


class FeedRecorder(DeviceOnlyRunner):
    def reset(self):
        super().reset()
        self.fed = []

    def feed(self, tokens, keep):
        self.fed.append(tokens.shape[0])
        return super().feed(tokens, keep)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ConfidenceDraft(0.0), "threshold must be in (0, 1)"),
        (lambda: ConfidenceDraft(1.0), "threshold must be in (0, 1)"),
        (lambda: DecodeSettings(WE, 0.0, (5, 1), draft=HeuristicDraft(gamma_max=4)), "gamma_max must be an integer ≥ every"),
        (lambda: DecodeSettings(WE, 0.0, (5, 1), draft=AutoDraft(step_costs=(1.0,))), "one positive step cost per model"),
        (lambda: DecodeSettings(WE, 0.0, (5, 1), draft=AutoDraft(step_costs=(0.0, 1.0))), "one positive step cost per model"),
        (lambda: DecodeSettings(WE, 0.0, (5, 1), draft=AutoDraft(min_verdicts=0)), "min_verdicts"),
    ],
)
def test_bad_policies_give_one_line_errors(make, message):
    with pytest.raises(CosBenchError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        make()
    assert "\n" not in str(caught.value)


def test_a_plan_is_fresh_for_every_decode():
    # Heuristic state must not leak from one decode into the next (decodes are independent records).
    first = decode("sd", identical(), HeuristicDraft())
    second = decode("sd", identical(), HeuristicDraft())
    assert first.models[0].drafted_by_position == second.models[0].drafted_by_position
    assert isinstance(FixedDraft().start((2, 1), 0.0, alternate=False), DraftPlan)
