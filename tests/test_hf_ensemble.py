"""The `hf-ensemble` peer baseline (both variants) on two tiny random models (no downloads)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from cos_bench.core import Contrastive, DecodeSettings, StopRule, WeightedEnsemble
from cos_bench.errors import CosBenchError
from cos_bench.methods import HF_ENSEMBLE_VARIANTS, DecodeContext, get_method, hf_drafting
from cos_bench.methods.hf_ensemble import Drafting, hf_ensemble_decode, matched_drafting, transformers_defaults
from cos_bench.metrics import load_records
from cos_bench.storage import RECORDS_NAME, ResultsStore

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
    """`gamma`: the longest draft a round may make (a constant schedule's num_assistant_tokens)."""
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
    result = hf_ensemble_decode(target, drafter, PROMPT, 0.5, 0.0, 20, [], matched_drafting(gamma), None)
    assert result.method == "hf-ensemble" and result.stop_reason == "max_new_tokens"
    assert len(result.token_ids) == 20
    check_accounting(result, 20, gamma)


def test_sampling_is_seeded_and_stops_on_eos(pair):
    target, drafter = pair
    runs = [hf_ensemble_decode(target, drafter, PROMPT, 0.3, 1.0, 30, [EOS], matched_drafting(3), seed=7) for _ in range(2)]
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
    result = hf_ensemble_decode(target, drafter, PROMPT, 0.0, 0.0, 16, [], matched_drafting(3), None)
    assert result.token_ids == greedy_reference(target, 16, [])
    check_accounting(result, 16, 3)


def test_perfect_drafter_is_always_accepted(pair):
    """Drafter = target: ν = target = draft, every draft passes and output equals plain greedy."""
    target, _ = pair
    twin = tiny_llama(seed=1, layers=3)
    result = hf_ensemble_decode(target, twin, PROMPT, 0.5, 0.0, 17, [], matched_drafting(4), None)
    drafter = result.models[0]
    assert result.token_ids == greedy_reference(target, 17, [])
    assert drafter.accepted == drafter.drafted and result.corrections == 0
    check_accounting(result, 17, 4)


def test_models_generation_configs_do_not_leak_in_and_are_restored(pair):
    target, drafter = pair
    hub_like = GenerationConfig(do_sample=True, top_k=1, repetition_penalty=5.0, eos_token_id=[EOS])
    target.generation_config, before = hub_like, target.generation_config
    try:
        result = hf_ensemble_decode(target, drafter, PROMPT, 0.0, 0.0, 12, [], matched_drafting(2), None)
        assert target.generation_config is hub_like
    finally:
        target.generation_config = before
    assert result.token_ids == greedy_reference(target, 12, [])


def test_refusals(pair):
    target, drafter = pair
    with pytest.raises(CosBenchError, match=r"drafter weight must be in \[0, 1\)"):
        hf_ensemble_decode(target, drafter, PROMPT, 1.0, 0.0, 5, [], matched_drafting(2), None)
    with pytest.raises(CosBenchError, match="gamma >= 1"):
        hf_ensemble_decode(target, drafter, PROMPT, 0.5, 0.0, 5, [], matched_drafting(0), None)
    with pytest.raises(CosBenchError, match="equally wide logits"):
        hf_ensemble_decode(target, tiny_llama(3, vocab=VOCAB + 16), PROMPT, 0.5, 0.0, 5, [], matched_drafting(2), None)
    with pytest.raises(CosBenchError, match="unknown draft schedule 'adaptive'"):
        hf_ensemble_decode(target, drafter, PROMPT, 0.5, 0.0, 5, [], Drafting(5, "adaptive", 0.0), None)
    with pytest.raises(CosBenchError, match=r"confidence threshold must be in \[0, 1\)"):
        hf_ensemble_decode(target, drafter, PROMPT, 0.5, 0.0, 5, [], Drafting(5, "constant", 1.0), None)


@pytest.mark.parametrize("at", [1, 5, 6, 7])
def test_generate_ends_at_the_shared_stop_rule_and_counts_only_what_it_keeps(pair, at):
    # generate() checks once per step, so it ends after the step that crosses the stop; the ids
    # and every count are then cut at that exact token, as the core's methods stop.
    target, drafter = pair
    free = hf_ensemble_decode(target, drafter, PROMPT, 0.5, 0.0, 30, [], matched_drafting(3), None)
    stopped = hf_ensemble_decode(target, drafter, PROMPT, 0.5, 0.0, 30, [], matched_drafting(3), None,
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
                                eos_token_ids=[], drafting=matched_drafting(3), seed=0)  # fmt: skip
    assert len(syncs) == 2
    assert result.models[1].forward_calls > 2 and result.models[1].forward_seconds > 0


# --- the two variants -------------------------------------------------------------------------

SETTINGS = DecodeSettings(WeightedEnsemble([0.3, 0.7]), 0.0, (3, 1), proposer=0)  # the drafter (model 0) has γ = 3
DEFAULTS = GenerationConfig._get_default_generation_params()  # what transformers fills unset fields with


def context_for(target, drafter) -> DecodeContext:
    models = [SimpleNamespace(name="drafter", model=drafter), SimpleNamespace(name="target", model=target)]
    return DecodeContext(runners=(), models=models, seed=0, generator=None)


class DraftSpy:
    """Records every call the candidate generator makes to the drafter's generate(), and how it was configured."""

    def __init__(self, drafter, monkeypatch):
        self.calls: list[dict] = []
        self._generate = drafter.generate
        self._drafter = drafter
        monkeypatch.setattr(drafter, "generate", self)

    def __call__(self, *args, **kwargs):
        swapped = self._drafter.generation_config  # the config hf_ensemble_decode put in place for the call
        self.calls.append(
            {
                "max_new_tokens": kwargs["max_new_tokens"],
                "threshold": kwargs["generation_config"].assistant_confidence_threshold,
                "drafter_config": (swapped.num_assistant_tokens, swapped.num_assistant_tokens_schedule,
                                   swapped.assistant_confidence_threshold),
            }
        )  # fmt: skip
        return self._generate(*args, **kwargs)

    def rounds(self) -> list[int]:
        """Each round's draft length asked for; reset() between decodes."""
        return [call["max_new_tokens"] for call in self.calls]

    def reset(self) -> None:
        self.calls = []


def test_transformers_defaults_are_read_from_the_installed_version():
    # A bare GenerationConfig() leaves them unset; generate() fills them from this table, as we read them.
    bare = GenerationConfig()
    assert (bare.num_assistant_tokens, bare.num_assistant_tokens_schedule, bare.assistant_confidence_threshold) == (None, None, None)
    assert transformers_defaults().to_json() == {
        key: DEFAULTS[key] for key in ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
    }


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_defaults_variant_drafts_with_transformers_defaults(pair, monkeypatch, temperature):
    target, drafter = pair
    spy = DraftSpy(drafter, monkeypatch)
    result = get_method("hf-ensemble")(context_for(target, drafter), PROMPT, dataclasses.replace(SETTINGS, temperature=temperature),
                                       StopRule(40))  # fmt: skip
    longest = DEFAULTS["num_assistant_tokens"]
    assert result.method == "hf-ensemble"
    first = spy.calls[0]
    assert first["max_new_tokens"] == longest and first["threshold"] == DEFAULTS["assistant_confidence_threshold"] > 0
    assert first["drafter_config"] == (longest, DEFAULTS["num_assistant_tokens_schedule"], DEFAULTS["assistant_confidence_threshold"])
    assert hf_drafting("hf-ensemble", SETTINGS) == transformers_defaults().to_json()  # what its records store
    check_accounting(result, 40, longest)
    # The confidence cut-off ends drafts at different lengths, not at γ = 3 nor always at 20.
    drafted_at = result.models[0].drafted_by_position
    assert len(drafted_at) > 3 and drafted_at[-1] < drafted_at[0]


def test_the_matched_variant_drafts_the_run_gamma_with_no_cut_off(pair, monkeypatch):
    target, drafter = pair
    spy = DraftSpy(drafter, monkeypatch)
    result = get_method("hf-ensemble-matched")(context_for(target, drafter), PROMPT, SETTINGS, StopRule(12))
    assert result.method == "hf-ensemble-matched" and [m.name for m in result.models] == ["drafter", "target"]
    assert {call["threshold"] for call in spy.calls} == {0.0} and max(spy.rounds()) == 3
    assert spy.calls[0]["drafter_config"] == (3, "constant", 0.0)
    assert hf_drafting("hf-ensemble-matched", SETTINGS) == matched_drafting(3).to_json() and hf_drafting("cos", SETTINGS) is None
    # The proposer drafts with its WE weight as λ; the other model is the target.
    direct = hf_ensemble_decode(target, drafter, PROMPT, 0.3, 0.0, 12, [], matched_drafting(3), 0)
    assert result.token_ids == direct.token_ids
    check_accounting(result, 12, 3)


@pytest.mark.parametrize("name", HF_ENSEMBLE_VARIANTS)
def test_both_variants_refuse_what_is_not_a_two_model_we(pair, name):
    target, drafter = pair
    with pytest.raises(CosBenchError, match=f"{name} runs only 2-model we"):
        get_method(name)(context_for(target, drafter), PROMPT, DecodeSettings(Contrastive(0.1), 0.0, (3, 1)), StopRule(12))


def test_each_decode_starts_from_its_own_drafting(pair, monkeypatch):
    # transformers' "heuristic" schedule changes the draft length as it goes and writes the last one
    # back into the assistant's generation_config; none of that may reach the next decode.
    target, drafter = pair
    spy = DraftSpy(drafter, monkeypatch)
    own = drafter.generation_config
    heuristic = Drafting(6, "heuristic", 0.4)
    starts = []
    for _ in range(2):
        spy.reset()
        hf_ensemble_decode(target, drafter, PROMPT, 0.5, 0.0, 40, [], heuristic, None)
        starts.append(spy.rounds()[0])
        assert len(set(spy.rounds())) > 1  # the schedule did move: there was state to leak
    assert starts == [6, 6]
    assert drafter.generation_config is own and own.num_assistant_tokens is None  # the model's own config, untouched
    # The matched variant after a defaults run on the same models drafts γ, with no cut-off.
    context = context_for(target, drafter)
    get_method("hf-ensemble")(context, PROMPT, SETTINGS, StopRule(20))
    spy.reset()
    get_method("hf-ensemble-matched")(context, PROMPT, SETTINGS, StopRule(20))
    assert spy.rounds()[0] == 3 and max(spy.rounds()) == 3 and {call["threshold"] for call in spy.calls} == {0.0}
    # And a defaults run after a matched one starts from transformers' defaults again.
    spy.reset()
    get_method("hf-ensemble")(context, PROMPT, SETTINGS, StopRule(30))
    assert spy.calls[0]["max_new_tokens"] == DEFAULTS["num_assistant_tokens"]


def test_a_checkpoints_own_drafting_does_not_leak_in(pair, monkeypatch):
    # A Hub drafter may ship its own num_assistant_tokens; the defaults variant is transformers' defaults.
    target, drafter = pair
    spy = DraftSpy(drafter, monkeypatch)
    shipped = GenerationConfig(num_assistant_tokens=2, num_assistant_tokens_schedule="heuristic", assistant_confidence_threshold=0.9)
    monkeypatch.setattr(drafter, "generation_config", shipped)
    get_method("hf-ensemble")(context_for(target, drafter), PROMPT, SETTINGS, StopRule(30))
    assert spy.calls[0]["max_new_tokens"] == DEFAULTS["num_assistant_tokens"]
    assert spy.calls[0]["threshold"] == DEFAULTS["assistant_confidence_threshold"]
    assert drafter.generation_config is shipped and shipped.num_assistant_tokens == 2


# --- records stored before the peer ran two ways ---------------------------------------------

SMALL_RUN = Path(__file__).parent / "data" / "small_run"


def test_old_hf_ensemble_records_read_back_as_the_matched_variant(tmp_path):
    # Before the two variants, `hf-ensemble` drafted the run's γ with no cut-off: what -matched does now.
    rows = [json.loads(line) for line in (SMALL_RUN / RECORDS_NAME).read_text().splitlines()]
    sd = next(r for r in rows if r["method"] == "sd")
    old = {**sd, "method": "hf-ensemble", "key": sd["key"].replace("|sd|", "|hf-ensemble|")}  # no hf_drafting
    new = {**old, "hf_drafting": transformers_defaults().to_json()}  # the defaults variant, same example
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / RECORDS_NAME).write_text("".join(json.dumps(r) + "\n" for r in (rows[0], old)))
    shutil.copy(SMALL_RUN / "manifest.json", folder)
    store = ResultsStore(folder)
    matched_key = old["key"].replace("|hf-ensemble|", "|hf-ensemble-matched|")
    assert matched_key in store.done_keys() and old["key"] not in store.done_keys()
    # A resumed run stores the defaults variant beside it, and the two are never one group.
    with (folder / RECORDS_NAME).open("a") as handle:
        handle.write(json.dumps(new) + "\n")
    frame = load_records([folder]).set_index("key")
    gamma = old["gammas"][old["proposer"]]
    assert frame.loc[matched_key, "method"] == "hf-ensemble-matched"
    assert frame.loc[matched_key, "hf_drafting"] == matched_drafting(gamma).to_json()
    assert frame.loc[old["key"], "method"] == "hf-ensemble"
    assert frame.loc[old["key"], "hf_drafting"] == transformers_defaults().to_json()
