"""summarize() against numbers worked out by hand from tests/data/make_small_run.py's tables."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cos_bench.metrics import flatten_record, load_records, summarize
from cos_bench.paper import PAPER_SPEEDUPS, paper_speedup
from cos_bench.record import RunRecord
from cos_bench.report import write_summary_csv
from cos_bench.storage import RECORDS_NAME, ResultsStore

SMALL_RUN = Path(__file__).parent / "data" / "small_run"
nan = math.nan


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    return summarize(load_records([SMALL_RUN]))


def fixture_records() -> list[dict]:
    return [json.loads(line) for line in (SMALL_RUN / RECORDS_NAME).read_text().splitlines()]


def frame(records: list[dict]) -> pd.DataFrame:
    """Hand-edited JSON records read as the file would be, then flattened."""
    return pd.DataFrame([flatten_record(RunRecord.from_json(r), run="r") for r in records])


def row(summary: pd.DataFrame, task: str, method: str) -> pd.Series:
    rows = summary[(summary["task"] == task) & (summary["method"] == method)]
    assert len(rows) == 1
    return rows.iloc[0]


def close(actual, expected) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    return actual == pytest.approx(expected, rel=1e-9)


# task, method: (tok/s pooled, tok/s mean, speedup pooled, speedup mean)
SPEEDS = {
    # vanilla gsm8k: e1 100/2.0 = 50, e2 60/2.0 = 30 → pooled 160/4 = 40, mean 40
    ("gsm8k", "vanilla"): (40.0, 40.0, 1.0, 1.0),
    # sd gsm8k: 100/1.0 = 100, 60/1.5 = 40 → pooled 160/2.5 = 64, mean 70
    ("gsm8k", "sd"): (64.0, 70.0, 64 / 40, 70 / 40),
    # cos gsm8k: 100/0.8 = 125, 60/1.0 = 60 → pooled 160/1.8, mean 92.5
    ("gsm8k", "cos"): (160 / 1.8, 92.5, (160 / 1.8) / 40, 92.5 / 40),
    # vanilla humaneval: 100/4 = 25, 60/2 = 30 → pooled 160/6, mean 27.5
    ("humaneval", "vanilla"): (160 / 6, 27.5, 1.0, 1.0),
    # sd humaneval: 100/2 = 50, 60/1.2 = 50 → pooled 50, mean 50
    ("humaneval", "sd"): (50.0, 50.0, 50 / (160 / 6), 50 / 27.5),
    # cos humaneval: 100/1.25 = 80, 60/1.0 = 60 → pooled 160/2.25, mean 70
    ("humaneval", "cos"): (160 / 2.25, 70.0, (160 / 2.25) / (160 / 6), 70 / 27.5),
}


@pytest.mark.parametrize(("task", "method"), SPEEDS)
def test_rates_and_speedups(summary, task, method):
    pooled, mean, speedup_pooled, speedup_mean = SPEEDS[(task, method)]
    r = row(summary, task, method)
    assert (r["n_examples"], r["n_records"], r["tokens"]) == (2, 2, 160)
    assert close(r["tokens_per_s_pooled"], pooled)
    assert close(r["tokens_per_s_mean"], mean)
    assert close(r["speedup_pooled"], speedup_pooled)
    assert close(r["speedup_mean"], speedup_mean)


def test_spread_and_decode_only_rate(summary):
    r = row(summary, "gsm8k", "vanilla")
    assert close(r["tokens_per_s_std"], math.sqrt(2 * 10**2))  # rates 50 and 30, ddof=1
    assert close(r["tokens_per_s_repeat_std"], nan)  # one repeat: no spread over repeats
    assert close(r["decode_tokens_per_s_pooled"], (99 + 59) / (1.9 + 1.9))  # first token excluded
    assert close(r["first_token_s_mean"], 0.1)


def test_acceptance_columns(summary):
    sd = row(summary, "gsm8k", "sd")
    assert close(sd["alpha_expected"], (63 + 35) / (90 + 50))  # 0.7
    assert close(sd["alpha_empirical"], (70 + 40) / (90 + 50))
    assert close(sd["mean_accepted_length"], (70 + 40) / (30 + 20 + 2))  # accepted / (corrections + decodes)
    assert sd["acceptance_by_position"] == pytest.approx([(40 + 25) / (50 + 30), (30 + 15) / (40 + 20)])

    cos = row(summary, "gsm8k", "cos")
    assert close(cos["alpha_expected"], (64 + 14 + 34 + 8) / (80 + 20 + 40 + 10))  # 0.8
    assert close(cos["alpha_empirical"], (60 + 15 + 36 + 8) / (80 + 20 + 40 + 10))  # bonus drafts included
    assert close(cos["mean_accepted_length"], 119 / (25 + 16 + 2))
    # position 1 pools the small model's first drafts and the large model's bonus drafts
    assert cos["acceptance_by_position"] == pytest.approx([(40 + 15 + 22 + 8) / (50 + 20 + 25 + 10), (20 + 14) / (30 + 15)])
    assert close(row(summary, "humaneval", "cos")["alpha_expected"], 0.7)  # tasks are not mixed

    vanilla = row(summary, "gsm8k", "vanilla")
    assert close(vanilla["alpha_expected"], nan) and close(vanilla["mean_accepted_length"], nan)
    assert vanilla["acceptance_by_position"] == []


def test_forward_calls_per_token(summary):
    cos = row(summary, "gsm8k", "cos")
    assert close(cos["forward_calls_per_token_small"], (60 + 30) / 160)
    assert close(cos["forward_calls_per_token_large"], (45 + 25) / 160)
    vanilla = row(summary, "gsm8k", "vanilla")
    assert close(vanilla["forward_calls_per_token_small"], 1.0)


def test_theoretical_speedup_from_measured_alpha_and_c(summary):
    # c = 0.01 / 0.04 = 0.25; γ_small = 2, γ_large = 1.
    sd = row(summary, "gsm8k", "sd")  # Thm 3.1, α = 0.7: (1 − .49)(1.25) / ((.3)(1.5))
    assert close(sd["c"], 0.25)
    assert close(sd["theoretical_speedup"], 0.51 * 1.25 / (0.3 * 1.5))
    # Decode-only speedup (first 0.1 s of every decode excluded): vanilla 3.8 s vs sd 2.3 s for 158 tokens.
    assert close(sd["speedup_decode"], 3.8 / 2.3)
    assert close(sd["measured_over_theoretical"], (3.8 / 2.3) / (0.51 * 1.25 / 0.45))
    cos = row(summary, "gsm8k", "cos")  # Thm 3.6, α = 0.8: (1 − .64)(1.25) / ((.2)(1 + .5 − .8·.25))
    assert close(cos["theoretical_speedup"], 0.36 * 1.25 / (0.2 * 1.3))
    cos_he = row(summary, "humaneval", "cos")  # α = 0.7: (1 − .49)(1.25) / ((.3)(1 + .5 − .7·.25))
    assert close(cos_he["theoretical_speedup"], 0.51 * 1.25 / (0.3 * 1.325))
    assert close(row(summary, "gsm8k", "vanilla")["theoretical_speedup"], 1.0)


def test_quality_identical_and_paper(summary):
    assert close(row(summary, "gsm8k", "vanilla")["quality"], 0.5)
    assert close(row(summary, "gsm8k", "cos")["quality"], 1.0)
    assert close(row(summary, "humaneval", "sd")["quality"], 1.0)  # the unscored e2 is left out, not counted wrong
    assert close(row(summary, "gsm8k", "cos")["identical_to_vanilla"], 1.0)
    assert close(row(summary, "humaneval", "cos")["identical_to_vanilla"], 0.5)  # e2 differs in its last token
    assert close(row(summary, "humaneval", "vanilla")["identical_to_vanilla"], nan)
    assert close(row(summary, "gsm8k", "cos")["paper_speedup"], 1.46)  # qwen-1.5b-we, GSM8K
    assert close(row(summary, "humaneval", "cos")["paper_speedup"], 1.56)
    assert close(row(summary, "humaneval", "sd")["paper_speedup"], nan)  # the paper reports CoS only


def test_row_order_is_task_setting_temperature_method(summary):
    order = list(zip(summary["task"], summary["method"]))
    assert order == [
        ("gsm8k", "vanilla"),
        ("gsm8k", "sd"),
        ("gsm8k", "cos"),
        ("humaneval", "vanilla"),
        ("humaneval", "sd"),
        ("humaneval", "cos"),
    ]
    shuffled = summarize(frame(fixture_records()[::-1]))
    assert list(zip(shuffled["task"], shuffled["method"])) == order


def test_no_vanilla_means_no_speedup():
    records = [r for r in fixture_records() if r["method"] != "vanilla"]
    s = summarize(frame(records))
    assert s["speedup_mean"].isna().all() and s["speedup_pooled"].isna().all()
    assert s["identical_to_vanilla"].isna().all()
    assert s["measured_over_theoretical"].isna().all()
    assert s["theoretical_speedup"].notna().all()  # theory needs only α and c


def test_sampling_runs_have_no_identical_rate_and_missing_c_no_theory():
    records = copy.deepcopy(fixture_records())
    for r in records:
        r["temperature"] = 1.0
        r["calibration"]["c"] = None
    s = summarize(frame(records))
    assert s["identical_to_vanilla"].isna().all()
    assert s["c"].isna().all()
    assert s.loc[s["method"] != "vanilla", "theoretical_speedup"].isna().all()
    assert close(row(s, "gsm8k", "cos")["paper_speedup"], 1.46)  # qwen-1.5b-we states no temperature: still shown


def test_theory_tolerates_rounding_above_one_and_sd_listing_only_its_drafter():
    records = [r for r in copy.deepcopy(fixture_records()) if r["task"] == "gsm8k" and r["method"] == "sd"]
    for r in records:
        small = r["accounting"]["models"][0]
        small["alpha_sum"] = small["verified"] * (1 + 1e-7)  # α "1.0000001" from float32 sums
        r["gammas"] = {"small": 2}
    sd = row(summarize(frame(records)), "gsm8k", "sd")
    assert close(sd["theoretical_speedup"], 2 * 1.25 / 1.5)  # Thm 3.1 at α = 1: γ(1 + c)/(1 + cγ)


def test_repeats_give_spread_over_repeats():
    first = [r for r in fixture_records() if r["task"] == "gsm8k" and r["method"] in ("vanilla", "cos")]
    second = copy.deepcopy(first)
    for r in second:
        r["repeat"] = 1
        r["key"] = r["key"][:-1] + "1"
        if r["method"] == "cos":
            r["timing"]["total_s"] *= 2  # cos rates halve on repeat 1: mean rate 46.25
    s = summarize(frame(first + second))
    cos = row(s, "gsm8k", "cos")
    assert (cos["n_examples"], cos["n_records"]) == (2, 4)
    assert close(cos["tokens_per_s_repeat_std"], pd.Series([92.5, 46.25]).std())
    # per-repeat speedups 92.5/40 and 46.25/40
    assert close(cos["speedup_repeat_std"], pd.Series([92.5 / 40, 46.25 / 40]).std())
    assert close(cos["speedup_mean"], ((92.5 + 46.25) / 2) / 40)


def test_speedup_noise_is_the_standard_error_of_per_prompt_speedups(summary):
    # Two prompts each, paired with vanilla's rate on the same prompt (rates from SPEEDS' comments);
    # with two values the standard error is |a - b| / 2.
    expected = {
        ("gsm8k", "vanilla"): 0.0,  # 50/50, 30/30
        ("gsm8k", "sd"): (100 / 50 - 40 / 30) / 2,
        ("gsm8k", "cos"): (125 / 50 - 60 / 30) / 2,  # 2.5 and 2.0 → 0.25
        ("humaneval", "cos"): (80 / 25 - 60 / 30) / 2,  # 3.2 and 2.0 → 0.6
    }
    for (task, method), se in expected.items():
        assert close(row(summary, task, method)["speedup_prompt_se"], se), (task, method)


def test_sweep_cells_are_separate_rows_compared_with_unswept_vanilla():
    base = [r for r in fixture_records() if r["task"] == "gsm8k"]
    vanilla = [r for r in base if r["method"] == "vanilla"]
    cells = []
    for gamma, scale in ((1, 1.0), (3, 0.5)):
        for r in copy.deepcopy([r for r in base if r["method"] == "cos"]):
            r["sweep"] = {"gamma": gamma}
            r["gammas"] = {"small": gamma, "large": 1}
            r["timing"]["total_s"] *= scale
            cells.append(r)
    s = summarize(frame(vanilla + cells))
    cos = s[s["method"] == "cos"].sort_values("sweep_gamma")
    assert cos["sweep_gamma"].tolist() == [1, 3]
    assert cos["gammas_label"].tolist() == ["1,1", "3,1"]
    assert cos["speedup_mean"].tolist() == pytest.approx([92.5 / 40, 185 / 40])


def test_paper_table_lookups():
    assert paper_speedup("llama3-cd", 0.0, "humaneval") == 2.23
    assert paper_speedup("llama3-cd", 1, "GSM8K") == 1.44
    assert paper_speedup("llama2-cd", 1.0, "mmlu") == 1.37
    assert paper_speedup("qwen-3model-we", 0.0, "gsm8k") == 1.27  # printed value (asterisked in the paper)
    assert paper_speedup("llama-vicuna-we", 0.0, "mmlu") is None  # published at T=1 only
    assert paper_speedup("opt-cd", 0.0, "mmlu") is None
    assert paper_speedup(None, 0.0, "mmlu") is None
    assert paper_speedup("qwen-3b-we", 1.0, "squad") is None
    assert len(PAPER_SPEEDUPS) == 8


def test_framework_overhead_is_vanilla_time_per_token_over_bare_steps(summary):
    # Σ bare step times = 0.01 + 0.04 = 0.05 s; decode seconds = total − 0.1 over (tokens − 1) steps.
    gsm8k = ((2.0 - 0.1) / 99 / 0.05 + (2.0 - 0.1) / 59 / 0.05) / 2
    humaneval = ((4.0 - 0.1) / 99 / 0.05 + (2.0 - 0.1) / 59 / 0.05) / 2
    assert close(row(summary, "gsm8k", "vanilla")["framework_overhead"], gsm8k)
    assert close(row(summary, "humaneval", "vanilla")["framework_overhead"], humaneval)
    assert math.isnan(row(summary, "gsm8k", "cos")["framework_overhead"])  # defined for vanilla only


@pytest.mark.parametrize(
    ("task", "method", "expected"),
    [
        # forward seconds are 0.8 × total for e1 and 0.5 × total for e2 (make_small_run.FORWARD_SHARES)
        ("gsm8k", "vanilla", (2.0 + 2.0) / (0.8 * 2.0 + 0.5 * 2.0)),
        ("gsm8k", "cos", (0.8 + 1.0) / (0.8 * 0.8 + 0.5 * 1.0)),
        ("humaneval", "sd", (2.0 + 1.2) / (0.8 * 2.0 + 0.5 * 1.2)),
    ],
)
def test_loop_overhead_is_total_time_over_time_inside_forward_calls(summary, task, method, expected):
    assert close(row(summary, task, method)["loop_overhead"], expected)


def test_loop_overhead_is_nan_without_forward_timings():
    records = copy.deepcopy(fixture_records())
    for record in records:
        for model in record["accounting"]["models"]:
            model["forward_seconds"] = 0.0
    assert summarize(frame(records))["loop_overhead"].isna().all()


def with_pass_cost(records: list[dict], costs: list[dict]) -> list[dict]:
    """Records as this version writes them: calibration with each model's measured pass cost ρ (cycled over records)."""
    records = copy.deepcopy(records)
    for index, r in enumerate(records):
        r["calibration"]["pass_tokens"] = {"small": 2, "large": 3}
        r["calibration"]["pass_cost"] = costs[index % len(costs)]
    return records


