"""The paper's speedup formulas (docs/design.md §4), as pure functions.

Vocabulary: `alpha` is the per-token acceptance rate α = Σ_x min(draft(x), combined(x));
`c` is (time of one proposer call) / (time of one verifier call); `gamma` is how many
tokens a model drafts per turn. The report prints these beside the measured speedup
(`cos_bench.theory`), and the `auto` draft policy maximises them (`core/drafting.py`).

Both theorems charge the verifier's (γ+1)-token pass as one single-token call. Beside
them, the same expectation with that pass's measured cost `pass_cost`
ρ = t_verifier(γ_q + 1 tokens) / t_verifier(1 token) in place of that 1 (docs/design.md §4);
ρ = 1 gives the paper's numbers.
"""

from __future__ import annotations

import math

from cos_bench.errors import CosBenchError


def naive_cos_speedup(alpha: float, c: float, gamma: int, pass_cost: float = 1) -> float:
    """Thm 3.1: S = (1 − α^γ)(1 + c) / ((1 − α)(1 + cγ)).

    With the verifier's (γ+1)-token pass charged its measured cost ρ = `pass_cost` calls
    instead of one, the same expectation reads E(1 + c)/(ρ + cγ), E = (1 − α^γ)/(1 − α);
    the default ρ = 1 is the paper's formula.
    """
    _check_inputs(alpha, c, gamma=gamma)
    _check_pass_cost(pass_cost)
    return expected_run_length(alpha, gamma) * (1 + c) / (pass_cost + c * gamma)


def apf_speedup(alpha: float, c: float, gamma_q: int, gamma_p: int, pass_cost: float = 1) -> float:
    """Thm 3.6: S = (1 − α^γq)(1 + c) / ((1 − α)(1 + cγq − α^γp·c)).

    `gamma_q` is the default proposer's γ, `gamma_p` the verifier's (its bonus run length).
    With the verifier's (γq+1)-token pass charged its measured cost ρ = `pass_cost` calls:
    E(1 + c)/(ρ + cγq − α^γp·c); the default ρ = 1 is the paper's formula.
    """
    _check_inputs(alpha, c, gamma_q=gamma_q, gamma_p=gamma_p)
    _check_pass_cost(pass_cost)
    denominator = pass_cost + c * gamma_q - alpha**gamma_p * c  # > 0: α^γp·c ≤ c ≤ cγq ≤ ρ + cγq
    return expected_run_length(alpha, gamma_q) * (1 + c) / denominator


# Past 2^64 drafted tokens α^γ is 0.0 for every float α < 1 (the largest is 1 − 2^-53), so a
# longer γ changes nothing, and capping it keeps γ·ln α a float for any integer γ.
_GAMMA_SATURATION = 2**64


def expected_run_length(alpha: float, gamma: int) -> float:
    """E = Σ_{i<γ} α^i = (1 − α^γ)/(1 − α), in closed form (O(1) in γ); the limit γ at α = 1.

    1 − α^γ is computed as −expm1(γ·ln α), which keeps its digits when α is near 1 (where
    1 − α^γ would cancel); 1 − α is exact there.
    """
    if alpha == 1:
        return float(gamma)
    if alpha == 0:
        return 1.0  # only the first draft counts: 0^0 = 1 (and ln 0 is undefined)
    return -math.expm1(min(gamma, _GAMMA_SATURATION) * math.log(alpha)) / (1 - alpha)


def _check_inputs(alpha: float, c: float, **gammas: int) -> None:
    # NaN fails every comparison, so `not (0 <= alpha <= 1)` also rejects it.
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise CosBenchError(f"theory: alpha must be an acceptance rate in [0, 1] (got {alpha!r}); pass the measured α")
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not (0 < c < math.inf):
        raise CosBenchError(f"theory: c must be a positive finite cost ratio (got {c!r}); pass proposer-call time / verifier-call time")
    for key, gamma in gammas.items():
        if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
            raise CosBenchError(f"theory: {key} must be an integer ≥ 1 (got {gamma!r}); pass the draft length used")


def _check_pass_cost(pass_cost: float) -> None:
    if isinstance(pass_cost, bool) or not isinstance(pass_cost, (int, float)) or not (0 < pass_cost < math.inf):
        raise CosBenchError(
            f"theory: pass_cost must be a positive finite ratio (got {pass_cost!r}); "
            "pass the verifier's measured (γ+1)-token pass time / its single-step time"
        )
