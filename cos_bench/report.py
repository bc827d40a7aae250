"""Turn results folders into summary.csv, summary.md (headline first, then every column), plots and the console headline.

All numbers come from `metrics.summarize`; this module only formats. Missing values print as
"n/a". The plots are drawn by `plots.py`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from cos_bench.core import DRAFT_POLICY_METHODS
from cos_bench.methods import HF_ENSEMBLE_VARIANTS
from cos_bench.metrics import (
    COLUMN_DOCS,
    COMPARE_KEYS,
    METHOD_ORDER,
    SWEEP_PREFIX,
    arm_rows,
    load_records,
    mean_draft_length_column,
    summarize,
    sweep_columns,
)
from cos_bench.plots import plot_acceptance, plot_speedups

NA = "n/a"
DRAFT_LENGTH_PREFIX = mean_draft_length_column("")  # one summary column per model


@dataclass(frozen=True)
class ReportPaths:
    summary_csv: Path
    summary_md: Path
    speedup_png: Path
    acceptance_png: Path | None  # None: no row drafted at two positions or more (γ = 1), nothing to draw


def write_report(folders: Sequence[Path], out_dir: Path) -> ReportPaths:
    """Summarize the records of `folders` and write the report files into `out_dir`."""
    return write_summary_report(summarize(load_records(folders)), out_dir)


def write_summary_report(summary: pd.DataFrame, out_dir: Path) -> ReportPaths:
    """The report files for an already computed summary (callers that also print it summarize once)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(
        summary_csv=out_dir / "summary.csv",
        summary_md=out_dir / "summary.md",
        speedup_png=out_dir / "speedup.png",
        acceptance_png=out_dir / "acceptance_by_position.png",
    )
    write_summary_csv(summary, paths.summary_csv)
    paths.summary_md.write_text(summary_markdown(summary), encoding="utf-8")
    plot_speedups(summary, paths.speedup_png)
    if plot_acceptance(summary, paths.acceptance_png) is None:
        paths = dataclasses.replace(paths, acceptance_png=None)
    return paths


def write_summary_csv(summary: pd.DataFrame, path: Path) -> None:
    """Every summary column; lists and dicts as JSON, missing values as "n/a" (which pandas reads back as NaN)."""
    table = summary.copy()
    for column in table.columns:
        if table[column].map(lambda v: isinstance(v, (list, dict))).any():
            table[column] = table[column].map(_json_cell)
    table.to_csv(path, index=False, na_rep=NA)


# --- formatting --------------------------------------------------------------------------


def fmt(value: Any, decimals: int = 2) -> str:
    """A number for display: fixed decimals, "n/a" for None/NaN."""
    if _is_missing(value):
        return NA
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{decimals}f}"
    return str(value)


@dataclass(frozen=True)
class DisplayColumn:
    header: str
    render: Callable[[pd.Series], str]
    doc: str  # how the value was obtained, printed in the Markdown legend ("" for self-explanatory labels)


def _number(column: str, decimals: int) -> Callable[[pd.Series], str]:
    return lambda row: fmt(row[column], decimals)


def _rate_with_spread(row: pd.Series) -> str:
    mean = fmt(row["tokens_per_s_mean"], 1)
    std = row["tokens_per_s_std"]
    return mean if mean == NA or _is_missing(std) else f"{mean} ± {fmt(std, 1)}"


def _gammas(row: pd.Series) -> str:
    return NA if row["method"] == "vanilla" else str(row["gammas_label"])


