"""scripts/targets.py counts hits and misses of issue 5's targets correctly, from a hand-made summary."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from script_loader import load_script

GREEDY, SAMPLED = "gamma.small-5_temperature-0", "gamma.small-1_temperature-1"
GAMMA_OF = {GREEDY: 5, SAMPLED: 1}  # the sweep_gamma.small column that cos-bench writes beside the run name


def _row(run, temperature, method, speedup, theory=None, ratio=None, overhead=None, identical=None, alpha=None, loop=None, se=None):
    return {
        "run": run,
        "sweep_gamma.small": GAMMA_OF[run],
        "sweep_temperature": temperature,
        "task": "gsm8k",
        "setting": "we-0.5",
        "temperature": temperature,
        "method": method,
        "n_examples": 4,
        "speedup_mean": speedup,
        "speedup_decode": speedup,
        "theoretical_speedup": "n/a" if theory is None else theory,
        "measured_over_theoretical": "n/a" if ratio is None else ratio,
        "alpha_expected": "n/a" if alpha is None else alpha,
        "c": 0.4,
        "framework_overhead": "n/a" if overhead is None else overhead,
        "loop_overhead": "n/a" if loop is None else loop,
        "speedup_prompt_se": "n/a" if se is None else se,
        "identical_to_vanilla": "n/a" if identical is None else identical,
    }


def _summary(tmp_path: Path) -> Path:
    greedy, sampled = GREEDY, SAMPLED
    rows = [
        # Greedy cell: every target met except identity (3 of 4 examples).
        _row(greedy, 0.0, "vanilla", 1.0, 1.0, 1.0, overhead=1.05, loop=1.01),
        _row(greedy, 0.0, "sd", 1.5, 1.5, 1.0, identical=1.0, alpha=0.9),
        _row(greedy, 0.0, "cos", 1.8, 1.9, 0.95, identical=0.75, alpha=0.9, loop=1.02),
        _row(greedy, 0.0, "hf-ensemble", 1.2, identical=0.5),
        # Sampled cell: cos slower than sd and below theory, overhead too high, hf-ensemble beats cos.
        _row(sampled, 1.0, "vanilla", 1.0, 1.0, 1.0, overhead=1.2, loop=1.01),
        _row(sampled, 1.0, "sd", 1.3, 1.3, 1.0, alpha=0.8, se=0.1),
        _row(sampled, 1.0, "cos", 1.1, 1.5, 0.7, alpha=0.8, loop=1.03, se=0.2),
        _row(sampled, 1.0, "hf-ensemble", 1.4),
    ]
    path = tmp_path / "summary.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_tallies_count_each_target_and_name_the_misses(tmp_path):
    targets = load_script("targets")
    lines = targets.tallies(targets.load(_summary(tmp_path)))
    assert lines[0].startswith("cos faster than vanilla: 2 / 2 groups")
    assert lines[1] == (
        "cos not slower than sd: 1 / 2 groups (cos/sd 0.85-1.20); misses (speedup ± standard error over "
        "prompts): γ=1, T=1 gsm8k we-0.5 cos 1.10 ± 0.20 vs sd 1.30 ± 0.10"
    )
    assert lines[2].startswith("hf-ensemble faster than cos: 1 / 2 WE groups")
    assert lines[3].startswith("cos measured/theory >= 0.9: 1 / 2 groups") and "γ=1, T=1 gsm8k we-0.5 0.70" in lines[3]
    assert lines[5].startswith("vanilla overhead <= 1.1: 1 / 2 groups") and "1.20" in lines[5]
    assert lines[6] == "vanilla loop overhead (wall time / time inside forward calls, same decodes): 1.010-1.010 over 2 groups"
    assert lines[7] == "cos loop overhead (wall time / time inside forward calls, same decodes): 1.020-1.030 over 2 groups"
    assert lines[8] == "greedy cos identical to vanilla: 3 / 4 examples; 0 / 1 groups at 1.00"
    assert lines[9] == "greedy sd identical to vanilla: 4 / 4 examples; 1 / 1 groups at 1.00"
    assert lines[10] == "greedy hf-ensemble identical to vanilla: 2 / 4 examples; 0 / 1 groups at 1.00"


def test_a_summary_without_standard_errors_still_names_the_misses(tmp_path):
    targets = load_script("targets")
    path = _summary(tmp_path)
    pd.read_csv(path).drop(columns=["speedup_prompt_se"]).to_csv(path, index=False)  # summaries older than the column
    lines = targets.tallies(targets.load(path))
    assert lines[1].endswith("misses (speedup ± standard error over prompts): γ=1, T=1 gsm8k we-0.5 cos 1.10 vs sd 1.30")


def test_table_has_one_row_per_group_with_cos_alpha(tmp_path):
    targets = load_script("targets")
    table = targets.markdown_table(targets.load(_summary(tmp_path))).splitlines()
    assert len(table) == 4
    assert table[2] == "| γ=1, T=1 | gsm8k | we-0.5 | 4 | 1.10 | 1.30 | 1.40 | n/a | 1.10 | 1.50 | 0.70 | 0.80 | 0.40 | 1.20 | 1.01 | n/a |"


def test_missing_summary_is_a_one_line_error(tmp_path, capsys):
    assert load_script("targets").main([str(tmp_path / "nope.csv")]) == 2
    assert "run `cos-bench report" in capsys.readouterr().err


def test_a_summary_without_hf_ensemble_skips_its_tallies(tmp_path):
    # A CD-only run (e.g. results/cpu-fp32-identity) has no hf-ensemble rows at all.
    targets = load_script("targets")
    path = _summary(tmp_path)
    frame = pd.read_csv(path)
    frame[frame.method != "hf-ensemble"].to_csv(path, index=False)
    lines = targets.tallies(targets.load(path))
    assert not any("hf-ensemble" in line for line in lines)
    assert lines[1].startswith("cos not slower than sd: 1 / 2 groups")
    assert lines[2].startswith("cos measured/theory >= 0.9: 1 / 2 groups")


def test_arm_rows_are_left_out_of_the_runs_own_methods(tmp_path):
    # A summary with `cos` arms (config `arms:`) has several cos rows per group; only the run's own
    # cos (arm "", written empty in the CSV) is issue 5's, whatever order the rows come in.
    targets = load_script("targets")
    path = _summary(tmp_path)
    frame = pd.read_csv(path).assign(arm="")
    arms = frame[frame.method == "cos"].assign(arm="confidence-0.4", speedup_mean=9.0, alpha_expected=0.1)
    pd.concat([arms, frame]).to_csv(path, index=False)
    groups = targets.load(path)
    assert len(groups) == 2
    assert sorted(groups.cos_speedup_mean) == [1.1, 1.8] and sorted(groups.alpha) == [0.8, 0.9]
    assert targets.tallies(groups) == targets.tallies(targets.load(_summary(tmp_path)))
