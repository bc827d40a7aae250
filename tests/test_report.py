"""Report output: the exact Markdown table, files written, console table, plots."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from rich.console import Console

from cos_bench.errors import CosBenchError
from cos_bench.metrics import flatten_record, load_records, summarize
from cos_bench.plots import plot_acceptance, plot_speedups, plot_sweep
from cos_bench.record import RunRecord
from cos_bench.report import (
    fmt,
    headline,
    render_headline,
    summary_markdown,
    write_report,
    write_summary_csv,
    write_summary_report,
)
from cos_bench.storage import RECORDS_NAME

SMALL_RUN = Path(__file__).parent / "data" / "small_run"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Every number below follows from tests/data/make_small_run.py (see test_metrics.py for the arithmetic).
EXPECTED_MARKDOWN = """\
# cos-bench summary

Speedups compare with `vanilla` of the same run, task, setting and temperature. Columns marked *measured* come straight from timed decodes; *computed* ones are derived from measured values by the paper's formulas. n/a = not applicable or not measured.

## Headline

speedup = mean per-prompt tokens/s ÷ vanilla's, ± its standard error over prompts (measured); Thm = the paper's Thm 3.1 (sd) / 3.6 (cos) from the measured α and c (computed); α and identity of cos (else sd); quality: vanilla → cos (cos − vanilla on the same prompts ± its standard error over prompts), then the shares of vanilla's decodes that stopped on their own (end-of-sequence or a stop string, not the token budget) and that reached the answer (stopped, or stated it before the budget: GSM8K's final number, MMLU's letter).

| task | setting | T | vanilla tok/s | sd speedup | cos speedup | α | greedy identical | quality |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| gsm8k | we-0.5 | 0.0 | 40.0 | 1.75 ± 0.33 (Thm 1.42) | 2.31 ± 0.25 (Thm 1.73) | 0.800 | 1.00 | 0.50 → 1.00 (+0.50 ± 0.50), 100% stopped, 100% reached the answer |
| humaneval | we-0.5 | 0.0 | 27.5 | 1.82 ± 0.17 (Thm 1.42) | 2.55 ± 0.60 (Thm 1.60) | 0.700 | 0.50 | 1.00 → 1.00 (+0.00 ± n/a), 100% stopped, 100% reached the answer |

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
- **mean draft length (small)**: measured, per model: tokens it drafted (bonus included) / proposal runs it opened, i.e. the mean length of its drafting rounds; the configured γ under the fixed policy, except where the token budget cut a run
- **mean draft length (large)**: measured, per model: tokens it drafted (bonus included) / proposal runs it opened, i.e. the mean length of its drafting rounds; the configured γ under the fixed policy, except where the token budget cut a run
- **c**: measured: median over decodes of c = proposer step time / verifier step time (calibration)
- **pass cost ρ**: measured: median over decodes of ρ = the verifier's (γq+1)-token forward pass time / its single-step time (calibration; γq = the default proposer's γ); n/a with n > 2 models or records from before it was measured
- **theory**: computed from measured α (alpha_expected), c and γ: Thm 3.1 for sd, Thm 3.6 for 2-model cos, as the paper states them (a (γq+1)-token verification pass costs one step); n/a where the paper has no formula, and under an adaptive draft policy (the theorems assume every run is γ long)
- **measured/theory**: computed: speedup_decode / theoretical_speedup (the theorems model decoding steps, not the prefill every method pays alike)
- **theory (measured pass)**: computed: the same expectation with the verification pass charged its measured cost ρ (pass_cost) instead of one step: E(1 + c)/(ρ + cγ) for sd, E(1 + c)/(ρ + cγq − α^γp·c) for 2-model cos, E = (1 − α^γq)/(1 − α); n/a where the paper has no formula or ρ was not measured
- **measured/theory (measured pass)**: computed: speedup_decode / theoretical_speedup_measured_pass
- **overhead**: measured, vanilla only: decode seconds per token (first token excluded) / Σ the models' single-step forward times from calibration (each model alone, its cache cropped back to the prompt); 1.0 = no cost beyond the forward passes as calibrated. It also counts forwards that run slower in the decode than in calibration (models taking turns, a growing cache, the host's speed drifting): `loop overhead` isolates the loop, scripts/decode_step_probe.py times the rest
- **loop overhead**: measured: Σ end-to-end seconds / Σ seconds inside the models' forward calls, same decodes, prefill included; what the decoding loop (combining, sampling, verifying, bookkeeping) adds, free of calibration noise
- **quality**: measured: share of scored decodes judged correct (pass@1 for code)
- **quality − vanilla**: measured: quality minus vanilla's on the same prompts and repeats (both scored), mean over prompts; 0 in expectation for sd and cos, whose output is distributed exactly as vanilla's; ± its standard error over prompts
- **budget**: the token budget of these decodes (the config's max_new_tokens, else the task's own); n/a in records from before it was stored
- **stopped**: measured: share of decodes that ended by end-of-sequence or a stop string rather than at max_new_tokens
- **reached answer**: measured: share of decodes the token budget did not cut short of an answer: stopped on their own, or stated the task's answer before the budget (GSM8K an explicit final answer such as 'The answer is N', MMLU a letter); for HumanEval, and records from before answers were marked, the stopped share
- **identical**: measured, T=0 only: share of decodes whose token ids equal vanilla's for the same prompt and repeat
- **paper**: from the paper (docs/design.md §5): CoS over vanilla, where the run names a paper setting

