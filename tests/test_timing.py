"""Calibration timing: the k-token verification pass, its cache handling, and what calibrate returns."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from tiny import tiny_llama

from cos_bench import run, timing
from cos_bench.core import HFRunner
from cos_bench.errors import CosBenchError
from cos_bench.models import single_token_onednn
from cos_bench.timing import PASS_HOW, pass_seconds, pass_tokens, step_seconds

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


def test_pass_seconds_feeds_k_tokens_at_the_prompts_length_every_time():
    runner = spy("m", 0)
    seconds = pass_seconds(runner, PROMPTS, CPU, tokens=4, repeats=3)
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


def test_pass_seconds_is_the_median_of_the_timed_passes(monkeypatch):
    monkeypatch.setattr(timing, "timed", fake_clock(0.01))
    FED.clear()
    assert pass_seconds(spy("m", 0, CountingRunner), PROMPTS, CPU, tokens=6) == pytest.approx(0.06)


@pytest.mark.parametrize("tokens", [0, -2, 2.0, True])
def test_pass_seconds_refuses_a_bad_length(tokens):
    with pytest.raises(CosBenchError, match="tokens must be an integer"):
        pass_seconds(spy("m", 0), PROMPTS, CPU, tokens=tokens)


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
    cfg = SimpleNamespace(model_names=("small", "large"), gammas=(4, 1), proposer="small")
    calibration = run.calibrate(cfg, eager_engine(runners), PROMPTS, Console(file=io.StringIO()))
    assert set(calibration) >= {"step_seconds", "c", "c_how", "proposer"}  # the keys that were there before
    assert calibration["pass_tokens"] == {"small": 2, "large": 5}  # large verifies small's 4 drafts (+1)
    assert calibration["pass_seconds"] == pytest.approx({"small": 0.02, "large": 0.05})
    assert calibration["pass_cost"] == pytest.approx({"small": 2.0, "large": 5.0})
    assert calibration["pass_how"] == PASS_HOW
    assert calibration["step_seconds"] == pytest.approx({"small": 0.01, "large": 0.01})


def test_calibrate_on_real_clocks_gives_consistent_ratios():
    runners = [spy("small", 0), spy("large", 1)]
    cfg = SimpleNamespace(model_names=("small", "large"), gammas=(3, 2), proposer="small")
    calibration = run.calibrate(cfg, eager_engine(runners), PROMPTS, Console(file=io.StringIO()))
    for name in ("small", "large"):
        assert calibration["pass_cost"][name] == pytest.approx(calibration["pass_seconds"][name] / calibration["step_seconds"][name])
    assert {k for _, k, keep in runners[1].feeds if keep > 1} == {4}  # large's timed passes: γ_small + 1 tokens
    assert {k for _, k, keep in runners[0].feeds if keep > 1} == {3}


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


@pytest.mark.parametrize("off_ms, kept", [(30.0, False), (90.0, True), (60.0, True)])
def test_calibration_keeps_the_faster_single_token_library_per_model(monkeypatch, off_ms, kept):
    runners = [spy("small", 0), spy("large", 1)]
    models = [r.inner.model for r in runners]
    # A clock that reads 60 ms per single step with oneDNN on and off_ms with it off.
    monkeypatch.setattr(
        timing, "step_seconds", lambda runner, prompts, device: (60.0 if single_token_onednn(runner.inner.model).enabled else off_ms) / 1e3
    )
    chosen = timing.choose_single_token_onednn(runners, models, PROMPTS, CPU)
    assert list(chosen) == ["small", "large"]
    for choice in chosen.values():
        assert choice["onednn"] is kept and choice["on_ms"] == pytest.approx(60.0) and choice["off_ms"] == pytest.approx(off_ms)
        assert choice["kept_ms"] == pytest.approx(60.0 if kept else off_ms)
    assert [single_token_onednn(m).enabled for m in models] == [kept, kept]
    assert timing.choose_single_token_onednn(runners, models, PROMPTS, torch.device("meta")) == {}  # only CPUs choose


def test_calibrate_records_the_choice_with_how_it_was_made():
    runners = [spy("small", 0), spy("large", 1)]
    cfg = SimpleNamespace(model_names=("small", "large"), gammas=(3, 1), proposer="small")
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
