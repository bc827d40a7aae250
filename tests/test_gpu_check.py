"""The prepared GPU check runs end to end (scaled-down shapes on the CPU), so it cannot rot unseen."""

from __future__ import annotations

import math

import pytest
from script_loader import load_script


def test_gpu_check_refuses_old_transformers_in_one_line(monkeypatch, capsys):
    # A GPU image may ship an older transformers (5.17 on the lent H200) whose forward lacks `cache=`.
    module = load_script("gpu_check")
    monkeypatch.setattr(module.transformers, "__version__", "5.17.0")
    with pytest.raises(SystemExit):
        module.main(["--tiny", "--device", "cpu"])
    assert "transformers 5.17.0 found; the runners need >= 5.24" in capsys.readouterr().err


SMOKE = ["--tiny", "--device", "cpu", "--prompt-tokens", "8", "--prompts", "1", "--new-tokens", "6", "--warmup-s", "0", "--copy-mb", "8"]


def check_engine(results: dict, engine: str) -> None:
    assert set(results["models"][engine]) == {"tiny-a", "tiny-b", "tiny-c"}
    for times in results["models"][engine].values():
        assert times["step_s"] > 0 and times["verify_s"] > 0 and times["verify_tokens"] == 6 and times["floor_s"] > 0
    assert len(results["pairs"][engine]) == 3
    for pair in results["pairs"][engine]:
        assert pair["c"] > 0 and pair["vanilla_overhead"] > 0 and math.isfinite(pair["cos_speedup_measured"])
        assert pair["cos_speedup_theory"] > 0 and pair["cos_speedup_theory_measured_pass"] > 0 and pair["verifier_pass_cost"] > 0
        # On the CPU forward calls are timed by the wall clock inside the decode's own wall time.
        assert pair["vanilla_loop_overhead"] >= 1 and pair["cos_loop_overhead"] >= 1


def test_gpu_check_smoke_on_cpu(tmp_path, capsys):
    module = load_script("gpu_check")
    results = module.main([*SMOKE, "--engines", "eager", "--out", str(tmp_path / "r.json")])
    check_engine(results, "eager")
    assert results["copy_bandwidth_bytes_per_s"] > 0 and not results["skipped"]
    out = capsys.readouterr().out
    assert "α is artificial" in out and (tmp_path / "r.json").exists()


def test_gpu_check_stops_starting_stages_when_the_budget_is_spent(tmp_path):
    module = load_script("gpu_check")
    results = module.main([*SMOKE, "--engines", "eager", "--budget-s", "0", "--out", str(tmp_path / "r.json")])
    assert results["models"]["eager"] == {} and len(results["skipped"]) == 6  # 3 models, 3 pairs
    assert "done" in results["stages_s"]


@pytest.mark.slow
def test_gpu_check_compiled_side_by_side_on_cpu(tmp_path):
    # Both engines in one run (inductor without CUDA graphs on a CPU): compiles each tiny model.
    results = load_script("gpu_check").main([*SMOKE, "--out", str(tmp_path / "r.json")])
    check_engine(results, "eager")
    check_engine(results, "compiled")
    assert all(times["compile_s"] > 0 for times in results["models"]["compiled"].values())
    assert len(results["compiled_vs_eager"]) == 3