def display_columns(summary: pd.DataFrame) -> list[DisplayColumn]:
    """The columns shown to people; identifying columns that never vary are left out."""
    columns: list[DisplayColumn] = []
    if summary["run"].nunique() > 1:
        columns.append(DisplayColumn("run", lambda r: str(r["run"]), ""))
    columns += [
        DisplayColumn("task", lambda r: str(r["task"]), ""),
        DisplayColumn("setting", lambda r: str(r["setting"]), ""),
        DisplayColumn("T", _number("temperature", 1), "sampling temperature (0 = greedy)"),
        DisplayColumn("method", lambda r: str(r["method"]), ""),
    ]
    if arm_rows(summary).any():
        columns.append(DisplayColumn("arm", lambda r: str(r["arm"]) or "-", COLUMN_DOCS["arm"] + "; - = the run's own"))
    if summary["proposer"].nunique() > 1:
        columns.append(DisplayColumn("proposer", lambda r: str(r["proposer"]), ""))
    gamma_doc = "draft lengths, default proposer's first"
    if summary["method"].isin(HF_ENSEMBLE_VARIANTS).any():
        gamma_doc += "; hf-ensemble variants: the first round's length, the schedule unless constant, and the drafter confidence below which a round is cut short"
    columns.append(DisplayColumn("γ", _gammas, gamma_doc))
    if "draft" in summary and (summary["draft"] != "fixed").any() and SWEEP_PREFIX + "draft" not in summary:
        columns.append(
            DisplayColumn("draft", lambda r: str(r["draft"]) if r["method"] in DRAFT_POLICY_METHODS else NA, COLUMN_DOCS["draft"])
        )
    for sweep in sweep_columns(summary):
        name = sweep[len(SWEEP_PREFIX) :]
        columns.append(DisplayColumn(name, lambda r, s=sweep: fmt(r[s], 3), f"swept parameter {name}"))
    columns += [
        DisplayColumn("n", lambda r: f"{r['n_examples']}×{r['n_records'] // max(1, r['n_examples'])}", "prompts × decodes per prompt"),
        DisplayColumn("tok/s pooled", _number("tokens_per_s_pooled", 1), COLUMN_DOCS["tokens_per_s_pooled"]),
        DisplayColumn("tok/s mean ± sd", _rate_with_spread, COLUMN_DOCS["tokens_per_s_mean"] + "; ± its standard deviation"),
        DisplayColumn("speedup mean", _number("speedup_mean", 2), COLUMN_DOCS["speedup_mean"]),
        DisplayColumn("speedup pooled", _number("speedup_pooled", 2), COLUMN_DOCS["speedup_pooled"]),
        DisplayColumn("speedup decode", _number("speedup_decode", 2), COLUMN_DOCS["speedup_decode"]),
        DisplayColumn("α expected", _number("alpha_expected", 3), COLUMN_DOCS["alpha_expected"]),
        DisplayColumn("α empirical", _number("alpha_empirical", 3), COLUMN_DOCS["alpha_empirical"]),
        DisplayColumn("mean acc. len", _number("mean_accepted_length", 2), COLUMN_DOCS["mean_accepted_length"]),
        *(
            DisplayColumn(f"mean draft length ({column[len(DRAFT_LENGTH_PREFIX) :]})", _number(column, 2), COLUMN_DOCS["mean_draft_length"])
            for column in summary.columns
            if column.startswith(DRAFT_LENGTH_PREFIX)
        ),
        DisplayColumn("c", _number("c", 3), COLUMN_DOCS["c"]),
        DisplayColumn("pass cost ρ", _number("pass_cost", 2), COLUMN_DOCS["pass_cost"]),
        DisplayColumn("theory", _number("theoretical_speedup", 2), COLUMN_DOCS["theoretical_speedup"]),
        DisplayColumn("measured/theory", _number("measured_over_theoretical", 2), COLUMN_DOCS["measured_over_theoretical"]),
        DisplayColumn(
            "theory (measured pass)", _number("theoretical_speedup_measured_pass", 2), COLUMN_DOCS["theoretical_speedup_measured_pass"]
        ),
        DisplayColumn(
            "measured/theory (measured pass)",
            _number("measured_over_theoretical_measured_pass", 2),
            COLUMN_DOCS["measured_over_theoretical_measured_pass"],
        ),
        DisplayColumn("overhead", _number("framework_overhead", 2), COLUMN_DOCS["framework_overhead"]),
        DisplayColumn("loop overhead", _number("loop_overhead", 2), COLUMN_DOCS["loop_overhead"]),
        DisplayColumn("quality", _number("quality", 3), COLUMN_DOCS["quality"]),
        DisplayColumn("quality − vanilla", _quality_difference, COLUMN_DOCS["quality_vs_vanilla"] + "; ± its standard error over prompts"),
        DisplayColumn("budget", _number("max_new_tokens", 0), COLUMN_DOCS["max_new_tokens"]),
        DisplayColumn("stopped", _number("stopped_on_own", 2), COLUMN_DOCS["stopped_on_own"]),
        DisplayColumn("reached answer", _number("reached_answer", 2), COLUMN_DOCS["reached_answer"]),
        DisplayColumn("identical", _number("identical_to_vanilla", 2), COLUMN_DOCS["identical_to_vanilla"]),
        DisplayColumn("paper", _number("paper_speedup", 2), COLUMN_DOCS["paper_speedup"]),
    ]
    return columns


