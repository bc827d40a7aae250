"""Sampling exactness: `sd` and `cos` samples are distributed exactly as vanilla
collaborative decoding.

Vocabulary of 6 tokens, 3 generated tokens: the exact distribution of vanilla
decoding over all 216 sequences is computed by enumeration from the models'
logits and the combination rule, and 20,000 samples of each method are
compared with it by a chi-square test at a fixed seed. A deliberately wrong
verifier (targeting the drafter's own distribution) must fail the same test. Both run under
every draft-length policy (core/drafting.py) too.

The table-driven models make 20,000 samples cheap; the same test then runs, with
fewer samples, on real tiny Hugging Face models behind both runners (eager, and the
compiled engine's static cache run uncompiled), wrong-verifier control included.
"""

from __future__ import annotations

import collections
import functools
import itertools

import pytest
import torch
from scipy.stats import chisquare
from tiny import ADAPTIVE_POLICIES, ENGINES, TableRunner, draft_policy, make_runner, tiny_llama

from cos_bench.core import (
    CORE_METHODS,
    CombinationRule,
    Contrastive,
    DecodeSettings,
    DraftPolicy,
    StopRule,
    WeightedEnsemble,
)

VOCAB = 6
NEW_TOKENS = 3
POLICY_TOKENS = 4  # room for an adaptive policy to act after a first verdict (1,296 sequences)
SAMPLES = 20_000
PROMPT = (0, 4)
TEMPERATURE = 1.0


def make_runners(n: int) -> list[TableRunner]:
    # Distinct seeds: models that disagree, so drafts are often rejected and residuals matter.
    return [TableRunner(f"m{i}", seed=100 + i, vocab=VOCAB) for i in range(n)]


def exact_distribution(runners, rule: CombinationRule, tokens: int = NEW_TOKENS) -> dict[tuple[int, ...], float]:
    """P(sequence) under vanilla collaborative decoding, by enumeration."""
    probs = {}
    for seq in itertools.product(range(VOCAB), repeat=tokens):
        p = 1.0
        for t in range(tokens):
            prefix = PROMPT + seq[:t]
            combined = rule.combine([logits_for(r, prefix) for r in runners], TEMPERATURE)
            p *= float(combined[seq[t]])
        probs[seq] = p
    return probs


def logits_for(runner, prefix: tuple[int, ...]) -> torch.Tensor:
    """A model's next-token logits after `prefix`, computed without its cache."""
    if isinstance(runner, TableRunner):
        return runner.logits_for(prefix)
    return _full_forward(runner.model, prefix)


@functools.cache
def _full_forward(model, prefix: tuple[int, ...]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([prefix])).logits[0, -1, :VOCAB]


def chi_square_pvalue(samples: collections.Counter, expected: dict[tuple[int, ...], float]) -> float:
    """Chi-square goodness of fit; cells with expected count < 5 are pooled into one."""
    n = sum(samples.values())
    observed_counts, expected_counts = [], []
    pooled_obs = pooled_exp = 0.0
    for seq, p in expected.items():
        if p * n >= 5:
            observed_counts.append(samples.get(seq, 0))
            expected_counts.append(p * n)
        else:
            pooled_obs += samples.get(seq, 0)
            pooled_exp += p * n
    observed_counts.append(pooled_obs)
    expected_counts.append(pooled_exp)
    return float(chisquare(observed_counts, expected_counts).pvalue)


def draw(
    method: str, runners, settings: DecodeSettings, seed: int, samples: int = SAMPLES, drafts: list | None = None, tokens: int = NEW_TOKENS
) -> collections.Counter:
    """Counts of each generated sequence; `drafts`, if given, collects every decode's drafts per position per model."""
    generator = torch.Generator().manual_seed(seed)
    stop = StopRule(tokens)
    prompt = torch.tensor(PROMPT)
    counts = collections.Counter()
    for _ in range(samples):
        result = CORE_METHODS[method](runners, prompt, settings, stop, generator)
        counts[result.token_ids] += 1
        if drafts is not None:
            drafts.append(tuple(m.drafted_by_position for m in result.models))
    return counts


class DrafterOnly(CombinationRule):
    """A wrong verifier: targets model 0's own distribution instead of the combination."""

    def __init__(self, n_models: int):
        self.n_models = n_models

    def combined_probs(self, logits, temperature):
        return torch.softmax(logits[0] / temperature, dim=-1)


SETTINGS = {
    "we-0.5": (lambda: WeightedEnsemble([0.5, 0.5]), (2, 1)),
    "cd-0.5": (lambda: Contrastive(0.5, expert_index=1, amateur_index=0), (2, 1)),
    "we3": (lambda: WeightedEnsemble([0.5, 0.3, 0.2]), (2, 1, 1)),
}


