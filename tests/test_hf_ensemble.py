"""The `hf-ensemble` peer baseline on two tiny random models (no downloads)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from cos_bench.core import Contrastive, DecodeSettings, StopRule, WeightedEnsemble
from cos_bench.errors import CosBenchError
from cos_bench.methods import DecodeContext, get_method
from cos_bench.methods.hf_ensemble import hf_ensemble_decode

VOCAB = 48
EOS = 3


def tiny_llama(seed: int, layers: int = 2, vocab: int = VOCAB) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.5,
    )  # fmt: skip
    # float64: batched verification and one-token steps agree to ~1e-15, so greedy ties cannot flip.
    return LlamaForCausalLM(config).to(torch.float64).eval()


@pytest.fixture(scope="module")
def pair() -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    return tiny_llama(seed=1, layers=3), tiny_llama(seed=2, layers=1)


PROMPT = torch.tensor([5, 17, 9, 30, 2])


def greedy_reference(model, max_new_tokens: int, eos: list[int]) -> tuple[int, ...]:
    out = model.generate(
        PROMPT[None], attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long),
        generation_config=GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos or None, pad_token_id=0),
    )  # fmt: skip
    return tuple(out[0, len(PROMPT) :].tolist())


def check_accounting(result, max_new_tokens: int, gamma: int) -> None:
    drafter, target = result.models
    tokens = len(result.token_ids)
    assert 1 <= tokens <= max_new_tokens
    # Every committed token is an accepted draft, a correction, or the target's own token
    # (less at most one draft-position token cut off at eos / max_new_tokens).
    assert drafter.accepted + result.corrections + result.direct_samples == tokens
    assert drafter.accepted <= drafter.drafted <= gamma * target.forward_calls
    assert drafter.drafted_by_position[0] >= max(drafter.drafted_by_position) and len(drafter.drafted_by_position) <= gamma
    assert sum(drafter.drafted_by_position) == drafter.drafted
    assert sum(drafter.accepted_by_position) == drafter.accepted
    assert all(a <= d for a, d in zip(drafter.accepted_by_position, drafter.drafted_by_position))
    # The target runs once per step; its input is the prompt (first step) or the last token, plus the drafts.
    assert target.tokens_fed == len(PROMPT) + (target.forward_calls - 1) + drafter.drafted
    assert drafter.forward_calls == drafter.drafted  # the drafter's generate() runs one forward per draft token
    assert target.forward_seconds > 0 and drafter.forward_seconds > 0
    assert 0 < result.first_token_seconds <= result.total_seconds
    assert (drafter.verified, drafter.alpha_sum, result.expected_acceptance) == (0, 0.0, None)


@pytest.mark.parametrize("gamma", [1, 4])
def test_greedy_runs_with_consistent_accounting(pair, gamma):
    target, drafter = pair
    result = hf_ensemble_decode(target, drafter, PROMPT, 0.5, 0.0, 20, [], gamma, None)
    assert result.method == "hf-ensemble" and result.stop_reason == "max_new_tokens"
    assert len(result.token_ids) == 20
    check_accounting(result, 20, gamma)


def test_sampling_is_seeded_and_stops_on_eos(pair):
    target, drafter = pair
    runs = [hf_ensemble_decode(target, drafter, PROMPT, 0.3, 1.0, 30, [EOS], 3, seed=7) for _ in range(2)]
    assert runs[0].token_ids == runs[1].token_ids
    for result in runs:
        check_accounting(result, 30, 3)
        if result.stop_reason == "eos":
            assert result.token_ids[-1] == EOS and EOS not in result.token_ids[:-1]
        else:
            assert len(result.token_ids) == 30


def test_drafter_weight_zero_is_plain_speculative_decoding(pair):
    """λ = 0: lossless assisted decoding, so greedy output equals the target's own greedy output."""
    target, drafter = pair
    result = hf_ensemble_decode(target, drafter, PROMPT, 0.0, 0.0, 16, [], 3, None)
    assert result.token_ids == greedy_reference(target, 16, [])
    check_accounting(result, 16, 3)


