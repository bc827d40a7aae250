"""Report output: the exact Markdown table, files written, console table, plots."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from cos_bench.errors import CosBenchError
from cos_bench.metrics import flatten_record, load_records, summarize
from cos_bench.record import RunRecord
from cos_bench.report import (
    fmt,
    headline,
    plot_sweep,
    render_headline,
    summary_markdown,
    write_report,
    write_summary_csv,
)
from cos_bench.storage import RECORDS_NAME

SMALL_RUN = Path(__file__).parent / "data" / "small_run"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Every number below follows from tests/data/make_small_run.py (see test_metrics.py for the arithmetic).
EXPECTED_MARKDOWN = """\
# cos-bench summary

Speedups compare with `vanilla` of the same run, task, setting and temperature. Columns marked *measured* come straight from timed decodes; *computed* ones are derived from measured values by the paper's formulas. n/a = not applicable or not measured.

## Headline

speedup = mean per-prompt tokens/s ÷ vanilla's, ± its standard error over prompts (measured); Thm = the paper's Thm 3.1 (sd) / 3.6 (cos) from the measured α and c (computed); α and identity of cos (else sd); quality: vanilla → cos.

| task | setting | T | vanilla tok/s | sd speedup | cos speedup | α | greedy identical | quality |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| gsm8k | we-0.5 | 0.0 | 40.0 | 1.75 ± 0.33 (Thm 1.42) | 2.31 ± 0.25 (Thm 1.73) | 0.800 | 1.00 | 0.50 → 1.00 |
| humaneval | we-0.5 | 0.0 | 27.5 | 1.82 ± 0.17 (Thm 1.42) | 2.55 ± 0.60 (Thm 1.60) | 0.700 | 0.50 | 1.00 → 1.00 |

## Every column

- **T**: sampling temperature (0 = greedy)
- **γ**: draft lengths, default proposer's first
- **n**: prompts × decodes per prompt
- **tok/s pooled**: measured: Σ tokens / Σ seconds
- **tok/s mean ± sd**: measured: mean over decodes of tokens/seconds (the paper's figure); ± its standard deviation
- **speedup mean**: measured: tokens_per_s_mean / the same of vanilla
- **speedup pooled**: measured: tokens_per_s_pooled / the same of vanilla
- **speedup decode**: measured: decode-only rate (first token and prefill excluded) / the same of vanilla — what the theorems model
- **α expected**: measured: α = Σ over verified drafts of Σ_x min(draft(x), combined(x)) / their number, all models pooled
- **α empirical**: measured: accepted drafts / drafted tokens, verifier bonus drafts included, all models pooled
- **mean acc. len**: measured: accepted drafts (bonus included) per rejection-or-end event, = Σ accepted / (Σ corrections + decodes); the mean length of an unbroken accepted streak
- **c**: measured: median over decodes of c = proposer step time / verifier step time (calibration)
- **pass cost ρ**: measured: median over decodes of ρ = the verifier's (γq+1)-token forward pass time / its single-step time (calibration; γq = the default proposer's γ); n/a with n > 2 models or records from before it was measured
- **theory**: computed from measured α (alpha_expected), c and γ: Thm 3.1 for sd, Thm 3.6 for 2-model cos, as the paper states them (a (γq+1)-token verification pass costs one step); n/a where the paper has no formula
- **measured/theory**: computed: speedup_decode / theoretical_speedup (the theorems model decoding steps, not the prefill every method pays alike)
- **theory (measured pass)**: computed: the same expectation with the verification pass charged its measured cost ρ (pass_cost) instead of one step: E(1 + c)/(ρ + cγ) for sd, E(1 + c)/(ρ + cγq − α^γp·c) for 2-model cos, E = (1 − α^γq)/(1 − α); n/a where the paper has no formula or ρ was not measured
- **measured/theory (measured pass)**: computed: speedup_decode / theoretical_speedup_measured_pass
- **overhead**: measured, vanilla only: decode seconds per token (first token excluded) / Σ the models' bare single-step forward times from calibration; 1.0 = no cost beyond the forward passes
- **loop overhead**: measured: Σ end-to-end seconds / Σ seconds inside the models' forward calls, same decodes, prefill included; what the decoding loop (combining, sampling, verifying, bookkeeping) adds, free of calibration noise
- **quality**: measured: share of scored decodes judged correct (pass@1 for code)
- **identical**: measured, T=0 only: share of decodes whose token ids equal vanilla's for the same prompt and repeat
- **paper**: from the paper (docs/design.md §5): CoS over vanilla, where the run names a paper setting

