"""The prepared GPU check runs end to end (scaled-down shapes on the CPU), so it cannot rot unseen."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_refuses_old_transformers_in_one_line(monkeypatch, capsys):
    # A GPU image may ship an older transformers (5.17 on the lent H200) whose forward lacks `cache=`.
    module = _load()
    monkeypatch.setattr(module.transformers, "__version__", "5.17.0")
    with pytest.raises(SystemExit):
        module.main(["--tiny", "--device", "cpu"])
    assert "transformers 5.17.0 found; the runners need >= 5.24" in capsys.readouterr().err


def test_gpu_check_smoke_on_cpu(tmp_path, capsys):
    module = _load()
    results = module.main(["--tiny", "--device", "cpu", "--prompt-tokens", "8", "--prompts", "1", "--new-tokens", "6", "--warmup-s", "0", "--out", str(tmp_path / "r.json")])
    assert len(results["pairs"]) == 3 and all(s > 0 for s in results["step_seconds"].values())
    for pair in results["pairs"]:
        assert pair["c"] > 0 and pair["vanilla_overhead"] > 0 and math.isfinite(pair["cos_speedup_measured"])
        assert pair["c_in_loop"] > 0 and pair["cos_speedup_theory_in_loop_c"] > 0
        # On the CPU forward calls are timed by the wall clock inside the decode's own wall time.
        assert pair["vanilla_loop_overhead"] >= 1 and pair["cos_loop_overhead"] >= 1
    out = capsys.readouterr().out
    assert "α is artificial" in out and (tmp_path / "r.json").exists()