| task | setting | T | method | γ | n | tok/s pooled | tok/s mean ± sd | speedup mean | speedup pooled | speedup decode | α expected | α empirical | mean acc. len | mean draft length (small) | mean draft length (large) | c | pass cost ρ | theory | measured/theory | theory (measured pass) | measured/theory (measured pass) | overhead | loop overhead | quality | quality − vanilla | budget | stopped | reached answer | identical | paper |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| gsm8k | we-0.5 | 0.0 | vanilla | n/a | 2×1 | 40.0 | 40.0 ± 14.1 | 1.00 | 1.00 | 1.00 | n/a | n/a | n/a | n/a | n/a | 0.250 | n/a | 1.00 | 1.00 | n/a | n/a | 0.51 | 1.54 | 0.500 | n/a | n/a | 1.00 | 1.00 | n/a | n/a |
| gsm8k | we-0.5 | 0.0 | sd | 2,1 | 2×1 | 64.0 | 70.0 ± 42.4 | 1.75 | 1.60 | 1.65 | 0.700 | 0.786 | 2.12 | 1.75 | n/a | 0.250 | n/a | 1.42 | 1.17 | n/a | n/a | n/a | 1.61 | 0.500 | +0.00 ± 0.00 | n/a | 1.00 | 1.00 | 1.00 | n/a |
| gsm8k | we-0.5 | 0.0 | cos | 2,1 | 2×1 | 88.9 | 92.5 ± 46.0 | 2.31 | 2.22 | 2.38 | 0.800 | 0.793 | 2.77 | 1.60 | 1.00 | 0.250 | n/a | 1.73 | 1.37 | n/a | n/a | n/a | 1.58 | 1.000 | +0.50 ± 0.50 | n/a | 1.00 | 1.00 | 1.00 | 1.46 |
| humaneval | we-0.5 | 0.0 | vanilla | n/a | 2×1 | 26.7 | 27.5 ± 3.5 | 1.00 | 1.00 | 1.00 | n/a | n/a | n/a | n/a | n/a | 0.250 | n/a | 1.00 | 1.00 | n/a | n/a | 0.72 | 1.43 | 1.000 | n/a | n/a | 1.00 | 1.00 | n/a | n/a |
| humaneval | we-0.5 | 0.0 | sd | 2,1 | 2×1 | 50.0 | 50.0 ± 0.0 | 1.82 | 1.88 | 1.93 | 0.700 | 0.786 | 2.12 | 1.75 | n/a | 0.250 | n/a | 1.42 | 1.36 | n/a | n/a | n/a | 1.45 | 1.000 | +0.00 ± n/a | n/a | 1.00 | 1.00 | 1.00 | n/a |
| humaneval | we-0.5 | 0.0 | cos | 2,1 | 2×1 | 71.1 | 70.0 ± 14.1 | 2.55 | 2.67 | 2.83 | 0.700 | 0.793 | 2.77 | 1.60 | 1.00 | 0.250 | n/a | 1.60 | 1.76 | n/a | n/a | n/a | 1.50 | 1.000 | +0.00 ± n/a | n/a | 1.00 | 1.00 | 0.50 | 1.56 |
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
    figure = plot_sweep(summary, "gamma", out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert "gamma" in summary_markdown(summary)
    # One panel per task × proposer, each with cos's three γ values ± their prompt standard error.
    assert sorted(axes.get_title() for axes in figure.axes) == [
        f"{task} · we-0.5 · {proposer} first" for task in ("gsm8k", "humaneval") for proposer in ("large", "small")
    ]
    for axes in figure.axes:
        (bars,) = _error_bars(axes)
        assert bars.get_label() == "cos" and bars.has_yerr and len(bars.lines[0].get_xdata()) == 3
    panel = next(a for a in figure.axes if a.get_title() == "gsm8k · we-0.5 · small first")
    rows = summary[(summary["task"] == "gsm8k") & (summary["method"] == "cos") & (summary["proposer"] == "small")]
    assert _bar_halves(_error_bars(panel)[0]) == pytest.approx(rows.sort_values("sweep_gamma")["speedup_prompt_se"].tolist())


def test_plot_sweep_accepts_dotted_parameter_names(tmp_path):
    summary = _sweep_summary().rename(columns={"sweep_gamma": "sweep_gamma.small"})
    plot_sweep(summary, "gamma.small", tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_sweep_of_an_unswept_parameter_says_which_exist(tmp_path):
    with pytest.raises(CosBenchError, match="no sweep over 'lambda'.*sweeps found: gamma"):
        plot_sweep(_sweep_summary(), "lambda", tmp_path / "x.png")


def _settings_summary() -> pd.DataFrame:
    """small_run (we-0.5, T=0, γ 2,1) plus the same records as we-0.5 at T=1 and as cd-0.1 at T=0: three settings."""
    records = [json.loads(line) for line in (SMALL_RUN / RECORDS_NAME).read_text().splitlines()]
    rows = list(records)
    for setting, rule, temperature in (("we-0.5", "we", 1.0), ("cd-0.1", "cd", 0.0)):
        for r in copy.deepcopy(records):
            r.update(setting=setting, rule=rule, temperature=temperature, key=f"{r['key']}|{setting}|{temperature}")
            rows.append(r)
    return summarize(pd.DataFrame([flatten_record(RunRecord.from_json(r), run="settings") for r in rows]))


def _error_bars(axes) -> list:
    return [c for c in axes.containers if isinstance(c, ErrorbarContainer)]


def _bar_halves(bars: ErrorbarContainer) -> list[float]:
    """Half the length of each vertical error bar: the standard error it was drawn with."""
    return [float(abs(segment[1][1] - segment[0][1]) / 2) for segment in bars.lines[2][0].get_segments()]


def _marks(axes, gid: str) -> list[tuple[float, float]]:
    return [tuple(xy) for c in axes.collections if c.get_gid() == gid for xy in c.get_offsets() if np.isfinite(xy[1])]


def test_speedup_plot_has_a_facet_per_setting_with_error_bars_theory_and_paper_marks(tmp_path):
    summary = _settings_summary()
    out = tmp_path / "speedup.png"
    figure = plot_speedups(summary, out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    settings = summary[summary["method"] != "vanilla"].groupby(["run", "setting", "temperature"]).ngroups
    assert len(figure.axes) == settings == 3
    assert [a.get_title() for a in figure.axes] == [
        "cd-0.1 · T=0 · γ small=2, large=1",
        "we-0.5 · T=0 · γ small=2, large=1",
        "we-0.5 · T=1 · γ small=2, large=1",
    ]
    for axes in figure.axes:
        assert [b.get_label() for b in _error_bars(axes)] == ["sd", "cos"]
        assert all(bars.has_yerr for bars in _error_bars(axes))
        assert [t.get_text() for t in axes.get_xticklabels()] == ["gsm8k", "humaneval"]
    axes = figure.axes[1]
    cos = summary[(summary["method"] == "cos") & (summary["setting"] == "we-0.5") & (summary["temperature"] == 0)]
    sd = summary[(summary["method"] == "sd") & (summary["setting"] == "we-0.5") & (summary["temperature"] == 0)]
    assert list(_error_bars(axes)[1].lines[0].get_ydata()) == pytest.approx(cos["speedup_mean"].tolist())
    assert _bar_halves(_error_bars(axes)[1]) == pytest.approx(cos["speedup_prompt_se"].tolist())
    # Thm 3.1 beside sd, Thm 3.6 beside cos, and the paper's number beside cos only.
    assert [y for _, y in _marks(axes, "theory:sd")] == pytest.approx(sd["theoretical_speedup"].tolist())
    assert [y for _, y in _marks(axes, "theory:cos")] == pytest.approx(cos["theoretical_speedup"].tolist())
    assert [y for _, y in _marks(axes, "paper:cos")] == pytest.approx([1.46, 1.56])  # qwen-1.5b-we: gsm8k, humaneval
    assert _marks(axes, "paper:sd") == []
    legend = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert legend == ["sd", "cos", "Thm 3.1 (sd) / 3.6 (cos) from measured α, c", "paper's reported CoS speedup", "vanilla (= 1)"]


def test_acceptance_plot_draws_a_line_per_method_where_gamma_exceeds_one(tmp_path):
    summary = _settings_summary()
    figure = plot_acceptance(summary, tmp_path / "acceptance.png")
    assert (tmp_path / "acceptance.png").read_bytes()[:8] == PNG_MAGIC
    assert len(figure.axes) == 2 * 3  # tasks × settings
    gsm8k = next(a for a in figure.axes if a.get_title() == "gsm8k · we-0.5 · T=0 · γ small=2, large=1")
    sd = summary[(summary["method"] == "sd") & (summary["task"] == "gsm8k")].iloc[0]
    lines = {line.get_label(): list(line.get_ydata()) for line in gsm8k.get_lines()}
    assert set(lines) == {"sd", "cos"} and lines["sd"] == pytest.approx(sd["acceptance_by_position"])


def test_no_acceptance_plot_where_every_row_drafted_one_position(tmp_path):
    summary = summarize(load_records([SMALL_RUN]))
    summary["acceptance_by_position"] = summary["acceptance_by_position"].map(lambda rates: rates[:1])  # γ = 1 everywhere
    stale = tmp_path / "acceptance_by_position.png"
    stale.write_bytes(PNG_MAGIC)  # from an earlier report into the same folder: it would describe other results
    assert plot_acceptance(summary, stale) is None
    assert not stale.exists()
    paths = write_summary_report(summary, tmp_path / "report")
    assert paths.acceptance_png is None and not (tmp_path / "report" / "acceptance_by_position.png").exists()
    assert paths.speedup_png.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_plots_leave_out_missing_and_infinite_values(tmp_path, bad):
    summary = _sweep_summary()
    for column in ("speedup_mean", "speedup_prompt_se", "theoretical_speedup", "paper_speedup"):
        summary.loc[summary.index[1::2], column] = bad
    summary["acceptance_by_position"] = summary["acceptance_by_position"].map(lambda rates: [bad, *rates[1:]] if rates else rates)
    figures = [
        plot_speedups(summary, tmp_path / "speedup.png"),
        plot_acceptance(summary, tmp_path / "acceptance.png"),
        plot_sweep(summary, "gamma", tmp_path / "sweep.png"),
    ]
    for figure in figures:
        for axes in figure.axes:
            assert np.isfinite(axes.get_ylim()).all()
            assert any(np.isfinite(line.get_ydata()).any() for line in axes.get_lines())  # the good values are still drawn
    for name in ("speedup.png", "acceptance.png", "sweep.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_speedup_plot_with_vanilla_only_says_there_is_nothing_to_draw(tmp_path):
    summary = summarize(load_records([SMALL_RUN]))
    figure = plot_speedups(summary[summary["method"] == "vanilla"], tmp_path / "speedup.png")
    assert [t.get_text() for t in figure.axes[0].texts] == ["nothing to draw: no method besides vanilla in these results"]


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
    assert rows[0][6:] == [
        fmt(cos["alpha_expected"], 3),
        fmt(cos["identical_to_vanilla"]),
        "0.50 → 1.00 (+0.50 ± 0.50), 100% stopped, 100% reached the answer",
    ]
    console = Console(record=True, width=200)
    console.print(render_headline(summary))
    text = console.export_text()
    assert "cos speedup" in text and "2.31 ± 0.25 (Thm 1.73)" in text


def test_headline_names_the_run_when_several_are_compared(summary):
    other = summary.assign(run="other_run")
    _, rows = headline(pd.concat([summary, other], ignore_index=True))
    assert len(rows) == 4 and rows[0][0].endswith(": gsm8k") and rows[-1][0] == "other_run: humaneval"


def _with_peer_summary() -> pd.DataFrame:
    """small_run plus both hf-ensemble variants: its sd records stored as each, the defaults variant 1.5× slower."""
    records = [json.loads(line) for line in (SMALL_RUN / RECORDS_NAME).read_text().splitlines()]
    defaults = {"num_assistant_tokens": 20, "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.4}
    matched = {"num_assistant_tokens": 2, "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.0}
    rows = list(records)
    for method, drafting, slower in (("hf-ensemble", defaults, 1.5), ("hf-ensemble-matched", matched, 1.0)):
        for r in copy.deepcopy([r for r in records if r["method"] == "sd"]):
            r.update(method=method, key=r["key"].replace("|sd|", f"|{method}|"), hf_drafting=drafting)
            r["timing"]["total_s"] *= slower
            rows.append(r)
    return summarize(pd.DataFrame([flatten_record(RunRecord.from_json(r), run="peer") for r in rows]))


def test_both_peer_variants_share_one_headline_cell_each_with_its_identity():
    # vanilla, sd, cos and the two variants: a column each would make 11; the peer's one cell keeps it at 10.
    summary = _with_peer_summary()
    headers, rows = headline(summary)
    assert len(headers) == 10 and headers[6] == "hf-ensemble / hf-ensemble-matched speedup (id)"
    sd = summary[(summary["task"] == "gsm8k") & (summary["method"] == "sd")].iloc[0]
    se = fmt(sd["speedup_prompt_se"])
    assert rows[0][4].startswith(f"{fmt(sd['speedup_mean'])} ± {se}")
    slower = f"{fmt(sd['speedup_mean'] / 1.5)} ± {fmt(sd['speedup_prompt_se'] / 1.5)}"
    assert rows[0][6] == f"{slower} (id 1.00) / {fmt(sd['speedup_mean'])} ± {se} (id 1.00)"
    assert "hf-ensemble-matched with the run's γ and no cut-off" in summary_markdown(summary)
    assert "hf-ensemble" not in summary_markdown(summarize(load_records([SMALL_RUN])))  # no peer, no word of it


def test_the_summary_shows_each_peer_variant_with_its_drafting_and_identity():
    lines = summary_markdown(_with_peer_summary()).splitlines()
    header = next(line for line in lines if line.startswith("| task | setting | T | method |")).split(" | ")
    cells = {
        method: dict(zip(header, next(line for line in lines if line.startswith(f"| gsm8k | we-0.5 | 0.0 | {method} |")).split(" | ")))
        for method in ("hf-ensemble", "hf-ensemble-matched")
    }
    assert cells["hf-ensemble"]["γ"] == "20, cut 0.4" and cells["hf-ensemble-matched"]["γ"] == "2"
    assert cells["hf-ensemble"]["identical"] == cells["hf-ensemble-matched"]["identical"] == "1.00"
    assert cells["hf-ensemble"]["theory"] == "n/a"  # the paper has no formula for the peer


def test_quality_difference_is_paired_by_prompt_and_the_stopped_share_counts_budget_cuts():
    records = [json.loads(line) for line in (SMALL_RUN / RECORDS_NAME).read_text().splitlines()]
    gsm8k = [r for r in records if r["task"] == "gsm8k" and r["method"] in ("vanilla", "cos")]
    for r in records:
        r["max_new_tokens"] = 512 if r["task"] == "gsm8k" else 384
    for r in gsm8k:
        if r["method"] == "vanilla" and r["example_id"].endswith("e1"):
            r["accounting"]["stop_reason"] = r["stop_reason"] = "max_new_tokens"
    rows = list(records)
    for r in copy.deepcopy(gsm8k):  # a second repeat; cos now misses e1 there
        r.update(repeat=1, key=r["key"] + "|r1")
        if r["method"] == "cos" and r["example_id"].endswith("e1"):
            r["score"]["correct"], r["score"]["verdict"] = False, "wrong"
        rows.append(r)
    summary = summarize(pd.DataFrame([flatten_record(RunRecord.from_json(r), run="q") for r in rows]))
    row = {m: summary[(summary["task"] == "gsm8k") & (summary["method"] == m)].iloc[0] for m in ("vanilla", "cos")}
    # Vanilla: e1 right, e2 wrong in both repeats. cos − vanilla: e1 0 and −1 (mean −0.5), e2 +1 and +1 (mean +1).
    assert row["cos"]["quality_vs_vanilla"] == pytest.approx(0.25)
    assert row["cos"]["quality_vs_vanilla_se"] == pytest.approx(np.std([-0.5, 1.0], ddof=1) / math.sqrt(2))
    assert math.isnan(row["vanilla"]["quality_vs_vanilla"])
    assert row["vanilla"]["stopped_on_own"] == 0.5 and row["cos"]["stopped_on_own"] == 1.0
    assert row["vanilla"]["max_new_tokens"] == 512
    _, cells = headline(summary)
    assert cells[0][-1] == "0.50 → 0.75 (+0.25 ± 0.75), 50% stopped, 50% reached the answer"
    assert row["vanilla"]["reached_answer"] == 0.5  # the cut decode's score (from before answers were marked) says nothing
    assert RunRecord.from_json(rows[0]).to_json()["max_new_tokens"] == 512  # the budget travels with each record


def test_a_decode_cut_by_the_budget_reached_its_answer_only_when_its_score_says_so():
    records = [json.loads(line) for line in (SMALL_RUN / RECORDS_NAME).read_text().splitlines()]
    vanilla = [r for r in records if r["task"] == "gsm8k" and r["method"] == "vanilla"]
    for r in vanilla:
        r["accounting"]["stop_reason"] = r["stop_reason"] = "max_new_tokens"

    def reached(answered: list) -> float:
        for r, value in zip(vanilla, answered):
            r["score"]["answered"] = value
        summary = summarize(pd.DataFrame([flatten_record(RunRecord.from_json(r), run="q") for r in vanilla]))
        (share,) = summary["reached_answer"]
        return share

    assert len(vanilla) == 2
    assert reached([True, False]) == 0.5 and reached([True, True]) == 1.0 and reached([None, False]) == 0.0
    assert RunRecord.from_json(vanilla[1]).to_json()["score"]["answered"] is False  # kept in the stored record
    assert "answered" not in RunRecord.from_json(vanilla[1] | {"score": {**vanilla[1]["score"], "answered": None}}).to_json()["score"]
