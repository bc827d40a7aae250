"""Combination rules, verification, cache rollback, accounting, stop rules and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import ENGINES, TableRunner, make_runner, tiny_llama

from cos_bench.core import CORE_METHODS, Contrastive, DecodeSettings, HFRunner, StopRule, WeightedEnsemble, get_method
from cos_bench.core.combine import model_probs
from cos_bench.core.runner import PREFILL_BUCKET
from cos_bench.core.sampling import residual_probs, sample, verify_block
from cos_bench.core.speculative import SpeculativeEngine
from cos_bench.errors import CosBenchError

# --- combination rules ------------------------------------------------------------------------

LOGITS_A = torch.tensor([2.0, 0.0, -1.0, 1.0])
LOGITS_B = torch.tensor([0.0, 3.0, 0.5, -2.0])


def test_we_tempers_each_model_then_mixes():
    for t in (0.5, 1.0, 2.0):
        expected = 0.3 * torch.softmax(LOGITS_A / t, -1) + 0.7 * torch.softmax(LOGITS_B / t, -1)
        got = WeightedEnsemble([0.3, 0.7]).combine([LOGITS_A, LOGITS_B], t)
        assert torch.allclose(got, expected)
        assert got.sum().item() == pytest.approx(1.0)


def test_cd_combines_raw_logits_then_tempers_once():
    for t in (0.5, 1.0):
        expected = torch.softmax((LOGITS_B - 0.1 * LOGITS_A) / t, -1)
        got = Contrastive(0.1, expert_index=1, amateur_index=0).combine([LOGITS_A, LOGITS_B], t)
        assert torch.allclose(got, expected)


def test_cd_operand_order_is_by_role():
    swapped = Contrastive(0.5, expert_index=0, amateur_index=1).combine([LOGITS_A, LOGITS_B], 1.0)
    assert torch.allclose(swapped, torch.softmax(LOGITS_A - 0.5 * LOGITS_B, -1))


def test_greedy_we_is_argmax_of_the_mixture_not_of_one_model():
    # Model a prefers token 0 strongly, model b token 1 mildly; mixture at λ=0.5 picks token 0,
    # λ=0.1 picks token 1: neither is "model 0 alone".
    a, b = torch.tensor([5.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.9])
    assert WeightedEnsemble([0.5, 0.5]).combine([a, b], 0).tolist() == [1.0, 0.0, 0.0]
    assert WeightedEnsemble([0.1, 0.9]).combine([a, b], 0).tolist() == [0.0, 1.0, 0.0]


def test_plausibility_mask_keeps_only_plausible_expert_tokens():
    expert = torch.log(torch.tensor([0.6, 0.3, 0.09, 0.01]))
    amateur = torch.zeros(4)
    probs = Contrastive(0.5, expert_index=1, amateur_index=0, plausibility_alpha=0.2).combine([amateur, expert], 1.0)  # floor 0.12
    assert probs[2].item() == 0 and probs[3].item() == 0 and probs[:2].sum().item() == pytest.approx(1.0)


def test_model_probs_greedy_is_one_hot():
    assert model_probs(torch.tensor([0.1, 3.0, 3.0]), 0).tolist() == [0.0, 1.0, 0.0]


# --- verification ----------------------------------------------------------------------------


def test_sample_draws_what_multinomial_draws():
    # The exponential race replaces torch.multinomial (which syncs a GPU): same ids, same generator state.
    for seed in range(20):
        probs = torch.softmax(torch.randn(50, generator=torch.Generator().manual_seed(seed)) * 3, dim=-1)
        ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        assert int(sample(probs, ours)) == int(torch.multinomial(probs, 1, generator=theirs)[0])
        assert torch.equal(torch.rand(3, generator=ours), torch.rand(3, generator=theirs))


def test_residual_is_normalised_positive_part():
    target, draft = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.6, 0.2])
    assert torch.allclose(residual_probs(target, draft), torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(residual_probs(target, target), target)  # empty residual: total, never NaN


def test_verify_block_greedy_accepts_argmax_and_corrects():
    target = torch.eye(4)[[2, 1, 3]]  # argmaxes 2, 1, 3
    draft = torch.eye(4)[[2, 0, 3]]
    verdict = verify_block(torch.tensor([2, 0, 3]), draft, target, torch.Generator().manual_seed(0))
    assert (verdict.n_accepted, verdict.correction) == (1, 1)
    assert verdict.overlaps == (1.0, 0.0)  # α per verified position; the third never got a verdict
    assert verdict.accepted_tokens == (2,)


class DeviceOnlyRunner:
    """A runner whose logits come from tensor ops alone (no host reads), so any host transfer
    counted during a decode is the engine's own."""

    def __init__(self, name: str, seed: int, vocab: int = 16):
        self.name = name
        self.table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 2  # last token -> logits
        self.reset()

    def reset(self) -> None:
        self.cache_len, self.calls = 0, 0

    def feed(self, tokens, keep):
        self.cache_len += tokens.shape[0]
        self.calls += 1
        return self.table[tokens[-keep:]]

    def crop(self, length):
        self.cache_len = min(self.cache_len, length)

    def stats(self):
        from cos_bench.core.runner import ForwardStats

        return ForwardStats(self.calls, 0, 0.0)