def test_theory_with_the_measured_pass_cost():
    # ρ is the verifier's (large's) pass cost; its median over the group's two decodes is (1.5 + 2.5) / 2 = 2.
    costs = [{"small": 9.0, "large": 1.5}, {"small": 9.0, "large": 2.5}]
    s = summarize(frame(with_pass_cost(fixture_records(), costs)))
    sd, cos = row(s, "gsm8k", "sd"), row(s, "gsm8k", "cos")
    assert close(sd["pass_cost"], 2.0)
    # Thm 3.1 with the pass charged ρ: α = 0.7, c = 0.25, γ = 2: (1 − .49)(1.25) / ((.3)(2 + .5))
    assert close(sd["theoretical_speedup_measured_pass"], 0.51 * 1.25 / (0.3 * 2.5))
    assert close(sd["measured_over_theoretical_measured_pass"], (3.8 / 2.3) / (0.51 * 1.25 / 0.75))
    # Thm 3.6, α = 0.8, γq = 2, γp = 1: (1 − .64)(1.25) / ((.2)(2 + .5 − .8·.25))
    assert close(cos["theoretical_speedup_measured_pass"], 0.36 * 1.25 / (0.2 * 2.3))
    # The paper's columns are unchanged beside them.
    assert close(sd["theoretical_speedup"], 0.51 * 1.25 / (0.3 * 1.5))
    assert close(cos["theoretical_speedup"], 0.36 * 1.25 / (0.2 * 1.3))
    assert close(row(s, "gsm8k", "vanilla")["theoretical_speedup_measured_pass"], 1.0)