def test_perfect_drafter_is_always_accepted(pair):
    """Drafter = target: ν = target = draft, every draft passes and output equals plain greedy."""
    target, _ = pair
    twin = tiny_llama(seed=1, layers=3)
    result = hf_ensemble_decode(target, twin, PROMPT, 0.5, 0.0, 17, [], 4, None)
    drafter = result.models[0]
    assert result.token_ids == greedy_reference(target, 17, [])
    assert drafter.accepted == drafter.drafted and result.corrections == 0
    check_accounting(result, 17, 4)


def test_models_generation_configs_do_not_leak_in_and_are_restored(pair):
    target, drafter = pair
    hub_like = GenerationConfig(do_sample=True, top_k=1, repetition_penalty=5.0, eos_token_id=[EOS])
    target.generation_config, before = hub_like, target.generation_config
    try:
        result = hf_ensemble_decode(target, drafter, PROMPT, 0.0, 0.0, 12, [], 2, None)
        assert target.generation_config is hub_like
    finally:
        target.generation_config = before
    assert result.token_ids == greedy_reference(target, 12, [])


def test_refusals(pair):
    target, drafter = pair
    with pytest.raises(CosBenchError, match=r"drafter weight must be in \[0, 1\)"):
        hf_ensemble_decode(target, drafter, PROMPT, 1.0, 0.0, 5, [], 2, None)
    with pytest.raises(CosBenchError, match="gamma >= 1"):
        hf_ensemble_decode(target, drafter, PROMPT, 0.5, 0.0, 5, [], 0, None)
    with pytest.raises(CosBenchError, match="equally wide logits"):
        hf_ensemble_decode(target, tiny_llama(3, vocab=VOCAB + 16), PROMPT, 0.5, 0.0, 5, [], 2, None)


@pytest.mark.parametrize("at", [1, 5, 6, 7])
def test_generate_ends_at_the_shared_stop_rule_and_counts_only_what_it_keeps(pair, at):
    # generate() checks once per step, so it ends after the step that crosses the stop; the ids
    # and every count are then cut at that exact token, as the core's methods stop.
    target, drafter = pair
    free = hf_ensemble_decode(target, drafter, PROMPT, 0.5, 0.0, 30, [], 3, None)
    stopped = hf_ensemble_decode(target, drafter, PROMPT, 0.5, 0.0, 30, [], 3, None,
                                 stop=lambda ids: "stop_string" if len(ids) >= at else None)  # fmt: skip
    assert stopped.token_ids == free.token_ids[:at] and stopped.stop_reason == "stop_string"
    drafter_counts = stopped.models[0]
    assert drafter_counts.accepted + stopped.corrections + stopped.direct_samples == at
    assert sum(drafter_counts.accepted_by_position) == drafter_counts.accepted


def test_forwards_are_timed_without_a_sync_per_call(pair, monkeypatch):
    # A sync around every forward inside the timed generate() would charge the peer for stalls
    # the core's methods never pay: only the two clock reads around generate() may synchronise.
    import cos_bench.methods.hf_ensemble as module

    syncs = []
    monkeypatch.setattr(module, "synchronize", lambda device: syncs.append(device))
    target, drafter = pair
    result = hf_ensemble_decode(target, drafter, PROMPT, drafter_weight=0.5, temperature=0.0, max_new_tokens=12,
                                eos_token_ids=[], gamma=3, seed=0)  # fmt: skip
    assert len(syncs) == 2
    assert result.models[1].forward_calls > 2 and result.models[1].forward_seconds > 0


def test_the_registry_runs_it_with_the_shared_signature(pair):
    # Registered like every method: decode(context, prompt_ids, settings, stop). The proposer drafts
    # with its WE weight as λ; the other model is the target.
    target, drafter = pair
    models = [SimpleNamespace(name="drafter", model=drafter), SimpleNamespace(name="target", model=target)]
    context = DecodeContext(runners=(), models=models, seed=0, generator=None)
    settings = DecodeSettings(WeightedEnsemble([0.3, 0.7]), 0.0, (3, 1), proposer=0)
    result = get_method("hf-ensemble")(context, PROMPT, settings, StopRule(12))
    direct = hf_ensemble_decode(target, drafter, PROMPT, 0.3, 0.0, 12, [], 3, 0)
    assert result.token_ids == direct.token_ids and [m.name for m in result.models] == ["drafter", "target"]
    with pytest.raises(CosBenchError, match="only 2-model we"):
        get_method("hf-ensemble")(context, PROMPT, DecodeSettings(Contrastive(0.1), 0.0, (3, 1)), StopRule(12))
