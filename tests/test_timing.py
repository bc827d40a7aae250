"""Calibration timing: the k-token verification pass, its cache handling, and what calibrate returns."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from tiny import tiny_llama
from torch.overrides import TorchFunctionMode

from cos_bench import run, timing
from cos_bench.core import HFRunner
from cos_bench.errors import CosBenchError
from cos_bench.models import LONG_FEED_TOKENS, long_feed_float32, single_token_onednn
from cos_bench.timing import PASS_CURVE_HOW, PASS_HOW, Feed, curve_tokens, feed_seconds, pass_tokens, step_seconds

VOCAB = 64
CPU = torch.device("cpu")
PROMPTS = [torch.tensor([1, 5, 9, 2, 7]), torch.tensor([3, 3, 8])]


class SpyRunner:
    """An HFRunner that records, for every feed, the real KV cache length before it, the tokens fed and `keep`."""

    def __init__(self, runner: HFRunner):
        self.inner, self.name, self.feeds = runner, runner.name, []

    @property
    def cache_len(self) -> int:
        return self.inner.cache_len

    def reset(self) -> None:
        self.inner.reset()

    def feed(self, tokens: torch.Tensor, keep: int) -> torch.Tensor:
        self.feeds.append((self.inner.cache.get_seq_length(), tokens.shape[0], keep))
        logits = self.inner.feed(tokens, keep)
        assert logits.shape == (keep, VOCAB)
        return logits

    def crop(self, length: int) -> None:
        self.inner.crop(length)

    def stats(self):
        return self.inner.stats()


FED: list[int] = []  # tokens of every feed by a CountingRunner, for the fake clock


class CountingRunner(SpyRunner):
    def feed(self, tokens: torch.Tensor, keep: int) -> torch.Tensor:
        FED.append(tokens.shape[0])
        return super().feed(tokens, keep)


def fake_clock(seconds_per_token: float):
    """A `timed` whose clock reads seconds_per_token × the tokens its call fed (a CountingRunner's last feed)."""

    def timed(fn, device):
        result = fn()
        return result, seconds_per_token * FED[-1]

    return timed


def spy(name: str, seed: int, cls=SpyRunner) -> SpyRunner:
    return cls(HFRunner(name, tiny_llama(seed, VOCAB), VOCAB))


def eager_engine(runners: list[SpyRunner]) -> SimpleNamespace:
    return SimpleNamespace(runners=runners, models=[SimpleNamespace(model=r.inner.model) for r in runners], device=CPU, kind="eager")


def test_a_pass_feeds_k_tokens_at_the_prompts_length_every_time():
    runner = spy("m", 0)
    seconds = feed_seconds(runner, PROMPTS, CPU, {"pass": Feed(4)}, repeats=3)["pass"]
    assert seconds > 0
    # Per prompt: the prefill, then 3 timed 4-token passes, each starting from the prompt alone in the cache.
    expected = []
    for prompt in PROMPTS:
        expected += [(0, len(prompt), 1)] + [(len(prompt), 4, 4)] * 3
    assert runner.feeds == expected
    assert runner.cache_len == 0 and runner.inner.cache.get_seq_length() == 0  # reset at the end, as step_seconds did


def test_step_seconds_is_the_one_token_pass():
    runner = spy("m", 0)
    step_seconds(runner, PROMPTS[:1], CPU, steps=2)
    assert runner.feeds == [(0, 5, 1), (5, 1, 1), (5, 1, 1)]


def test_a_pass_is_the_median_of_its_timed_feeds(monkeypatch):
    monkeypatch.setattr(timing, "timed", fake_clock(0.01))
    FED.clear()
    assert feed_seconds(spy("m", 0, CountingRunner), PROMPTS, CPU, {"pass": Feed(6)})["pass"] == pytest.approx(0.06)


@pytest.mark.parametrize("tokens", [0, -2, 2.0, True])
def test_a_feed_of_a_bad_length_is_refused(tokens):
    with pytest.raises(CosBenchError, match="tokens must be an integer"):
        feed_seconds(spy("m", 0), PROMPTS, CPU, {"pass": Feed(tokens)})


def test_pass_tokens_is_the_verified_models_gamma_plus_one():
    # Two models: each verifies the other's run.
    assert pass_tokens({"small": 5, "large": 1}, "small") == {"small": 2, "large": 6}
    assert pass_tokens({"small": 5, "large": 1}, "large") == {"small": 2, "large": 6}
    # More: every model verifies the default proposer's drafts.
    assert pass_tokens({"a": 3, "b": 1, "c": 2}, "c") == {"a": 3, "b": 3, "c": 3}


def test_calibrate_reports_the_verification_pass_of_each_model(monkeypatch):
    monkeypatch.setattr(timing, "timed", fake_clock(0.01))
    FED.clear()
    runners = [spy("small", 0, CountingRunner), spy("large", 1, CountingRunner)]
    cfg = SimpleNamespace(model_names=("small", "large"), gammas=(4, 1), proposer="small", longest_auto_drafts=None)
    calibration = run.calibrate(cfg, eager_engine(runners), PROMPTS, Console(file=io.StringIO()))
    assert set(calibration) >= {"step_seconds", "c", "c_how", "proposer"}  # the keys that were there before
    assert calibration["pass_tokens"] == {"small": 2, "large": 5}  # large verifies small's 4 drafts (+1)
    assert calibration["pass_seconds"] == pytest.approx({"small": 0.02, "large": 0.05})
    assert calibration["pass_cost"] == pytest.approx({"small": 2.0, "large": 5.0})
    assert calibration["pass_how"] == PASS_HOW
    assert calibration["step_seconds"] == pytest.approx({"small": 0.01, "large": 0.01})


def test_calibrate_on_real_clocks_gives_consistent_ratios():
    runners = [spy("small", 0), spy("large", 1)]
    cfg = SimpleNamespace(model_names=("small", "large"), gammas=(3, 2), proposer="small", longest_auto_drafts=None)
    calibration = run.calibrate(cfg, eager_engine(runners), PROMPTS, Console(file=io.StringIO()))
    for name in ("small", "large"):
        assert calibration["pass_cost"][name] == pytest.approx(calibration["pass_seconds"][name] / calibration["step_seconds"][name])
    assert {k for _, k, keep in runners[1].feeds if keep > 1} == {4}  # large's timed passes: γ_small + 1 tokens
    assert {k for _, k, keep in runners[0].feeds if keep > 1} == {3}
    assert "pass_curve" not in calibration  # no `auto` policy: no lengths beyond the verification pass


def test_curve_tokens_are_every_length_a_model_may_verify():
    assert curve_tokens({"small": 10, "large": 2}) == {"small": (2, 3), "large": tuple(range(2, 12))}
    # More models: each verifies runs of any other, so up to the longest of theirs.
    assert curve_tokens({"a": 4, "b": 1, "c": 2}) == {"a": (2, 3), "b": (2, 3, 4, 5), "c": (2, 3, 4, 5)}


def test_calibrate_times_every_pass_length_auto_may_charge(monkeypatch):
    monkeypatch.setattr(timing, "timed", fake_clock(0.01))
    FED.clear()
    runners = [spy("small", 0, CountingRunner), spy("large", 1, CountingRunner)]
    cfg = SimpleNamespace(model_names=("small", "large"), gammas=(4, 1), proposer="small", longest_auto_drafts=(8, 2))
    calibration = run.calibrate(cfg, eager_engine(runners), PROMPTS, Console(file=io.StringIO()))
    # The fake clock charges a feed of k tokens k × 10 ms: a pass of k tokens costs k steps.
    assert calibration["pass_curve"] == {
        "small": pytest.approx({2: 2.0, 3: 3.0}),
        "large": pytest.approx({k: float(k) for k in range(2, 10)}),
    }
    assert calibration["pass_curve_how"] == PASS_CURVE_HOW
    assert calibration["pass_cost"] == pytest.approx({"small": 2.0, "large": 5.0})  # the verification pass, as before
    cost = run.measured_pass_cost(calibration, "large")
    assert cost.tokens == tuple(range(2, 10)) and cost.at(7) == pytest.approx(7.0)
    # Read back from a manifest, the lengths are strings; the same costs come out.
    written = {
        **calibration,
        "pass_curve": {name: {str(k): r for k, r in curve.items()} for name, curve in calibration["pass_curve"].items()},
    }
    assert run.measured_pass_cost(written, "large") == cost
    # Without a curve: the one measured pass.
    plain = {key: calibration[key] for key in ("pass_tokens", "pass_cost")}
    assert run.measured_pass_cost(plain, "large").tokens == (5,)


# --- oneDNN for single-token forwards: measured per model, the faster kept ----------------------


def probe_onednn(model) -> list[bool]:
    """The oneDNN flag as the model's first layer sees it, once per forward."""
    seen: list[bool] = []
    model.model.layers[0].register_forward_pre_hook(lambda *_: seen.append(torch.backends.mkldnn.enabled))
    return seen


def test_the_switch_turns_onednn_off_for_single_token_forwards_only_and_always_restores_it():
    model = tiny_llama(0, VOCAB)
    seen = probe_onednn(model)
    switch = single_token_onednn(model)
    assert single_token_onednn(model) is switch and switch.enabled  # one switch per model, on until set
    switch.set(False)
    with torch.no_grad():
        model(input_ids=torch.tensor([[3]]))
        model(input_ids=torch.tensor([[3, 4, 5]]))
        model(torch.tensor([[3]]))  # positional ids too (generate passes keywords, others may not)
    assert seen == [False, True, False] and torch.backends.mkldnn.enabled
    with pytest.raises(IndexError), torch.no_grad():
        model(input_ids=torch.tensor([[VOCAB + 5]]))  # out of the embedding: the forward raises
    assert torch.backends.mkldnn.enabled  # restored anyway
    switch.set(True)
    switch.set(True)  # idempotent: no hook is left behind
    seen.clear()
    with torch.no_grad():
        model(input_ids=torch.tensor([[3]]))
    assert seen == [True] and switch.enabled


def onednn_clock(model, off_ms: float):
    """A `timed` reading 60 ms per single step with the model's oneDNN on, off_ms with it off, 0.2 s per longer feed."""

    def timed(fn, device):
        result = fn()
        if FED[-1] != 1:
            return result, 0.2
        return result, (60.0 if single_token_onednn(model).enabled else off_ms) / 1e3

    return timed


@pytest.mark.parametrize("off_ms, kept", [(30.0, False), (90.0, True), (60.0, True)])
def test_calibration_keeps_the_faster_single_token_library_per_model(monkeypatch, off_ms, kept):
    runner = spy("small", 0, CountingRunner)
    model = runner.inner.model
    monkeypatch.setattr(timing, "timed", onednn_clock(model, off_ms))
    FED.clear()
    times = timing.time_forwards(runner, model, PROMPTS, CPU, tokens=2, choose_onednn=True)
    assert (
        times.onednn["onednn"] is kept and times.onednn["on_ms"] == pytest.approx(60.0) and times.onednn["off_ms"] == pytest.approx(off_ms)
    )
    assert times.onednn["kept_ms"] == pytest.approx(60.0 if kept else off_ms) and times.step * 1e3 == pytest.approx(times.onednn["kept_ms"])
    assert times.pass_ == pytest.approx(0.2) and single_token_onednn(model).enabled is kept
    # One prefill per prompt serves the step (both ways) and the pass: 1 + 6 + 6 + 6 feeds per prompt.
    assert [len(p) for p in PROMPTS] == [n for n in FED if n > 2] and len(FED) == 19 * len(PROMPTS)
    assert (
        timing.time_forwards(runner, model, PROMPTS, torch.device("meta"), tokens=2, choose_onednn=True).onednn is None
    )  # only CPUs choose
    assert timing.time_forwards(runner, model, PROMPTS, CPU, tokens=2, choose_onednn=False).onednn is None


def test_calibrate_records_the_choice_with_how_it_was_made():
    runners = [spy("small", 0), spy("large", 1)]
    cfg = SimpleNamespace(model_names=("small", "large"), gammas=(3, 1), proposer="small", longest_auto_drafts=None)
    calibration = run.calibrate(cfg, eager_engine(runners), PROMPTS, Console(file=io.StringIO()))
    assert calibration["single_token_onednn_how"] == timing.ONEDNN_HOW
    for name, runner in zip(("small", "large"), runners):
        choice = calibration["single_token_onednn"][name]
        assert choice["onednn"] == (choice["on_ms"] <= choice["off_ms"]) == single_token_onednn(runner.inner.model).enabled
        assert calibration["step_seconds"][name] * 1e3 == pytest.approx(min(choice["on_ms"], choice["off_ms"]))  # timed once, reused
    compiled = run.calibrate(
        cfg, SimpleNamespace(**{**vars(eager_engine(runners)), "kind": "compiled"}), PROMPTS, Console(file=io.StringIO())
    )
    assert "single_token_onednn" not in compiled


# --- long feeds in fp32 where bf16 products have no fast kernel: measured per model ------------

LONG = torch.arange(80) % VOCAB  # a prompt longer than the probe threshold (LONG_FEED_TOKENS)


class LinearDtypes(TorchFunctionMode):
    """Records the input dtype of every linear layer computed under it, and the storage of each fp32 weight."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.dtype] = []
        self.fp32_weight_storages: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.linear:
            self.seen.append(args[0].dtype)
            if args[1].dtype == torch.float32:
                self.fp32_weight_storages.append(args[1].untyped_storage().data_ptr())
        return func(*args, **(kwargs or {}))


class FreshUpcast(TorchFunctionMode):
    """The fp32 long feed as first written, for reference: every layer's weight upcast into a new tensor."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear:
            x, weight, *rest = args
            if x.dtype == torch.bfloat16 and x.shape[-2] >= LONG_FEED_TOKENS:
                bias = rest[0] if rest else kwargs.get("bias")
                return func(x.float(), weight.float(), None if bias is None else bias.float()).to(torch.bfloat16)
        return func(*args, **kwargs)


def test_a_long_feed_reuses_one_fp32_buffer_per_weight_shape_with_every_layer_its_own_values():
    model = tiny_llama(0, VOCAB).to(torch.bfloat16)  # two layers: each weight shape comes twice or more
    shapes = {p.shape for name, p in model.named_parameters() if p.dim() == 2 and "embed" not in name}
    with torch.no_grad():
        with FreshUpcast():
            expected = model(input_ids=LONG[None]).logits
        long_feed_float32(model).set(True)
        spy_mode = LinearDtypes()
        with spy_mode:
            reused = model(input_ids=LONG[None]).logits
        long_feed_float32(model).set(False)
    # Bit for bit what a fresh upcast per layer gives: a buffer left holding another layer's weight would not.
    assert torch.equal(reused, expected)
    assert len(spy_mode.fp32_weight_storages) > len(shapes)  # more layers than shapes...
    assert len(set(spy_mode.fp32_weight_storages)) <= len(shapes)  # ...and one buffer per shape (lm head: one row, bf16)


def test_long_feeds_compute_linear_layers_in_fp32_and_steps_stay_bf16():
    model = tiny_llama(0, VOCAB).to(torch.bfloat16)
    switch = long_feed_float32(model)
    assert long_feed_float32(model) is switch and not switch.enabled  # one switch per model, off until set
    with torch.no_grad():
        plain = model(input_ids=LONG[None]).logits
        switch.set(True)
        spy_mode = LinearDtypes()
        with spy_mode:
            upcast = model(input_ids=LONG[None]).logits
            long_dtypes, spy_mode.seen = spy_mode.seen, []
            model(input_ids=LONG[None, : LONG_FEED_TOKENS - 1])
            short_dtypes = spy_mode.seen
    assert set(long_dtypes) == {torch.float32} and set(short_dtypes) == {torch.bfloat16}
    assert upcast.dtype == torch.bfloat16  # the layers' outputs are rounded back: the model stays bf16
    assert (upcast.float() - plain.float()).abs().max() <= 0.05 * plain.float().abs().max()  # the same products, rounded alike
    with pytest.raises(IndexError), torch.no_grad():
        model(input_ids=torch.full((1, LONG_FEED_TOKENS), VOCAB + 5))  # the forward raises inside the mode
    assert torch._C._len_torch_function_stack() == 0  # and the mode is left anyway
    switch.set(False)
    switch.set(False)  # idempotent
    spy_mode = LinearDtypes()
    with torch.no_grad(), spy_mode:
        model(input_ids=LONG[None])
    assert set(spy_mode.seen) == {torch.bfloat16} and not switch.enabled


def prefill_clock(model, bf16_ms: float, fp32_ms: float):
    """A `timed` reading bf16_ms or fp32_ms for a feed of ≥ LONG_FEED_TOKENS tokens, by the model's switch."""

    def timed(fn, device):
        result = fn()
        seconds = (fp32_ms if long_feed_float32(model).enabled else bf16_ms) / 1e3
        return result, seconds if FED[-1] >= LONG_FEED_TOKENS else 0.001

    return timed


@pytest.mark.parametrize("fp32_ms, kept", [(40.0, True), (200.0, False), (100.0, False)])
def test_the_faster_prefill_is_kept_where_bf16_products_have_no_fast_kernel(monkeypatch, fp32_ms, kept):
    runner = spy("small", 0, CountingRunner)
    model = runner.inner.model.to(torch.bfloat16)
    monkeypatch.setattr(timing, "timed", prefill_clock(model, 100.0, fp32_ms))
    FED.clear()
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # as on an AVX2 CPU: no oneDNN for bf16 products
    choice = timing.choose_long_feed_float32(runner, model, LONG, CPU)
    assert choice == {"float32": kept, "bf16_ms": pytest.approx(100.0), "float32_ms": pytest.approx(fp32_ms), "probe_tokens": 80}
    assert long_feed_float32(model).enabled is kept and runner.cache_len == 0
    assert FED == [8, 80, 80]  # an untimed first forward, then one prefill each way


def test_no_prefill_choice_where_there_is_nothing_to_choose(monkeypatch):
    runner = spy("small", 0)
    model = runner.inner.model
    with monkeypatch.context() as patch:
        patch.setattr(torch.backends.mkldnn, "enabled", False)
        assert timing.choose_long_feed_float32(runner, model, LONG, CPU) == {}  # an fp32 model
        model.to(torch.bfloat16)
        assert timing.choose_long_feed_float32(runner, model, LONG[: LONG_FEED_TOKENS - 1], CPU) == {}  # too short to tell
        assert timing.choose_long_feed_float32(runner, model, LONG, torch.device("meta")) == {}  # not a CPU
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert timing.choose_long_feed_float32(runner, model, LONG, CPU) == {}  # oneDNN's bf16 kernels serve it
    assert not long_feed_float32(model).enabled


def test_calibrate_records_the_prefill_choice_with_how_it_was_made(monkeypatch):
    runners = [spy("small", 0), spy("large", 1)]
    for runner in runners:
        runner.inner.model.to(torch.bfloat16)
    cfg = SimpleNamespace(model_names=("small", "large"), gammas=(3, 1), proposer="small", longest_auto_drafts=None)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    calibration = run.calibrate(cfg, eager_engine(runners), [LONG, PROMPTS[0]], Console(file=io.StringIO()))
    assert "single_token_onednn" not in calibration  # oneDNN off: no single-token library to choose
    assert calibration["long_feed_float32_how"] == timing.LONG_FEED_HOW
    for name, runner in zip(("small", "large"), runners):
        choice = calibration["long_feed_float32"][name]
        assert choice["float32"] == (choice["float32_ms"] < choice["bf16_ms"]) == long_feed_float32(runner.inner.model).enabled
        assert choice["probe_tokens"] == 80
    compiled = run.calibrate(
        cfg, SimpleNamespace(**{**vars(eager_engine(runners)), "kind": "compiled"}), [LONG], Console(file=io.StringIO())
    )
    assert "long_feed_float32" not in compiled


# --- warm-up: every code path once, without a full prefill per (setting, method) ---------------


@pytest.mark.parametrize("kind, fed", [("eager", run.WARMUP_PROMPT_TOKENS), ("compiled", 100)])
def test_warm_up_decodes_each_setting_and_method_once_on_the_prompts_start(monkeypatch, kind, fed):
    decodes = []
    monkeypatch.setattr(run, "decode_one", lambda engine, method, ids, settings, stop, seed: decodes.append((method, ids.tolist())))
    monkeypatch.setattr(run, "job_settings", lambda cfg, combination, calibration: None)
    monkeypatch.setattr(run, "stop_for", lambda task, engine, chat, budget: budget)
    prompt = SimpleNamespace(ids=torch.arange(100))
    jobs = [
        SimpleNamespace(
            task=SimpleNamespace(name="t"), prompt=prompt, combination=combination, label=method, method=method, config=lambda cfg: cfg
        )
        for combination in ("we", "cd")
        for method in ("vanilla", "cos")
        for _ in range(2)  # two examples: still one warm-up each
    ]
    cfg = SimpleNamespace(warmup=1, budget=lambda task: 384)
    run.warm_up(cfg, SimpleNamespace(kind=kind), jobs, chat=False, calibration={})
    assert sorted(method for method, _ in decodes) == ["cos", "cos", "vanilla", "vanilla"]
    # Eager: the prompt's start runs every path; compiled: the full prompt, whose length it recorded.
    assert all(ids == list(range(fed)) for _, ids in decodes)