def test_pass_cost_is_the_verifier_of_the_default_proposer():
    records = with_pass_cost(fixture_records(), [{"small": 3.0, "large": 1.5}])
    for r in records:
        r["proposer"] = "large"  # now small verifies large's drafts
    s = summarize(frame(records))
    assert close(row(s, "gsm8k", "cos")["pass_cost"], 3.0)


def test_pass_cost_equal_to_one_reproduces_the_paper_columns():
    s = summarize(frame(with_pass_cost(fixture_records(), [{"small": 1.0, "large": 1.0}])))
    for column in ("theoretical_speedup", "measured_over_theoretical"):
        assert s[column + "_measured_pass"].tolist() == pytest.approx(s[column].tolist(), nan_ok=True)


def test_records_without_a_pass_cost_give_nan_not_the_paper(summary):
    # tests/data/small_run was written before the pass was timed.
    for column in ("pass_cost", "theoretical_speedup_measured_pass", "measured_over_theoretical_measured_pass"):
        assert summary[column].isna().all(), column
    assert summary["theoretical_speedup"].notna().all()


def test_three_models_have_no_pass_cost_theory():
    records = with_pass_cost(fixture_records(), [{"small": 2.0, "large": 2.0, "third": 2.0}])
    for r in records:
        r["n_models"] = 3
        r["gammas"]["third"] = 1
    s = summarize(frame(records))
    assert s["pass_cost"].isna().all()
    assert s.loc[s["method"] != "vanilla", "theoretical_speedup_measured_pass"].isna().all()


