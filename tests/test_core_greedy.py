"""Greedy exactness: `sd` and `cos` emit token-identical output to `vanilla`.

Real (tiny, random, float64) Hugging Face models, so the KV-cache paths —
multi-token scoring, lagging caches, cropping after rejections — are the ones
used on real models, behind both runners: eager with a DynamicCache, and the
compiled engine's StaticCache runner (run uncompiled here). Two kinds of drafter: identical to the verifier (every
draft accepted) and an independent random model (frequent rejections). Every draft-length policy
(core/drafting.py) is run through the same check.
"""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
from tiny import ADAPTIVE_POLICIES, ENGINES, draft_policy, make_runner, tiny_llama

from cos_bench.core import (
    CORE_METHODS,
    Contrastive,
    DecodeSettings,
    DraftPolicy,
    StopRule,
    WeightedEnsemble,
)

VOCAB = 64
NEW_TOKENS = 20
PROMPTS = ((1, 2, 3), (7, 7, 7, 7, 7, 7), (40, 3, 18, 22, 9, 1, 60, 33))
MODEL_SEEDS = ((10, 11, 12), (20, 21, 22))  # two independent families of random models

RULES = {
    "we-0.2": lambda: WeightedEnsemble([0.2, 0.8]),
    "we-0.5": lambda: WeightedEnsemble([0.5, 0.5]),
    "we-0.8": lambda: WeightedEnsemble([0.8, 0.2]),
    "cd-0.1": lambda: Contrastive(0.1, expert_index=1, amateur_index=0),
    "cd-0.5": lambda: Contrastive(0.5, expert_index=1, amateur_index=0),
    "we3": lambda: WeightedEnsemble([1 / 3, 1 / 3, 1 / 3]),
}


@functools.cache
def model(seed: int):
    return tiny_llama(seed, VOCAB)


def runners(kind: str, family: tuple[int, ...], n: int, engine: str = "eager") -> list:
    # "identical": every role is the same weights (each with its own cache) — all drafts accepted.
    seeds = family[:n] if kind == "random" else (family[0],) * n
    return [make_runner(engine, f"m{i}", model(seed), VOCAB) for i, seed in enumerate(seeds)]


@functools.cache
def vanilla_ids(rule: str, kind: str, family: tuple[int, ...], prompt: tuple[int, ...]) -> tuple[int, ...]:
    n = RULES[rule]().n_models
    settings = DecodeSettings(RULES[rule](), 0.0, (1,) * n)
    result = CORE_METHODS["vanilla"](runners(kind, family, n), torch.tensor(prompt), settings, StopRule(NEW_TOKENS))
    assert len(result.token_ids) == NEW_TOKENS
    return result.token_ids


CASES = list(itertools.product(RULES, (1, 3, 5), (1, 2), (0, 1), ("random", "identical")))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("rule,gamma_small,gamma_large,proposer,kind", CASES)
def test_greedy_identical_to_vanilla(rule, gamma_small, gamma_large, proposer, kind, engine):
    n = RULES[rule]().n_models
    gammas = (gamma_small,) + (gamma_large,) * (n - 1)
    settings = DecodeSettings(RULES[rule](), 0.0, gammas, proposer)
    rejections = 0
    for family, prompt in itertools.product(MODEL_SEEDS, PROMPTS):
        expected = vanilla_ids(rule, kind, family, prompt)
        for method in ("sd", "cos"):
            result = CORE_METHODS[method](runners(kind, family, n, engine), torch.tensor(prompt), settings, StopRule(NEW_TOKENS))
            assert result.token_ids == expected, f"{method} ({engine}) diverged from vanilla on prompt {prompt}, models {family}"
            rejections += result.corrections
    if kind == "identical":
        assert rejections == 0
    else:
        # Not vacuous: the random drafters were really rejected along the way.
        assert rejections > 0


def test_case_grid_size():
    # 6 rules × 3 small γ × 2 large γ × 2 proposers × 2 drafter kinds, each over 6 prompt/model pairs,
    # for each of the 2 runners.
    assert len(CASES) == 144 and len(ENGINES) == 2


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("rule", ["we-0.5", "we3"])
def test_vanilla_is_the_same_on_both_runners(rule, engine):
    # The reference itself does not depend on the runner: static-cache vanilla equals eager vanilla.
    n = RULES[rule]().n_models
    settings = DecodeSettings(RULES[rule](), 0.0, (1,) * n)
    for family, prompt in itertools.product(MODEL_SEEDS, PROMPTS):
        result = CORE_METHODS["vanilla"](runners("random", family, n, engine), torch.tensor(prompt), settings, StopRule(NEW_TOKENS))
        assert result.token_ids == vanilla_ids(rule, "random", family, prompt)


# --- every draft-length policy ------------------------------------------------------------------


def policy(name: str, n: int) -> DraftPolicy:
    return draft_policy(name, n, cheap=0.2)


POLICY_GAMMAS = (3, 2)  # small, every other model: both may move under an adaptive policy
POLICY_CASES = list(itertools.product(ADAPTIVE_POLICIES, RULES, (0, 1), ("random", "identical")))


@functools.cache
def schedule(name: str, rule: str, kind: str, family: tuple[int, ...], prompt: tuple[int, ...], proposer: int, method: str, engine: str):
    """(ids, drafts per position of every model) of one greedy decode under policy `name`."""
    n = RULES[rule]().n_models
    gammas = POLICY_GAMMAS[:1] + POLICY_GAMMAS[1:] * (n - 1)
    settings = DecodeSettings(RULES[rule](), 0.0, gammas, proposer, draft=policy(name, n))
    result = CORE_METHODS[method](runners(kind, family, n, engine), torch.tensor(prompt), settings, StopRule(NEW_TOKENS))
    return result.token_ids, tuple(m.drafted_by_position for m in result.models)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name,rule,proposer,kind", POLICY_CASES)
def test_every_draft_policy_is_greedy_identical_to_vanilla(name, rule, proposer, kind, engine):
    changed = 0
    for family, prompt, method in itertools.product(MODEL_SEEDS, PROMPTS, ("sd", "cos")):
        ids, drafts = schedule(name, rule, kind, family, prompt, proposer, method, engine)
        assert ids == vanilla_ids(rule, kind, family, prompt), f"{name} {method} ({engine}) diverged on prompt {prompt}, models {family}"
        changed += drafts != schedule("fixed", rule, kind, family, prompt, proposer, method, engine)[1]
    assert changed > 0, f"{name} drafted exactly as fixed everywhere: the case tests nothing"