| task | setting | T | method | γ | n | tok/s pooled | tok/s mean ± sd | speedup mean | speedup pooled | speedup decode | α expected | α empirical | mean acc. len | c | pass cost ρ | theory | measured/theory | theory (measured pass) | measured/theory (measured pass) | overhead | loop overhead | quality | identical | paper |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| gsm8k | we-0.5 | 0.0 | vanilla | n/a | 2×1 | 40.0 | 40.0 ± 14.1 | 1.00 | 1.00 | 1.00 | n/a | n/a | n/a | 0.250 | n/a | 1.00 | 1.00 | n/a | n/a | 0.51 | 1.54 | 0.500 | n/a | n/a |
| gsm8k | we-0.5 | 0.0 | sd | 2,1 | 2×1 | 64.0 | 70.0 ± 42.4 | 1.75 | 1.60 | 1.65 | 0.700 | 0.786 | 2.12 | 0.250 | n/a | 1.42 | 1.17 | n/a | n/a | n/a | 1.61 | 0.500 | 1.00 | n/a |
| gsm8k | we-0.5 | 0.0 | cos | 2,1 | 2×1 | 88.9 | 92.5 ± 46.0 | 2.31 | 2.22 | 2.38 | 0.800 | 0.793 | 2.77 | 0.250 | n/a | 1.73 | 1.37 | n/a | n/a | n/a | 1.58 | 1.000 | 1.00 | 1.46 |
| humaneval | we-0.5 | 0.0 | vanilla | n/a | 2×1 | 26.7 | 27.5 ± 3.5 | 1.00 | 1.00 | 1.00 | n/a | n/a | n/a | 0.250 | n/a | 1.00 | 1.00 | n/a | n/a | 0.72 | 1.43 | 1.000 | n/a | n/a |
| humaneval | we-0.5 | 0.0 | sd | 2,1 | 2×1 | 50.0 | 50.0 ± 0.0 | 1.82 | 1.88 | 1.93 | 0.700 | 0.786 | 2.12 | 0.250 | n/a | 1.42 | 1.36 | n/a | n/a | n/a | 1.45 | 1.000 | 1.00 | n/a |
| humaneval | we-0.5 | 0.0 | cos | 2,1 | 2×1 | 71.1 | 70.0 ± 14.1 | 2.55 | 2.67 | 2.83 | 0.700 | 0.793 | 2.77 | 0.250 | n/a | 1.60 | 1.76 | n/a | n/a | n/a | 1.50 | 1.000 | 0.50 | 1.56 |
"""


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    return summarize(load_records([SMALL_RUN]))


def test_markdown_table_is_exactly_as_expected(summary):
    assert summary_markdown(summary) == EXPECTED_MARKDOWN


def test_write_report_writes_every_file(tmp_path):
    paths = write_report([SMALL_RUN], tmp_path / "report")
    assert paths.summary_md.read_text(encoding="utf-8") == EXPECTED_MARKDOWN
    for png in (paths.speedup_png, paths.acceptance_png):
        assert png.read_bytes()[:8] == PNG_MAGIC
    csv = pd.read_csv(paths.summary_csv)
    assert list(csv["method"]) == ["vanilla", "sd", "cos", "vanilla", "sd", "cos"]
    assert csv["speedup_mean"].tolist() == pytest.approx([1.0, 1.75, 2.3125, 1.0, 50 / 27.5, 70 / 27.5])
    assert csv["alpha_expected"].isna().tolist() == [True, False, False, True, False, False]  # "n/a" reads back as NaN
    assert json.loads(csv["acceptance_by_position"][1]) == pytest.approx([0.8125, 0.75])


def test_report_over_two_runs_names_the_run(tmp_path):
    other = tmp_path / "other_run"
    shutil.copytree(SMALL_RUN, other)
    paths = write_report([SMALL_RUN, other], tmp_path / "report")
    lines = paths.summary_md.read_text(encoding="utf-8").splitlines()
    full = lines[lines.index("## Every column") :]
    table = [line for line in full if line.startswith("| ")]
    assert table[0].startswith("| run | task |")
    assert len(table) == 2 + 12  # header, separator, 2 runs × 6 rows
    # Runs side by side per method, in the order the folders were given.
    assert table[2].startswith("| small_run | gsm8k | we-0.5 | 0.0 | vanilla |")
    assert table[3].startswith("| other_run | gsm8k | we-0.5 | 0.0 | vanilla |")


def test_headline_shows_na_where_nothing_was_measured(summary):
    # small_run has no pass cost and no hf-ensemble: the headline says n/a, never a blank or a 0.
    _, rows = headline(summary.assign(theoretical_speedup=float("nan"), speedup_prompt_se=float("nan")))
    assert rows[0][4] == "1.75 ± n/a" and "Thm" not in rows[0][5]


def test_fmt():
    assert fmt(None) == "n/a"
    assert fmt(math.nan) == "n/a"
    assert fmt(1.23456) == "1.23"
    assert fmt(1.23456, 3) == "1.235"
    assert fmt(7) == "7"
    assert fmt("cos") == "cos"


def _sweep_summary() -> pd.DataFrame:
    records = [json.loads(line) for line in (SMALL_RUN / RECORDS_NAME).read_text().splitlines()]
    rows = [r for r in records if r["method"] == "vanilla"]
    for proposer in ("small", "large"):
        for gamma in (1, 2, 4):
            for r in copy.deepcopy([r for r in records if r["method"] == "cos"]):
                r["proposer"] = proposer
                r["sweep"] = {"gamma": gamma}
                r["timing"]["total_s"] /= gamma
                rows.append(r)
    return summarize(pd.DataFrame([flatten_record(RunRecord.from_json(r), run="sweep") for r in rows]))


def test_plot_sweep_draws_one_line_per_proposer(tmp_path):
    summary = _sweep_summary()
    assert len(summary[summary["method"] == "cos"]) == 2 * 2 * 3  # tasks × proposers × γ
    out = tmp_path / "sweep.png"
    plot_sweep(summary, "gamma", out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert "gamma" in summary_markdown(summary)


def test_plot_sweep_accepts_dotted_parameter_names(tmp_path):
    summary = _sweep_summary().rename(columns={"sweep_gamma": "sweep_gamma.small"})
    plot_sweep(summary, "gamma.small", tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_sweep_of_an_unswept_parameter_says_which_exist(tmp_path):
    with pytest.raises(CosBenchError, match="no sweep over 'lambda'.*sweeps found: gamma"):
        plot_sweep(_sweep_summary(), "lambda", tmp_path / "x.png")


def test_report_shows_the_pass_cost_and_the_theory_with_it(tmp_path):
    records = [json.loads(line) for line in (SMALL_RUN / RECORDS_NAME).read_text().splitlines()]
    for r in records:
        r["calibration"]["pass_cost"] = {"small": 1.5, "large": 2.0}  # the verifier (large) is the one that counts
    summary = summarize(pd.DataFrame([flatten_record(RunRecord.from_json(r), run="new") for r in records]))
    lines = summary_markdown(summary).splitlines()
    header = next(line for line in lines if line.startswith("| task | setting | T | method |")).split(" | ")
    sd = next(line for line in lines if line.startswith("| gsm8k | we-0.5 | 0.0 | sd |")).split(" | ")
    cell = dict(zip(header, sd))
    assert cell["c"] == "0.250" and cell["pass cost ρ"] == "2.00"
    assert cell["theory"] == "1.42"  # as the paper states it: 0.51·1.25 / (0.3·1.5)
    assert cell["theory (measured pass)"] == "0.85"  # 0.51·1.25 / (0.3·(2 + 0.5))
    assert cell["measured/theory (measured pass)"] == fmt((3.8 / 2.3) / (0.51 * 1.25 / 0.75))
    assert header.index("pass cost ρ") == header.index("c") + 1  # ρ beside c
    assert any(line.startswith("- **theory (measured pass)**: computed:") for line in lines)  # says how it was obtained
    csv_path = tmp_path / "summary.csv"
    write_summary_csv(summary, csv_path)
    csv = pd.read_csv(csv_path)
    assert csv["pass_cost"].tolist() == pytest.approx([2.0] * 6)
    assert csv["theoretical_speedup_measured_pass"].notna().all()


def test_old_records_summarise_with_na_pass_columns(tmp_path):
    paths = write_report([SMALL_RUN], tmp_path / "report")  # written before the pass was timed
    csv = pd.read_csv(paths.summary_csv)
    for column in ("pass_cost", "theoretical_speedup_measured_pass", "measured_over_theoretical_measured_pass"):
        assert csv[column].isna().all(), column


def test_headline_answers_the_first_questions_in_at_most_ten_columns(summary):
    # Per task × setting: vanilla's rate, each method's speedup ± its prompt standard error next to the
    # paper's theorem, α, greedy identity and quality — the numbers of the full table, in one row.
    headers, rows = headline(summary)
    assert len(headers) <= 10
    assert headers == ["task", "setting", "T", "vanilla tok/s", "sd speedup", "cos speedup", "α", "greedy identical", "quality"]
    assert [row[:2] for row in rows] == [["gsm8k", "we-0.5"], ["humaneval", "we-0.5"]]
    cos = summary[(summary["task"] == "gsm8k") & (summary["method"] == "cos")].iloc[0]
    assert rows[0][5] == f"{fmt(cos['speedup_mean'])} ± {fmt(cos['speedup_prompt_se'])} (Thm {fmt(cos['theoretical_speedup'])})"
    assert rows[0][6:] == [fmt(cos["alpha_expected"], 3), fmt(cos["identical_to_vanilla"]), "0.50 → 1.00"]
    console = Console(record=True, width=200)
    console.print(render_headline(summary))
    text = console.export_text()
    assert "cos speedup" in text and "2.31 ± 0.25 (Thm 1.73)" in text


def test_headline_names_the_run_when_several_are_compared(summary):
    other = summary.assign(run="other_run")
    _, rows = headline(pd.concat([summary, other], ignore_index=True))
    assert len(rows) == 4 and rows[0][0].endswith(": gsm8k") and rows[-1][0] == "other_run: humaneval"
