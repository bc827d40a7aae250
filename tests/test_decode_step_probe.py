"""scripts/decode_step_probe.py times four forward patterns: each must feed what its name says."""

from __future__ import annotations

import pytest
import torch
from script_loader import load_script
from tiny import tiny_llama

from cos_bench.core.runner import HFRunner

script = load_script("decode_step_probe")
VOCAB = 64


class Recording(HFRunner):
    """An HFRunner that notes, per single-token feed, the cache length it was fed at and the token."""

    def __init__(self, name: str, seed: int, log: list):
        super().__init__(name, tiny_llama(seed, VOCAB), VOCAB)
        self.log = log

    def feed(self, tokens: torch.Tensor, keep: int) -> torch.Tensor:
        if tokens.shape[0] == 1:
            self.log.append((self.name, self.cache_len, int(tokens[0])))
        return super().feed(tokens, keep)


@pytest.mark.parametrize("pattern", script.PATTERNS)
def test_each_pattern_feeds_its_context_and_order(pattern):
    log: list = []
    runners = [Recording("small", 0, log), Recording("large", 1, log)]
    prompt, steps = torch.tensor([3, 5, 7, 9]), 5
    times = script.time_pattern(runners, prompt, steps, pattern)
    assert {name: len(values) for name, values in times.items()} == {"small": steps, "large": steps}
    assert all(seconds > 0 for values in times.values() for seconds in values)
    names = [name for name, _, _ in log]
    contexts = {name: [context for who, context, _ in log if who == name] for name in ("small", "large")}
    if pattern.startswith("alternating"):
        assert names == ["small", "large"] * steps
    else:
        assert names == ["small"] * steps + ["large"] * steps
    growing = list(range(len(prompt), len(prompt) + steps))
    for name in ("small", "large"):
        assert contexts[name] == (growing if pattern.endswith("growing") else [len(prompt)] * steps)
    if pattern == "alternating_growing":  # vanilla's pattern: both models are fed the same token each step
        fed = [token for _, _, token in log]
        assert fed[0::2] == fed[1::2]
    assert all(runner.cache_len == 0 for runner in runners)  # reset after timing


def test_summary_ratios_are_to_the_calibrated_step():
    summary = script.summarise({"m": [0.1, 0.3, 0.2]}, {"m": 0.1})
    assert summary == {"m": {"median_ms": 200.0, "mean_ms": 200.0, "mean_over_calibrated": 2.0}}
