"""The paper's speedup formulas: hand-computed values, limits and Cor 3.7; and the same with a measured pass cost."""

import math
import threading

import pytest

from cos_bench.errors import CosBenchError
from cos_bench.theory import (
    _expected_run_length,
    apf_speedup,
    naive_cos_speedup,
    theoretical_speedup,
)

ALPHAS = [i / 20 for i in range(21)]  # 0, 0.05, ..., 1 — both ends included
CS = [0.01, 0.05, 0.1, 0.2, 0.5, 1.0]


def test_naive_cos_hand_computed():
    # α=0.5, c=0.2, γ=5: (1 − 0.5^5)(1.2) / ((0.5)(1 + 1.0)) = 0.96875·1.2 / 1.0 = 1.1625
    assert naive_cos_speedup(0.5, 0.2, 5) == pytest.approx(1.1625)
    # α=0.8, c=0.1, γ=3: (1 − 0.512)(1.1) / ((0.2)(1.3)) = 0.5368 / 0.26 = 2.0646...
    assert naive_cos_speedup(0.8, 0.1, 3) == pytest.approx(0.5368 / 0.26)


def test_apf_hand_computed():
    # α=0.5, c=0.2, γq=5, γp=1: 0.96875·1.2 / (0.5·(1 + 1.0 − 0.5·0.2)) = 1.1625 / 0.95
    assert apf_speedup(0.5, 0.2, 5, 1) == pytest.approx(1.1625 / 0.95)
    # α=0.8, c=0.1, γq=3, γp=2: 0.488·1.1 / (0.2·(1 + 0.3 − 0.64·0.1)) = 0.5368 / 0.2472
    assert apf_speedup(0.8, 0.1, 3, 2) == pytest.approx(0.5368 / 0.2472)


@pytest.mark.parametrize("alpha", [a for a in ALPHAS if a < 1])
@pytest.mark.parametrize("gamma", [1, 2, 5, 8])
def test_geometric_sum_matches_closed_form_below_one(alpha, gamma):
    c = 0.3
    closed_naive = (1 - alpha**gamma) * (1 + c) / ((1 - alpha) * (1 + c * gamma))
    closed_apf = (1 - alpha**gamma) * (1 + c) / ((1 - alpha) * (1 + c * gamma - alpha**2 * c))
    assert naive_cos_speedup(alpha, c, gamma) == pytest.approx(closed_naive, rel=1e-12)
    assert apf_speedup(alpha, c, gamma, 2) == pytest.approx(closed_apf, rel=1e-12)


def test_alpha_one_is_the_limit():
    # (1 − α^γ)/(1 − α) → γ: naive γ=5, c=0.2 → 5·1.2 / 2.0 = 3.0
    assert naive_cos_speedup(1.0, 0.2, 5) == pytest.approx(3.0)
    # APF γq=5, γp=1, c=0.2 → 5·1.2 / (1 + 1.0 − 0.2) = 6 / 1.8
    assert apf_speedup(1.0, 0.2, 5, 1) == pytest.approx(6 / 1.8)
    # and it is continuous: α just below 1 gives nearly the same value
    assert naive_cos_speedup(1 - 1e-9, 0.2, 5) == pytest.approx(3.0, rel=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 1e-300, 0.05, 0.5, 0.9, 0.999, 1 - 1e-9, 1 - 2**-40, 1 - 2**-52, 1.0])
@pytest.mark.parametrize("gamma", [1, 2, 3, 5, 17, 100, 1000])
def test_expected_run_length_is_the_sum_in_closed_form(alpha, gamma):
    assert _expected_run_length(alpha, gamma) == pytest.approx(math.fsum(alpha**i for i in range(gamma)), rel=1e-13)


def finishes_within(seconds: float, call):
    result = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, f"still running after {seconds} s"
    return result[0]


def test_a_huge_gamma_returns_at_once():
    # The expectation saturates at 1/(1 − α); summing 10^20 terms would never finish.
    assert finishes_within(5, lambda: _expected_run_length(0.5, 10**20)) == 2.0
    assert finishes_within(5, lambda: _expected_run_length(1 - 2**-40, 10**20)) == pytest.approx(2**40, rel=1e-12)
    assert finishes_within(5, lambda: _expected_run_length(1.0, 10**20)) == 1e20
    assert finishes_within(5, lambda: _expected_run_length(0.5, 10**400)) == 2.0  # past any float
    assert finishes_within(5, lambda: naive_cos_speedup(0.5, 0.2, 10**20)) == pytest.approx(2 * 1.2 / (1 + 0.2e20))