@pytest.mark.parametrize("method", ["cos", "sd"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_samples_match_vanilla_distribution(setting, method):
    make_rule, gammas = SETTINGS[setting]
    runners = make_runners(len(gammas))
    expected = exact_distribution(runners, make_rule())
    assert sum(expected.values()) == pytest.approx(1.0, abs=1e-9)
    counts = draw(method, runners, DecodeSettings(make_rule(), TEMPERATURE, gammas), seed=1234)
    assert chi_square_pvalue(counts, expected) > 1e-3


def test_wrong_verifier_fails_the_same_test():
    make_rule, gammas = SETTINGS["we-0.5"]
    runners = make_runners(2)
    expected = exact_distribution(runners, make_rule())
    counts = draw("cos", runners, DecodeSettings(DrafterOnly(2), TEMPERATURE, gammas), seed=1234)
    assert chi_square_pvalue(counts, expected) < 1e-6


def test_vanilla_itself_matches_enumeration():
    # The reference implementation against its own definition (fewer samples: it is the baseline).
    make_rule, gammas = SETTINGS["cd-0.5"]
    runners = make_runners(2)
    expected = exact_distribution(runners, make_rule())
    counts = draw("vanilla", runners, DecodeSettings(make_rule(), TEMPERATURE, gammas), seed=99)
    assert chi_square_pvalue(counts, expected) > 1e-3


REAL_SAMPLES = 4_000


@functools.cache
def real_models(n: int) -> tuple:
    # Peaked (wide-init) random models over the 6-token vocabulary: they disagree, so drafts are rejected.
    return tuple(tiny_llama(200 + i, VOCAB, init=1.0) for i in range(n))


def real_runners(engine: str, n: int) -> list:
    return [make_runner(engine, f"m{i}", model, VOCAB, capacity=16, max_block=4) for i, model in enumerate(real_models(n))]


# CD as well as WE: CD's combined logits can be negative-weighted and far from either model's, the
# case the committed GSM8K CD T = 1 quality swing (results/cpu-draft-grid-2) asked about.
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("method", ["cos", "sd"])
@pytest.mark.parametrize("setting", ["we-0.5", "cd-0.5"])
def test_real_model_samples_match_vanilla_distribution(setting, method, engine):
    make_rule, gammas = SETTINGS[setting]
    runners = real_runners(engine, 2)
    expected = exact_distribution(runners, make_rule())
    counts = draw(method, runners, DecodeSettings(make_rule(), TEMPERATURE, gammas), seed=4321, samples=REAL_SAMPLES)
    assert chi_square_pvalue(counts, expected) > 1e-3


@pytest.mark.parametrize("engine", ENGINES)
def test_real_model_wrong_verifier_fails(engine):
    make_rule, gammas = SETTINGS["we-0.5"]
    runners = real_runners(engine, 2)
    expected = exact_distribution(runners, make_rule())
    counts = draw("cos", runners, DecodeSettings(DrafterOnly(2), TEMPERATURE, gammas), seed=4321, samples=REAL_SAMPLES)
    assert chi_square_pvalue(counts, expected) < 1e-6


# --- every draft-length policy ------------------------------------------------------------------


def policy(name: str, n: int) -> DraftPolicy:
    return draft_policy(name, n, cheap=0.1)


def policy_draw(method: str, setting: str, name: str, rule: CombinationRule | None = None) -> collections.Counter:
    """20,000 samples of POLICY_TOKENS tokens under the policy; first checks on 500 decodes that it
    drafts differently from fixed. confidence, which can only shorten runs, starts from the setting's γ;
    heuristic and auto from γ = 1, so that lengthening a run shows within POLICY_TOKENS tokens."""
    make_rule, gammas = SETTINGS[setting]
    gammas = gammas if name == "confidence" else (1,) * len(gammas)
    runners = make_runners(len(gammas))
    settings = {p: DecodeSettings(rule or make_rule(), TEMPERATURE, gammas, draft=policy(p, len(gammas))) for p in ("fixed", name)}
    adapted, fixed = [], []
    draw(method, runners, settings[name], seed=77, samples=500, drafts=adapted, tokens=POLICY_TOKENS)
    draw(method, runners, settings["fixed"], seed=77, samples=500, drafts=fixed, tokens=POLICY_TOKENS)
    assert adapted != fixed, f"{name} drafted exactly as fixed: the test would test nothing"
    return draw(method, runners, settings[name], seed=1234, tokens=POLICY_TOKENS)


@pytest.mark.parametrize("name", ADAPTIVE_POLICIES)
@pytest.mark.parametrize("method", ["cos", "sd"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_every_draft_policy_samples_match_vanilla_distribution(setting, method, name):
    make_rule, gammas = SETTINGS[setting]
    expected = exact_distribution(make_runners(len(gammas)), make_rule(), POLICY_TOKENS)
    assert chi_square_pvalue(policy_draw(method, setting, name), expected) > 1e-3


@pytest.mark.parametrize("name", ADAPTIVE_POLICIES)
def test_wrong_verifier_fails_under_every_draft_policy(name):
    make_rule, _ = SETTINGS["we-0.5"]
    expected = exact_distribution(make_runners(2), make_rule(), POLICY_TOKENS)
    assert chi_square_pvalue(policy_draw("cos", "we-0.5", name, rule=DrafterOnly(2)), expected) < 1e-6