class HostReads(torch.overrides.TorchFunctionMode):
    """Counts the tensor -> Python conversions (each a device sync on a GPU)."""

    READS = ("tolist", "item", "__int__", "__bool__", "__float__", "__index__")

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.READS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("method", ["vanilla", "sd", "cos"])
def test_one_host_read_per_decision(method, temperature, monkeypatch):
    # On a GPU every read of a device value stalls the host: vanilla may read each sampled token
    # (its stop check), sd and cos one packed verdict per verified block — drafting reads nothing.
    import cos_bench.core.speculative as speculative

    blocks = []
    monkeypatch.setattr(speculative, "verify_block", lambda *args: blocks.append(1) or verify_block(*args))
    runners = [DeviceOnlyRunner("a", 1), DeviceOnlyRunner("b", 2)]
    settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), temperature, (3, 2))
    with HostReads() as reads:
        result = get_method(method)(runners, torch.tensor([1, 2]), settings, StopRule(40), torch.Generator().manual_seed(0))
    assert len(result.token_ids) == 40
    expected = len(result.token_ids) if method == "vanilla" else len(blocks)
    assert reads.count == expected
    if method != "vanilla":
        assert 0 < len(blocks) < 40 and result.corrections > 0  # several tokens per read, rejections included


# --- cache rollback --------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_cropped_cache_continues_like_a_fresh_prefill(engine):
    model = tiny_llama(3)
    runner = make_runner(engine, "m", model, 64)
    committed = torch.tensor([5, 9, 2, 44, 17])
    runner.feed(committed, keep=1)
    runner.feed(torch.tensor([8, 8, 8, 8]), keep=4)  # four drafts, then all rejected
    runner.crop(len(committed))
    continued = runner.feed(torch.tensor([30, 31]), keep=2)
    fresh = HFRunner("fresh", model, 64)
    prefilled = fresh.feed(torch.cat([committed, torch.tensor([30, 31])]), keep=2)
    assert torch.allclose(continued, prefilled, atol=1e-10)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("method", ["sd", "cos"])
def test_caches_after_a_decode_with_rejections_match_fresh_prefill(method, engine):
    models = [tiny_llama(10), tiny_llama(11)]
    runners = [make_runner(engine, f"m{i}", m, 64) for i, m in enumerate(models)]
    settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), 1.0, (4, 2))
    prompt = torch.tensor([1, 2, 3])
    engine = SpeculativeEngine(runners, prompt, settings, StopRule(24), torch.Generator().manual_seed(5))
    result = engine.run(method, alternate=method == "cos")
    assert result.corrections > 0, "the test needs rejections to exercise rollback"
    sequence = engine.transcript.tokens[: engine.transcript.length]
    for runner, model in zip(runners, models):
        # Whatever each cache holds must be a prefix of the committed sequence: continuing from it
        # gives the same logits as prefilling the committed sequence from scratch.
        assert runner.cache_len <= len(sequence)
        runner.crop(min(runner.cache_len, len(sequence) - 1))  # leave at least one token to feed
        continued = runner.feed(sequence[runner.cache_len :], keep=1)
        fresh = HFRunner("fresh", model, 64).feed(sequence, keep=1)
        assert torch.allclose(continued, fresh, atol=1e-10)


def test_static_runner_reuses_its_buffers_across_crops_and_resets():
    # CUDA graphs replay fixed addresses: cropping, refilling and resetting must never reallocate.
    runner = make_runner("static", "m", tiny_llama(3), 64, capacity=32, max_block=4)
    addresses = [layer.keys.data_ptr() for layer in runner.cache.layers]
    runner.feed(torch.tensor([5, 9, 2, 44, 17]), keep=1)
    runner.feed(torch.tensor([8, 8, 8]), keep=3)
    runner.crop(5)
    runner.reset()
    runner.feed(torch.tensor([1, 2]), keep=1)
    assert [layer.keys.data_ptr() for layer in runner.cache.layers] == addresses
    assert runner.cache_len == 2 and int(runner.cache.get_seq_length()) == 2