def test_alpha_zero():
    # nothing is ever accepted: one token per round, costing 1 + cγ instead of 1 + c
    assert naive_cos_speedup(0.0, 0.2, 5) == pytest.approx(1.2 / 2.0)
    assert apf_speedup(0.0, 0.2, 5, 3) == pytest.approx(1.2 / 2.0)  # α^γp = 0: no bonus gain
    assert naive_cos_speedup(0.0, 0.2, 1) == pytest.approx(1.0)
    assert apf_speedup(0.0, 0.2, 1, 1) == pytest.approx(1.0)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_naive_with_gamma_one_is_exactly_vanilla(alpha):
    assert naive_cos_speedup(alpha, 0.37, 1) == pytest.approx(1.0)


def test_cor_3_7_apf_with_gamma_one_never_slower():
    for alpha in ALPHAS:
        for c in CS:
            assert apf_speedup(alpha, c, 1, 1) >= 1 - 1e-12, (alpha, c)


def test_naive_cos_can_be_slower_so_cor_3_7_is_not_vacuous():
    # low acceptance and a relatively costly proposer: Naive-CoS with γ=5 loses.
    # α=0.2, c=0.5: (1 − 0.2^5)/0.8 · 1.5 / 3.5 = 1.2496 · 1.5 / 3.5 ≈ 0.536
    assert naive_cos_speedup(0.2, 0.5, 5) == pytest.approx(1.2496 * 1.5 / 3.5)
    assert naive_cos_speedup(0.2, 0.5, 5) < 1
    slower = [(a, c) for a in ALPHAS for c in CS if naive_cos_speedup(a, c, 5) < 1]
    assert len(slower) > 10


def test_theoretical_speedup_dispatch():
    assert theoretical_speedup("vanilla", 2, None, None, [5, 1]) == 1.0
    assert theoretical_speedup("vanilla", 3, None, None, [1, 1, 1]) == 1.0
    assert theoretical_speedup("sd", 2, 0.5, 0.2, [5, 1]) == pytest.approx(naive_cos_speedup(0.5, 0.2, 5))
    assert theoretical_speedup("cos", 2, 0.5, 0.2, [5, 1]) == pytest.approx(apf_speedup(0.5, 0.2, 5, 1))
    # the default proposer need not be listed first
    assert theoretical_speedup("cos", 2, 0.5, 0.2, [1, 5], proposer_index=1) == pytest.approx(apf_speedup(0.5, 0.2, 5, 1))
    assert theoretical_speedup("sd", 2, 0.5, 0.2, [1, 5], proposer_index=1) == pytest.approx(naive_cos_speedup(0.5, 0.2, 5))


@pytest.mark.parametrize(
    "method, n, alpha, c",
    [
        ("cos", 3, 0.5, 0.2),  # the paper has no n-model formula
        ("sd", 3, 0.5, 0.2),
        ("hf-ensemble", 2, 0.5, 0.2),
        ("cos", 2, None, 0.2),  # α not measured
        ("sd", 2, 0.5, None),  # c not measured
    ],
)
def test_theoretical_speedup_is_none_without_a_formula(method, n, alpha, c):
    assert theoretical_speedup(method, n, alpha, c, [1] * n) is None


@pytest.mark.parametrize(
    "call",
    [
        lambda: naive_cos_speedup(-0.1, 0.2, 5),
        lambda: naive_cos_speedup(1.1, 0.2, 5),
        lambda: naive_cos_speedup(math.nan, 0.2, 5),
        lambda: naive_cos_speedup(0.5, 0.0, 5),
        lambda: naive_cos_speedup(0.5, -1.0, 5),
        lambda: naive_cos_speedup(0.5, math.inf, 5),
        lambda: naive_cos_speedup(0.5, 0.2, 0),
        lambda: naive_cos_speedup(0.5, 0.2, 2.0),
        lambda: apf_speedup(0.5, 0.2, 5, 0),
        lambda: apf_speedup(0.5, 0.2, True, 1),
        lambda: theoretical_speedup("medusa", 2, 0.5, 0.2, [5, 1]),
        lambda: theoretical_speedup("cos", 2, 0.5, 0.2, [5]),
        lambda: theoretical_speedup("cos", 2, 0.5, 0.2, [5, 1], proposer_index=2),
    ],
)
def test_bad_inputs_raise(call):
    with pytest.raises(CosBenchError):
        call()


