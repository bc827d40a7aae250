"""Engine building: a compiled runner that cannot compile is one line, never a compiler traceback."""

from __future__ import annotations

import pytest
from rich.console import Console
from tiny import save_tiny_pair

from cos_bench.config import load_config
from cos_bench.core.runner import StaticRunner
from cos_bench.engine import build_runners, load_engine, resolve_engine
from cos_bench.errors import CosBenchError


def test_auto_is_eager_off_cuda_and_compiled_is_kept_when_asked():
    assert resolve_engine("auto", "cpu") == "eager"
    assert resolve_engine("compiled", "cpu") == "compiled"
    assert resolve_engine("eager", "cpu") == "eager"


def test_a_model_that_does_not_compile_is_one_line(tmp_path, monkeypatch):
    small, large = save_tiny_pair(tmp_path / "models")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "name: tiny\n"
        f"models: [{{name: small, source: '{small}'}}, {{name: large, source: '{large}'}}]\n"
        "combinations: [{rule: we, weights: [0.5, 0.5]}]\n"
        "engine: compiled\ndtype: float32\ndevice: cpu\n"
    )
    cfg = load_config(config)

    def broken(self, lengths, rounds=3):
        raise RuntimeError("Unsupported: data-dependent branch in forward\nlong compiler trace...")

    monkeypatch.setattr(StaticRunner, "warm_up", broken)
    engine = load_engine(cfg, Console(quiet=True))
    with pytest.raises(CosBenchError) as error:
        build_runners(cfg, engine, [5], Console(quiet=True), {})
    message = str(error.value)
    assert "\n" not in message and "could not compile or record small" in message
    assert "RuntimeError: Unsupported: data-dependent branch in forward" in message and "--engine eager" in message