def test_static_runner_padded_prefill_gives_the_unpadded_logits():
    # The compiled runner pads long feeds to PREFILL_BUCKET and crops the padding back; the real
    # positions' logits and the cache it leaves behind must not see the padding.
    model = tiny_llama(3)
    padded = make_runner("static", "p", model, 64, capacity=160, max_block=4)
    padded.compiled = True  # padding follows the compiled flag; the forward itself stays eager here
    prompt = torch.tensor([5, 9, 2, 44, 17, 3, 3])
    assert padded.padded_length(len(prompt)) == PREFILL_BUCKET
    first = padded.feed(prompt, keep=2)
    assert padded.cache_len == len(prompt) and int(padded.cache.get_seq_length()) == len(prompt)
    step = padded.feed(torch.tensor([30]), keep=1)
    reference = HFRunner("r", model, 64)
    assert torch.allclose(first, reference.feed(prompt, keep=2), atol=1e-10)
    assert torch.allclose(step, reference.feed(torch.tensor([30]), keep=1), atol=1e-10)


def test_static_runner_refuses_to_overflow_in_one_line():
    runner = make_runner("static", "m", tiny_llama(3), 64, capacity=8, max_block=4)
    runner.feed(torch.arange(6), keep=1)
    with pytest.raises(CosBenchError, match="static cache holds 8"):
        runner.feed(torch.arange(3), keep=1)


# --- accounting ------------------------------------------------------------------------------


def emitted_identity(result) -> int:
    return sum(m.accepted + m.bonus_accepted for m in result.models) + result.corrections + result.direct_samples


@pytest.mark.parametrize("method", ["sd", "cos"])
def test_drafts_past_a_stop_are_not_counted_as_verified(method):
    # A block can pass drafts beyond an EOS; they never reach the output, so each verdict counted
    # must be a committed draft or a rejection — and α averages over exactly those.
    runners = [TableRunner("a", 1, 6), TableRunner("b", 2, 6)]
    settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), 1.0, (4, 2))
    gen = torch.Generator().manual_seed(3)
    cut_by_eos = 0
    for _ in range(60):
        result = get_method(method)(runners, torch.tensor([1]), settings, StopRule(30, eos_token_ids=frozenset({5})), gen)
        verified = sum(m.verified for m in result.models)
        assert verified == result.accepted_tokens + result.corrections
        cut_by_eos += result.stop_reason == "eos"
    assert cut_by_eos > 10  # not vacuous: many decodes ended on the EOS, often mid-block


@pytest.mark.parametrize("method", ["vanilla", "sd", "cos"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_emitted_tokens_are_accepted_plus_corrections_plus_bonus(method, temperature):
    runners = [TableRunner("a", 1, 8), TableRunner("b", 2, 8), TableRunner("c", 3, 8)]
    settings = DecodeSettings(WeightedEnsemble([0.4, 0.4, 0.2]), temperature, (3, 2, 1))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        result = get_method(method)(runners, torch.tensor([1]), settings, StopRule(17), gen)
        assert len(result.token_ids) == 17
        assert emitted_identity(result) == 17
        if method == "vanilla":
            assert all(m.forward_calls == 17 for m in result.models)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_identical_models_accept_everything(temperature):
    runners = [TableRunner("a", 7, 8), TableRunner("b", 7, 8)]
    settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), temperature, (4, 1))
    result = get_method("cos")(runners, torch.tensor([1]), settings, StopRule(30), torch.Generator().manual_seed(0))
    assert result.corrections == 0
    assert result.expected_acceptance == pytest.approx(1.0)
    assert result.accepted_tokens == 30
    assert sum(m.bonus_accepted for m in result.models) > 0  # the alternate proposals happened


def test_acceptance_by_position_counts_add_up():
    runners = [TableRunner("a", 1, 8), TableRunner("b", 2, 8)]
    settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), 1.0, (5, 1))
    result = get_method("cos")(runners, torch.tensor([1]), settings, StopRule(50), torch.Generator().manual_seed(1))
    for m in result.models:
        assert sum(m.drafted_by_position) == m.drafted + m.bonus_drafted
        assert sum(m.accepted_by_position) == m.accepted + m.bonus_accepted
        assert all(a <= d for a, d in zip(m.accepted_by_position, m.drafted_by_position))
    assert 0 < result.expected_acceptance < 1


def test_cost_counters_match_the_schedule():
    # cos with γ = (1, 1) on identical models: after the first draft, every step is one
    # scoring pass that also proposes — one forward call per emitted token in total.
    runners = [TableRunner("a", 7, 8), TableRunner("b", 7, 8)]
    settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), 0.0, (1, 1))
    result = get_method("cos")(runners, torch.tensor([1]), settings, StopRule(10))
    assert sum(m.forward_calls for m in result.models) == 10 + 1


