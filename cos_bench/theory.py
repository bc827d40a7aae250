"""The paper's predicted speedup for a report row (docs/design.md §4).

The formulas themselves (Thm 3.1, Thm 3.6, with the measured pass cost ρ) live in the core,
`core/speedup.py`, because the `auto` draft policy maximises them while decoding; this module
picks the one that applies to a method and its models. The paper gives formulas only for two
models; for anything else `theoretical_speedup` returns None (printed as "n/a") rather than an
invented extrapolation.
"""

from __future__ import annotations

from collections.abc import Sequence

from cos_bench.core.speedup import apf_speedup, expected_run_length, naive_cos_speedup
from cos_bench.errors import CosBenchError
from cos_bench.methods import METHOD_NAMES, WRAPPED_METHODS

KNOWN_METHODS = METHOD_NAMES  # the registry's names (cos_bench.methods); metrics reads them from here
_expected_run_length = expected_run_length  # the name the tests have always used

__all__ = ["KNOWN_METHODS", "apf_speedup", "naive_cos_speedup", "theoretical_speedup"]


def theoretical_speedup(
    method: str,
    n_models: int,
    alpha: float | None,
    c: float | None,
    gammas: Sequence[int],
    *,
    proposer_index: int = 0,
    pass_cost: float | None = None,
) -> float | None:
    """The paper's predicted speedup over vanilla for one method, or None where it has no formula.

    `gammas` is aligned with the models; `proposer_index` says which one is the default
    proposer (the drafter for "sd"). "sd" uses Thm 3.1, "cos" with two models Thm 3.6,
    "vanilla" is 1 by definition. n > 2 models, the wrapped hf-ensemble variants, or an unmeasured α or c
    give None: the paper has no formula for them and we do not make one up.
    With `pass_cost` ρ (the verifier's measured (γq+1)-token pass / its single step) the
    same expectation is evaluated with that measured pass cost; None = as the paper states it.
    """
    if method not in KNOWN_METHODS:
        raise CosBenchError(f"theory: unknown method {method!r}; use one of {', '.join(KNOWN_METHODS)}")
    if method == "vanilla":
        return 1.0
    if method in WRAPPED_METHODS or n_models != 2 or alpha is None or c is None:
        return None
    if len(gammas) != n_models or not 0 <= proposer_index < n_models:
        raise CosBenchError(
            f"theory: need one gamma per model and a proposer index below {n_models} "
            f"(got gammas={list(gammas)}, proposer_index={proposer_index}); pass them aligned with the models"
        )
    gamma_q = gammas[proposer_index]
    rho = 1 if pass_cost is None else pass_cost  # None: as the paper states it
    if method == "sd":
        return naive_cos_speedup(alpha, c, gamma_q, rho)
    return apf_speedup(alpha, c, gamma_q, gammas[1 - proposer_index], rho)
