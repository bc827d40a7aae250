"""Turn results folders into summary.csv, summary.md (headline first, then every column), plots and the console headline.

All numbers come from `metrics.summarize`; this module only formats and draws.
Missing values print as "n/a". Plots use matplotlib's Agg canvas directly (no
pyplot state), so they render the same with or without a display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.table import Table

from cos_bench.errors import CosBenchError
from cos_bench.metrics import COLUMN_DOCS, COMPARE_KEYS, METHOD_ORDER, SWEEP_PREFIX, load_records, summarize, sweep_columns

NA = "n/a"
PANEL_KEYS = ("run", "setting", "temperature")  # one plot panel per run/setting/temperature


@dataclass(frozen=True)
class ReportPaths:
    summary_csv: Path
    summary_md: Path
    speedup_png: Path
    acceptance_png: Path


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
    plot_acceptance(summary, paths.acceptance_png)
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
    if summary["proposer"].nunique() > 1:
        columns.append(DisplayColumn("proposer", lambda r: str(r["proposer"]), ""))
    columns.append(DisplayColumn("γ", _gammas, "draft lengths, default proposer's first"))
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
    "α and identity of cos (else sd); quality: vanilla → cos"
)


def headline(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """What a reader wants first, per task × setting (× run): is each method faster than vanilla, by
    how much and how surely, as the theory says, with the same output and quality? ≤ 10 columns."""
    present = set(summary["method"])
    methods = [m for m in METHOD_ORDER if m in present and m != "vanilla"] + sorted(present - set(METHOD_ORDER))
    several_runs = summary["run"].nunique() > 1
    headers = ["task", "setting", "T", "vanilla tok/s", *(f"{m} speedup" for m in methods), "α", "greedy identical", "quality"]
    rows = []
    for _, group in summary.groupby(list(COMPARE_KEYS), sort=False, dropna=False):
        first = group.iloc[0]
        by_method = {row["method"]: row for _, row in group.iterrows()}
        lead = by_method.get("cos", by_method.get("sd"))
        task = f"{first['run']}: {first['task']}" if several_runs else str(first["task"])
        rows.append(
            [
                task,
                str(first["setting"]),
                fmt(first["temperature"], 1),
                fmt(by_method["vanilla"]["tokens_per_s_mean"], 1) if "vanilla" in by_method else "n/a",
                *(_speedup_cell(by_method.get(m)) for m in methods),
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


def _quality_cell(vanilla: pd.Series | None, lead: pd.Series | None) -> str:
    if vanilla is None:
        return "n/a"
    return fmt(vanilla["quality"], 2) + ("" if lead is None else f" → {fmt(lead['quality'], 2)}")


def headline_markdown(summary: pd.DataFrame) -> str:
    headers, rows = headline(summary)
    lines = ["## Headline", "", HEADLINE_NOTE + ".", "", _md_row(headers), _md_row("---" for _ in headers)]
    return "\n".join(lines + [_md_row(row) for row in rows]) + "\n"


def render_headline(summary: pd.DataFrame) -> Table:
    """The terminal summary: the headline; the full table is in summary.md."""
    headers, rows = headline(summary)
    table = Table(title="cos-bench summary", caption=HEADLINE_NOTE)
    for header in headers:
        table.add_column(header, justify="left" if header in ("task", "setting") else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _md_row(cells: Any) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


# --- plots -------------------------------------------------------------------------------


def plot_speedups(summary: pd.DataFrame, out_path: Path) -> None:
    """Measured speedup (mean of per-prompt rates) per task, one bar per method; × marks the paper's number."""
    panels = _panels(summary[summary["method"] != "vanilla"])
    figure, axes_list = _figure(len(panels), width=7.0)
    for axes, (title, rows) in zip(axes_list, panels):
        tasks = sorted(rows["task"].unique())
        variants = _variants(rows)
        width = 0.8 / max(1, len(variants))
        for index, (label, variant_rows) in enumerate(variants):
            x = np.array([tasks.index(t) for t in variant_rows["task"]]) - 0.4 + width * (index + 0.5)
            axes.bar(x, variant_rows["speedup_mean"].astype(float), width, label=label)
            paper = variant_rows["paper_speedup"].astype(float)
            if paper.notna().any():
                axes.scatter(x, paper, marker="x", color="black", zorder=3, label=f"paper ({label})")
        axes.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        axes.set_xticks(range(len(tasks)), tasks)
        axes.set_ylabel("speedup over vanilla")
        axes.set_title(title)
        axes.legend(fontsize="small")
    _empty_note(figure, axes_list, "no non-vanilla methods in these results")
    _save(figure, out_path)


def plot_acceptance(summary: pd.DataFrame, out_path: Path) -> None:
    """Acceptance rate at each draft position, one line per task and method."""
    drafted = summary[summary["acceptance_by_position"].map(len) > 0]
    panels = _panels(drafted)
    figure, axes_list = _figure(len(panels), width=6.0)
    for axes, (title, rows) in zip(axes_list, panels):
        for label, variant_rows in _variants(rows, with_task=True):
            for _, row in variant_rows.iterrows():
                rates = row["acceptance_by_position"]
                axes.plot(range(1, len(rates) + 1), rates, marker="o", label=label)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("draft position (1 = first token of a proposal run)")
        axes.set_ylabel("accepted / drafted")
        axes.set_ylim(0, 1.05)
        axes.set_title(title)
        axes.legend(fontsize="small")
    _empty_note(figure, axes_list, "no drafted tokens in these results")
    _save(figure, out_path)