@pytest.mark.parametrize("gamma", [1, 2, 3])
def test_sd_follows_the_naive_cos_schedule(gamma):
    # Identical models accept everything: sd = γ drafts per verifier pass (Thm 3.1's cost model),
    # the verifier scoring every round even when it already holds the first draft's distribution.
    runners = [TableRunner("a", 7, 8), TableRunner("b", 7, 8)]
    settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), 0.0, (gamma, 1))
    result = get_method("sd")(runners, torch.tensor([1]), settings, StopRule(12))
    assert result.models[1].forward_calls == 12 // gamma
    assert result.models[0].drafted == 12 and result.corrections == 0


# --- stopping --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sd", "cos"])
def test_every_method_stops_at_the_same_eos_and_stop_string(method):
    runners = [TableRunner("a", 1, 8), TableRunner("b", 2, 8)]
    settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), 0.0, (4, 2))
    free = get_method("vanilla")(runners, torch.tensor([1]), settings, StopRule(30)).token_ids
    eos = free[6]
    first = free.index(eos)
    stop = StopRule(30, eos_token_ids=frozenset({eos}))
    for m in ("vanilla", method):
        result = get_method(m)(runners, torch.tensor([1]), settings, stop)
        assert result.token_ids == free[: first + 1] and result.stop_reason == "eos"
    decode = lambda ids: "".join("abcdefgh"[i] for i in ids)  # noqa: E731
    needle = decode(free[8:10])
    cut = decode(free).index(needle) + 2
    stop = StopRule(30, stop_strings=(needle,), decode=decode)
    for m in ("vanilla", method):
        result = get_method(m)(runners, torch.tensor([1]), settings, stop)
        assert decode(result.token_ids) == decode(free)[:cut] and result.stop_reason == "stop_string"


def test_padded_embeddings_of_different_sizes_combine_over_the_shared_vocab():
    small, large = tiny_llama(1, vocab=64, embed_rows=64), tiny_llama(2, vocab=64, embed_rows=80)
    settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), 0.0, (3, 1))
    outs = {
        m: CORE_METHODS[m]([HFRunner("s", small, 64), HFRunner("l", large, 64)], torch.tensor([1, 2]), settings, StopRule(16)).token_ids
        for m in CORE_METHODS
    }
    assert outs["sd"] == outs["vanilla"] == outs["cos"]
    assert max(outs["vanilla"]) < 64


# --- bad input: one-line errors --------------------------------------------------------------


def one_line_error(fn) -> str:
    with pytest.raises(CosBenchError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and len(message) < 200
    return message


def test_bad_input_gives_one_line_errors():
    assert "sum to 1" in one_line_error(lambda: WeightedEnsemble([0.5, 0.6]))
    assert "non-negative" in one_line_error(lambda: WeightedEnsemble([1.5, -0.5]))
    assert "mu" in one_line_error(lambda: Contrastive(-0.1))
    rule = WeightedEnsemble([0.5, 0.5])
    assert "gamma" in one_line_error(lambda: DecodeSettings(rule, 0.0, (0, 1)))
    assert "temperature" in one_line_error(lambda: DecodeSettings(rule, -1.0, (1, 1)))
    assert "temperature" in one_line_error(lambda: DecodeSettings(rule, math.nan, (1, 1)))
    assert "max_new_tokens" in one_line_error(lambda: StopRule(0))
    assert "unknown decoding method" in one_line_error(lambda: get_method("nope"))


def test_forward_timer_uses_device_events_where_calls_are_asynchronous():
    # MPS, like CUDA, returns before the device has run a call: a host clock would time the launch only.
    from cos_bench.core.runner import ForwardTimer

    assert ForwardTimer(torch.device("mps"))._event_type is torch.mps.Event
    assert ForwardTimer(torch.device("cuda"))._event_type is torch.cuda.Event
    timer = ForwardTimer(torch.device("cpu"))
    timer.start()
    timer.stop()
    assert timer._event_type is None and timer.seconds() >= 0


def test_static_sizing_covers_every_feed_a_decode_makes():
    from cos_bench.core.runner import graph_lengths, static_capacity

    # Prompts of 5 and 130 tokens, blocks of up to 7: first passes of 5..12 and 130..137 tokens.
    lengths = graph_lengths([5, 130], max_block=7)
    assert lengths == (1, 2, 3, 4, 5, 6, 7, 64, 192)  # 8..12 pad to 64, 130..137 to 192
    # The longest first pass padded (192) plus 64 new tokens, rounded up to 256.
    assert static_capacity([5, 130], max_new_tokens=64, max_block=7) == 256
    assert static_capacity([5, 130], max_new_tokens=65, max_block=7) == 512