def summary_markdown(summary: pd.DataFrame) -> str:
    """summary.md: how each column was obtained, then one table row per summary row."""
    columns = display_columns(summary)
    lines = [
        "# cos-bench summary",
        "",
        "Speedups compare with `vanilla` of the same run, task, setting and temperature. "
        "Columns marked *measured* come straight from timed decodes; *computed* ones are derived "
        "from measured values by the paper's formulas. n/a = not applicable or not measured.",
        "",
        headline_markdown(summary),
        "## Every column",
        "",
    ]
    lines += [f"- **{c.header}**: {c.doc}" for c in columns if c.doc]
    lines += ["", _md_row(c.header for c in columns), _md_row("---" for _ in columns)]
    for _, row in summary.iterrows():
        lines.append(_md_row(c.render(row) for c in columns))
    return "\n".join(lines) + "\n"


# --- the headline: one row per task × setting ------------------------------------------------

HEADLINE_NOTE = (
    "speedup = mean per-prompt tokens/s ÷ vanilla's, ± its standard error over prompts (measured); "
    "Thm = the paper's Thm 3.1 (sd) / 3.6 (cos) from the measured α and c (computed); "
    "α and identity of cos (else sd); quality: vanilla → cos (cos − vanilla on the same prompts ± its standard error "
    "over prompts), then the shares of vanilla's decodes that stopped on their own (end-of-sequence or a stop string, "
    "not the token budget) and that reached the answer (stopped, or stated it before the budget: GSM8K's final number, "
    "MMLU's letter)"
)
PEER_NOTE = (
    "hf-ensemble drafts with transformers' own defaults, hf-ensemble-matched with the run's γ and no cut-off; "
    "id = that variant's greedy identity to vanilla"
)


ARMS_NOTE = "after a method's own speedup, each of its arms (config `arms:`) as arm: speedup ± standard error, on the same prompts"


def headline_note(summary: pd.DataFrame) -> str:
    """The headline's legend; it explains the peer's cell only where the peer ran, and arms only where they ran."""
    note = HEADLINE_NOTE + ("; " + PEER_NOTE if summary["method"].isin(HF_ENSEMBLE_VARIANTS).any() else "")
    return note + ("; " + ARMS_NOTE if arm_rows(summary).any() else "")