# --- the same expectation with the verifier's measured (γq+1)-token pass cost ρ -------------------


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("c", CS)
@pytest.mark.parametrize("gamma", [1, 2, 5])
def test_pass_cost_one_is_the_paper(alpha, c, gamma):
    # The paper's formulas, written out: ρ = 1 must give exactly them.
    run = gamma if alpha == 1 else (1 - alpha**gamma) / (1 - alpha)
    assert naive_cos_speedup(alpha, c, gamma, 1.0) == pytest.approx(run * (1 + c) / (1 + c * gamma), rel=1e-12)
    assert apf_speedup(alpha, c, gamma, 2, 1.0) == pytest.approx(run * (1 + c) / (1 + c * gamma - alpha**2 * c), rel=1e-12)
    assert naive_cos_speedup(alpha, c, gamma, 1.0) == naive_cos_speedup(alpha, c, gamma)
    assert theoretical_speedup("cos", 2, alpha, c, [gamma, 2], pass_cost=1.0) == apf_speedup(alpha, c, gamma, 2)


def test_measured_pass_hand_computed():
    # α=0.5, c=0.2, γ=5, ρ=3.2 (a 6-token pass costing 3.2 steps): 0.96875·1.2 / (0.5·(3.2 + 1.0))
    assert naive_cos_speedup(0.5, 0.2, 5, 3.2) == pytest.approx(1.1625 / (0.5 * 4.2))
    # APF, γq=5, γp=1, ρ=2: 0.96875·1.2 / (0.5·(2 + 1.0 − 0.5·0.2))
    assert apf_speedup(0.5, 0.2, 5, 1, 2.0) == pytest.approx(1.1625 / (0.5 * 2.9))
    # ρ < 1 (a pass cheaper than a step, as on an H200): 0.96875·1.2 / (0.5·(0.9 + 1.0))
    assert naive_cos_speedup(0.5, 0.2, 5, 0.9) == pytest.approx(1.1625 / (0.5 * 1.9))


def test_a_costlier_pass_predicts_less():
    for rule in (
        lambda rho: naive_cos_speedup(0.7, 0.25, 3, rho),
        lambda rho: apf_speedup(0.7, 0.25, 3, 1, rho),
    ):
        predictions = [rule(rho) for rho in (0.5, 1.0, 1.5, 3.2, 10.0)]
        assert all(a > b for a, b in zip(predictions, predictions[1:])), predictions


def test_dispatch_with_pass_cost():
    assert theoretical_speedup("sd", 2, 0.5, 0.2, [5, 1], pass_cost=3.2) == pytest.approx(1.1625 / (0.5 * 4.2))
    assert theoretical_speedup("cos", 2, 0.5, 0.2, [1, 5], proposer_index=1, pass_cost=2.0) == pytest.approx(1.1625 / (0.5 * 2.9))
    assert theoretical_speedup("vanilla", 2, None, None, [5, 1], pass_cost=3.2) == 1.0
    assert theoretical_speedup("cos", 3, 0.5, 0.2, [1, 1, 1], pass_cost=2.0) is None  # no n-model formula
    assert theoretical_speedup("hf-ensemble", 2, 0.5, 0.2, [5, 1], pass_cost=2.0) is None


@pytest.mark.parametrize("rho", [0.0, -1.0, math.nan, math.inf, True, "2"])
def test_bad_pass_cost_is_a_one_line_error(rho):
    for call in (
        lambda: naive_cos_speedup(0.5, 0.2, 5, rho),
        lambda: apf_speedup(0.5, 0.2, 5, 1, rho),
        lambda: theoretical_speedup("sd", 2, 0.5, 0.2, [5, 1], pass_cost=rho),
    ):
        with pytest.raises(CosBenchError) as err:
            call()
        assert "pass_cost" in str(err.value) and "\n" not in str(err.value)