def plot_sweep(summary: pd.DataFrame, param: str, out_path: Path) -> None:
    """Speedup against a swept parameter: one panel per task, one line per method and proposer order.

    Dashed lines of the same colour are the theoretical speedup (Thm 3.1/3.6) where defined.
    """
    column = param if param.startswith(SWEEP_PREFIX) else SWEEP_PREFIX + param
    if column not in summary.columns or summary[column].isna().all():
        found = ", ".join(c[len(SWEEP_PREFIX) :] for c in sweep_columns(summary)) or "none"
        raise CosBenchError(f"no sweep over {param!r} in these results (sweeps found: {found}); pass one of those")
    rows = summary[(summary["method"] != "vanilla") & summary[column].notna()]
    tasks = sorted(rows["task"].unique())
    figure, axes_list = _figure(max(1, len(tasks)), width=6.0)
    for axes, task in zip(axes_list, tasks):
        task_rows = rows[rows["task"] == task]
        positions = _sweep_positions(task_rows[column])
        # Other swept parameters split lines too, else their points would be joined as if one series.
        others = [c for c in sweep_columns(task_rows) if c != column and task_rows[c].nunique() > 1]
        # Several combination settings (e.g. WE and CD) are separate series, never one zig-zag line.
        for values, line in task_rows.groupby(["setting", "method", "proposer"] + others, sort=True):
            setting, method, proposer, *rest = values
            label = ", ".join([f"{setting} {method}, {proposer} first"] + [f"{c[len(SWEEP_PREFIX) :]}={v}" for c, v in zip(others, rest)])
            line = line.assign(_x=line[column].map(positions)).sort_values("_x")
            drawn = axes.plot(line["_x"], line["speedup_mean"].astype(float), marker="o", label=label)
            axes.plot(line["_x"], line["theoretical_speedup"].astype(float), linestyle="--", color=drawn[0].get_color())
        if not all(isinstance(k, (int, float, np.number)) for k in positions):
            axes.set_xticks(list(positions.values()), [str(k) for k in positions])
        elif all(float(k).is_integer() for k in positions):
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        axes.set_xlabel(param.removeprefix(SWEEP_PREFIX))
        axes.set_ylabel("speedup over vanilla (dashed: theory)")
        axes.set_title(task)
        axes.legend(fontsize="small")
    _save(figure, Path(out_path))


def _sweep_positions(values: pd.Series) -> dict[Any, float]:
    """x position of each swept value: itself when numeric, else its rank."""
    unique = sorted(values.unique(), key=lambda v: (not isinstance(v, (int, float)), v if isinstance(v, (int, float)) else str(v)))
    if all(isinstance(v, (int, float, np.number)) for v in unique):
        return {v: float(v) for v in unique}
    return {v: float(i) for i, v in enumerate(unique)}


def _panels(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    panels = []
    for (run, setting, temperature), panel in rows.groupby(list(PANEL_KEYS), sort=False):
        panels.append((f"{run}: {setting}, T={fmt(temperature, 1)}", panel))
    return panels


def _variants(rows: pd.DataFrame, with_task: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """Rows grouped into plot series; the label names only what varies."""
    keys = (["task"] if with_task else []) + ["method", "proposer", "gammas_label"]
    varying = [k for k in keys if k == "task" or k == "method" or rows[k].nunique() > 1]
    series = []
    for values, group in rows.groupby(varying, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        series.append((" ".join(f"γ={v}" if k == "gammas_label" else str(v) for k, v in zip(varying, values)), group))
    return series


def _figure(n_panels: int, width: float) -> tuple[Figure, list[Any]]:
    figure = Figure(figsize=(width, 3.5 * max(1, n_panels)))
    FigureCanvasAgg(figure)  # attach the Agg canvas: no display needed, no pyplot global state
    axes = figure.subplots(max(1, n_panels), 1, squeeze=False)[:, 0]
    return figure, list(axes)


def _empty_note(figure: Figure, axes_list: list[Any], message: str) -> None:
    if not any(axes.has_data() for axes in axes_list):
        axes_list[0].text(0.5, 0.5, message, ha="center", va="center", transform=axes_list[0].transAxes)


def _save(figure: Figure, out_path: Path) -> None:
    figure.tight_layout()
    figure.savefig(out_path, dpi=120, metadata={"Software": None})  # no version stamp: same input, same bytes


def _json_cell(value: Any) -> Any:
    if not isinstance(value, (list, dict)):
        return value
    if isinstance(value, list):
        value = [None if isinstance(v, float) and math.isnan(v) else v for v in value]
    return json.dumps(value)


def _is_missing(value: Any) -> bool:
    return value is None or (np.isscalar(value) and bool(pd.isna(value)))