def headline(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """What a reader wants first, per task × setting (× run): is each method faster than vanilla, by
    how much and how surely, as the theory says, with the same output and quality? ≤ 10 columns.

    The peer's variants share one cell, so the peer costs one column however many of its variants ran:
    a column each would make 11 with vanilla, sd, cos and both. Each part keeps its own identity rate,
    since the peer is not exact by design and the headline's identity column is cos's. Arms (config
    `arms:`) share their method's cell for the same reason, after the run's own row."""
    present = set(summary["method"])
    methods = [m for m in METHOD_ORDER if m in present and m != "vanilla" and m not in HF_ENSEMBLE_VARIANTS]
    methods += sorted(present - set(METHOD_ORDER))
    peers = [m for m in HF_ENSEMBLE_VARIANTS if m in present]
    several_runs = summary["run"].nunique() > 1
    speedups = [f"{m} speedup" for m in methods] + ([f"{' / '.join(peers)} speedup (id)"] if peers else [])
    headers = ["task", "setting", "T", "vanilla tok/s", *speedups, "α", "greedy identical", "quality"]
    rows = []
    for _, group in summary.groupby(list(COMPARE_KEYS), sort=False, dropna=False):
        first = group.iloc[0]
        armed = arm_rows(group)
        by_method = {row["method"]: row for _, row in group[~armed].iterrows()}
        group_arms = group[armed]
        lead = by_method.get("cos", by_method.get("sd"))
        task = f"{first['run']}: {first['task']}" if several_runs else str(first["task"])
        rows.append(
            [
                task,
                str(first["setting"]),
                fmt(first["temperature"], 1),
                fmt(by_method["vanilla"]["tokens_per_s_mean"], 1) if "vanilla" in by_method else "n/a",
                *(_with_arms(_speedup_cell(by_method.get(m)), group_arms[group_arms["method"] == m]) for m in methods),
                *([_peer_cell(by_method, peers)] if peers else []),
                fmt(lead["alpha_expected"], 3) if lead is not None else "n/a",
                fmt(lead["identical_to_vanilla"], 2) if lead is not None else "n/a",
                _quality_cell(by_method.get("vanilla"), lead),
            ]
        )
    return headers, rows


def _speedup_cell(row: pd.Series | None) -> str:
    if row is None:
        return "n/a"
    cell = f"{fmt(row['speedup_mean'])} ± {fmt(row['speedup_prompt_se'])}"
    return cell if _is_missing(row["theoretical_speedup"]) else f"{cell} (Thm {fmt(row['theoretical_speedup'])})"


def _with_arms(cell: str, arms: pd.DataFrame) -> str:
    """A method's cell, then each of its arms' speedups as "arm: speedup ± se", "; " between."""
    return "; ".join([cell, *(f"{row['arm']}: {_speedup_cell(row)}" for _, row in arms.iterrows())])


def _peer_cell(by_method: dict[str, pd.Series], peers: Sequence[str]) -> str:
    """Each peer variant's speedup ± its prompt standard error and greedy identity, " / " between; n/a where none ran."""
    if not any(m in by_method for m in peers):
        return "n/a"  # e.g. a cd setting: the peer runs for we only
    parts = []
    for row in (by_method.get(m) for m in peers):
        cell = _speedup_cell(row)
        parts.append(cell if row is None or _is_missing(row["identical_to_vanilla"]) else f"{cell} (id {fmt(row['identical_to_vanilla'])})")
    return " / ".join(parts)


def _quality_cell(vanilla: pd.Series | None, lead: pd.Series | None) -> str:
    if vanilla is None:
        return "n/a"
    cell = fmt(vanilla["quality"], 2) + ("" if lead is None else f" → {fmt(lead['quality'], 2)} ({_quality_difference(lead)})")
    stopped, reached = fmt(100 * vanilla["stopped_on_own"], 0), fmt(100 * vanilla["reached_answer"], 0)
    return f"{cell}, {stopped}% stopped, {reached}% reached the answer"


def _quality_difference(row: pd.Series) -> str:
    difference = row["quality_vs_vanilla"]
    if _is_missing(difference):
        return NA
    return f"{float(difference):+.2f} ± {fmt(row['quality_vs_vanilla_se'])}"


def headline_markdown(summary: pd.DataFrame) -> str:
    headers, rows = headline(summary)
    lines = ["## Headline", "", headline_note(summary) + ".", "", _md_row(headers), _md_row("---" for _ in headers)]
    return "\n".join(lines + [_md_row(row) for row in rows]) + "\n"


def render_headline(summary: pd.DataFrame) -> Table:
    """The terminal summary: the headline; the full table is in summary.md."""
    headers, rows = headline(summary)
    table = Table(title="cos-bench summary", caption=headline_note(summary))
    for header in headers:
        table.add_column(header, justify="left" if header in ("task", "setting") else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _md_row(cells: Any) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def _json_cell(value: Any) -> Any:
    if not isinstance(value, (list, dict)):
        return value
    if isinstance(value, list):
        value = [None if isinstance(v, float) and math.isnan(v) else v for v in value]
    return json.dumps(value)


def _is_missing(value: Any) -> bool:
    return value is None or (np.isscalar(value) and bool(pd.isna(value)))