# --- records as rows ----------------------------------------------------------------------


def test_load_records_flattens_and_labels_runs(tmp_path):
    second = tmp_path / "second_run"
    shutil.copytree(SMALL_RUN, second)
    df = load_records([SMALL_RUN, second])
    assert len(df) == 24
    assert df.groupby("run").size().to_dict() == {"second_run": 12, "small_run": 12}
    cos = df[(df["run"] == "small_run") & (df["task"] == "gsm8k") & (df["method"] == "cos") & (df["example_id"] == "e1")]
    row = cos.iloc[0]
    assert row["total_s"] == 0.8 and row["decode_s"] == pytest.approx(0.7)
    assert (row["drafted"], row["accepted"], row["bonus_drafted"], row["bonus_accepted"]) == (80, 60, 20, 15)
    assert row["drafted_by_position"] == [70, 30] and row["accepted_by_position"] == [55, 20]
    assert (row["forward_calls.small"], row["forward_calls.large"]) == (60, 45)
    assert row["gammas_label"] == "2,1" and row["c"] == 0.25 and row["correct"] is True


def test_load_records_reads_sweep_fields(tmp_path):
    base = fixture_records()[4]
    ResultsStore(tmp_path).append(RunRecord.from_json({**base, "key": "a", "sweep": {"gamma": 3, "pair": [3, 1]}}))
    with open(tmp_path / RECORDS_NAME, "a", encoding="utf-8") as handle:  # the flat pair early sweep cells wrote
        handle.write(json.dumps({**base, "key": "b", "sweep_param": "gamma", "sweep_value": 4}) + "\n")
    df = load_records([tmp_path])
    assert df["sweep_gamma"].tolist() == [3, 4]
    assert df["sweep_pair"].iloc[0] == "[3, 1]"


def test_the_small_run_summarises_as_before_the_typed_record(tmp_path):
    # tests/data/small_run_summary.csv was written from the same records while they were still read as dicts
    # (since then only the `arm` column was added, empty for every row: these records have no arms).
    write_summary_csv(summarize(load_records([SMALL_RUN])), tmp_path / "summary.csv")
    expected = (SMALL_RUN.parent / "small_run_summary.csv").read_text(encoding="utf-8")
    assert (tmp_path / "summary.csv").read_text(encoding="utf-8") == expected
