"""The report's plots, drawn from the summary (`metrics.summarize`); this module only draws.

- speedup.png: per task, each method's measured speedup over vanilla ± its standard error over
  prompts, one facet per setting (combination, temperature, γ); beside sd/cos the paper's
  Thm 3.1/3.6 from the measured α and c, and the paper's reported CoS speedup where the config
  names a paper setting.
- acceptance_by_position.png: accepted ÷ drafted at each draft position, only for rows that drafted
  at two positions or more (γ > 1): with γ = 1 there is one position, and a lone point says nothing.
- sweep_<param>.png: speedup ± standard error against one swept parameter, one panel per task and
  setting, the theorem dashed beside it.

Each function returns the Figure it saved, so tests can inspect what was drawn. Values that are
missing or infinite are left out of a plot, never drawn at an axis limit. Figures use
matplotlib's Agg canvas directly (no pyplot state), so they render the same with or without a display.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cos_bench.errors import CosBenchError
from cos_bench.metrics import METHOD_ORDER, SWEEP_PREFIX, arm_rows, ordered_gammas, sweep_columns
from cos_bench.record import arm_method_name

FACET_KEYS = ("run", "setting", "temperature")  # one facet per run × setting × temperature (a run has one γ)
MAX_COLUMNS = 4
MIN_WIDTH = 7.0  # inches
THEORY_LABEL = "Thm 3.1 (sd) / 3.6 (cos) from measured α, c"
PAPER_LABEL = "paper's reported CoS speedup"
SPEEDUP_HOW = "measured: mean per-prompt tok/s ÷ vanilla's; error bars ± 1 standard error over prompts"
PARAM_LABELS = {
    "lambda": "λ (weight of the first model, we)",
    "mu": "μ (weight of the amateur, cd)",
    "temperature": "temperature T",
    "proposer": "default proposer",
}


# A panel is 3.6 inches wide: longer titles (a sweep cell's label before the setting) would run into the next panel's.
PANEL_TITLE_WIDTH = 42


def _panel_title(text: str) -> str:
    return "\n".join(textwrap.wrap(text, width=PANEL_TITLE_WIDTH)) or text


# --- speedup per task, one facet per setting --------------------------------------------------


def plot_speedups(summary: pd.DataFrame, out_path: Path) -> Figure:
    """Speedup over vanilla per task, one facet per setting, a point ± standard error per method."""
    summary = _arms_as_methods(summary)
    rows = summary[summary["method"] != "vanilla"]
    facets = _facets(rows)
    tasks = sorted(rows["task"].unique())
    methods = _methods(rows)
    figure, axes_list = _grid(len(facets), min(MAX_COLUMNS, max(1, len(facets))), panel=(3.6, 3.0))
    for axes, (title, facet) in zip(axes_list, facets):
        _speedup_panel(axes, facet, tasks, methods)
        axes.set_title(_panel_title(title), fontsize="medium")
    if not facets:
        _nothing_to_draw(axes_list[0], "no method besides vanilla in these results")
    for axes in axes_list[:: min(MAX_COLUMNS, max(1, len(facets)))]:
        axes.set_ylabel("speedup over vanilla (×)")
    _title(figure, "Speedup over vanilla per task and setting", SPEEDUP_HOW)
    _legend(figure, _method_handles(methods, line=False) + _mark_handles(rows))
    return _save(figure, out_path)


def _speedup_panel(axes: Any, facet: pd.DataFrame, tasks: Sequence[str], methods: Sequence[str]) -> None:
    width = 0.8 / max(1, len(methods))
    for index, method in enumerate(methods):
        rows = facet[facet["method"] == method]
        if rows.empty:
            continue
        x = np.array([tasks.index(t) for t in rows["task"]]) - 0.4 + width * (index + 0.5)
        axes.errorbar(
            x, _finite(rows["speedup_mean"]), yerr=_finite(rows["speedup_prompt_se"]),
            fmt="o", color=_color(method), capsize=3, markersize=5, label=method,
        )  # fmt: skip
        # The theorem sits just beside the measured point, so the error bar stays readable; the paper's
        # number on the point's own vertical, which says whose it is.
        theory = _finite(rows["theoretical_speedup"])
        axes.scatter(x + width * 0.3, theory, marker="D", s=22, facecolors="none", edgecolors=_color(method), gid=f"theory:{method}")
        axes.scatter(x, _finite(rows["paper_speedup"]), marker="*", s=60, color="black", zorder=3, gid=f"paper:{method}")
    axes.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    axes.set_xticks(range(len(tasks)), tasks)
    axes.set_xlim(-0.5, len(tasks) - 0.5)


# --- acceptance by draft position ----------------------------------------------------------------


def plot_acceptance(summary: pd.DataFrame, out_path: Path) -> Figure | None:
    """Accepted ÷ drafted at each draft position: one panel per task and setting, one line per method.

    Only rows that drafted at two positions or more are drawn. With none, nothing is drawn, no file
    is written and an earlier file of that name is removed (it would describe other results): None.
    """
    out_path = Path(out_path)
    summary = _arms_as_methods(summary)
    drafted = summary[(summary["method"] != "vanilla") & (summary["acceptance_by_position"].map(_positions) > 1)]
    if drafted.empty:
        out_path.unlink(missing_ok=True)
        return None
    facets = _facets(drafted)
    tasks = sorted(drafted["task"].unique())
    methods = _methods(drafted)
    figure, axes_list = _grid(len(tasks) * len(facets), len(facets), panel=(3.2, 2.6), sharey=True)
    for row, task in enumerate(tasks):
        for column, (title, facet) in enumerate(facets):
            axes = axes_list[row * len(facets) + column]
            for _, line in facet[facet["task"] == task].iterrows():
                rates = _finite(pd.Series(line["acceptance_by_position"], dtype=float))
                axes.plot(range(1, len(rates) + 1), rates, marker="o", markersize=4, color=_color(line["method"]), label=line["method"])
            axes.set_title(_panel_title(f"{task} · {title}"), fontsize="small")
            axes.set_xticks(range(1, max(2, int(facet["acceptance_by_position"].map(_positions).max())) + 1))
            axes.set_ylim(0, 1.02)
            if row == len(tasks) - 1:
                axes.set_xlabel("draft position")
            if column == 0:
                axes.set_ylabel("accepted ÷ drafted")
    _title(
        figure,
        "Acceptance by draft position (rows with γ > 1)",
        "accepted ÷ drafted at each position, pooled over prompts and drafting models; position 1 opens a proposal run",
    )
    _legend(figure, _method_handles(methods, line=True))
    return _save(figure, out_path)


def _positions(rates: Any) -> int:
    return len(rates) if isinstance(rates, (list, tuple)) else 0


# --- sweeps -----------------------------------------------------------------------------------


def plot_sweep(summary: pd.DataFrame, param: str, out_path: Path) -> Figure:
    """Speedup ± standard error against a swept parameter: one panel per task (rows) and setting
    (columns: combination, plus proposer and other swept values where they vary), one line per method;
    dashed lines with hollow marks are the theorem for the same rows."""
    column = param if param.startswith(SWEEP_PREFIX) else SWEEP_PREFIX + param
    if column not in summary.columns or summary[column].isna().all():
        found = ", ".join(c[len(SWEEP_PREFIX) :] for c in sweep_columns(summary)) or "none"
        raise CosBenchError(f"no sweep over {param!r} in these results (sweeps found: {found}); pass one of those")
    name = column[len(SWEEP_PREFIX) :]
    summary = _arms_as_methods(summary)
    rows = summary[(summary["method"] != "vanilla") & summary[column].notna()]
    split = _sweep_splits(rows, column)
    tasks = sorted(rows["task"].unique())
    columns = [(_split_title(split, values), part) for values, part in rows.groupby(split, sort=True)] if split else [("", rows)]
    positions = _sweep_positions(rows[column])
    methods = _methods(rows)
    figure, axes_list = _grid(max(1, len(tasks) * len(columns)), len(columns), panel=(3.6, 2.8), sharey=True)
    for row, task in enumerate(tasks):
        for index, (title, part) in enumerate(columns):
            axes = axes_list[row * len(columns) + index]
            _sweep_panel(axes, part[part["task"] == task], column, positions, methods)
            axes.set_title(_panel_title(f"{task} · {title}" if title else task), fontsize="small")
            axes.set_xticks(list(positions.values()), [_tick(k) for k in positions])
            if row == len(tasks) - 1:
                axes.set_xlabel(_param_label(name))
            if index == 0:
                axes.set_ylabel("speedup over vanilla (×)")
    _title(figure, f"Speedup against {_param_label(name)}", f"{SPEEDUP_HOW}; dashed, hollow: {THEORY_LABEL}")
    theory = Line2D([], [], color="grey", linestyle="--", marker="D", markerfacecolor="none", label=THEORY_LABEL)
    vanilla = Line2D([], [], color="grey", linestyle=":", label="vanilla (= 1)")
    _legend(figure, _method_handles(methods, line=True) + [theory, vanilla])
    return _save(figure, Path(out_path))


def _sweep_panel(axes: Any, rows: pd.DataFrame, column: str, positions: dict[Any, float], methods: Sequence[str]) -> None:
    for method in methods:
        line = rows[rows["method"] == method]
        if line.empty:
            continue
        line = line.assign(_x=line[column].map(positions)).sort_values("_x")
        color = _color(method)
        axes.errorbar(
            line["_x"], _finite(line["speedup_mean"]), yerr=_finite(line["speedup_prompt_se"]),
            fmt="-o", color=color, capsize=3, markersize=4, label=method,
        )  # fmt: skip
        theory = _finite(line["theoretical_speedup"])
        axes.plot(line["_x"], theory, linestyle="--", marker="D", markerfacecolor="none", color=color, gid=f"theory:{method}")
    axes.axhline(1.0, color="grey", linestyle=":", linewidth=1)


def _sweep_splits(rows: pd.DataFrame, column: str) -> list[str]:
    """What separates one panel's series from another's besides the task: the combination, and the
    proposer, the temperature and other swept values where they vary (else points would join as one line)."""
    split = ["setting"]
    others = [c for c in sweep_columns(rows) if c != column and rows[c].nunique() > 1]
    if column != SWEEP_PREFIX + "proposer" and rows["proposer"].nunique() > 1 and SWEEP_PREFIX + "proposer" not in others:
        split.append("proposer")
    if column != SWEEP_PREFIX + "temperature" and rows["temperature"].nunique() > 1 and SWEEP_PREFIX + "temperature" not in others:
        split.append("temperature")
    return split + others


def _split_title(split: Sequence[str], values: Any) -> str:
    values = values if isinstance(values, tuple) else (values,)
    parts = []
    for key, value in zip(split, values):
        if key == "setting":
            parts.append(str(value))
        elif key == "proposer":
            parts.append(f"{value} first")
        else:
            parts.append(f"{_short_param(key.removeprefix(SWEEP_PREFIX))}={_tick(value)}")
    return " · ".join(parts)


def _sweep_positions(values: pd.Series) -> dict[Any, float]:
    """x position of each swept value: itself when numeric, else its rank."""
    unique = sorted(values.unique(), key=lambda v: (not isinstance(v, (int, float)), v if isinstance(v, (int, float)) else str(v)))
    if all(isinstance(v, (int, float, np.number)) for v in unique):
        return {v: float(v) for v in unique}
    return {v: float(i) for i, v in enumerate(unique)}


def _param_label(name: str) -> str:
    if name.startswith("gamma."):
        return f"γ of {name[len('gamma.') :]} (draft length)"
    return PARAM_LABELS.get(name, name)


def _short_param(name: str) -> str:
    return {"temperature": "T", "lambda": "λ", "mu": "μ"}.get(name, name.replace("gamma.", "γ "))


def _tick(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


# --- shared pieces ------------------------------------------------------------------------------


def _facets(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per run × setting × temperature, ordered by setting, γ, proposer and temperature.

    Titles name what a reader compares (setting, T, γ per model); the run is added only where two
    facets would otherwise share a title.
    """
    facets = []
    for _, facet in rows.groupby(list(FACET_KEYS), sort=False, dropna=False):
        first = facet.iloc[0]
        gammas = ordered_gammas(first["gammas"], first["proposer"])
        title = f"{first['setting']} · T={_tick(first['temperature'])} · γ {_gamma_text(first['gammas'], first['proposer'])}"
        facets.append(((str(first["setting"]), gammas, str(first["proposer"]), float(first["temperature"])), title, facet))
    facets.sort(key=lambda item: item[0])
    titles = [title for _, title, _ in facets]
    return [
        (f"{facet.iloc[0]['run']}: {title}" if titles.count(title) > 1 else title, facet) for _, title, facet in facets
    ]  # fmt: skip


def _gamma_text(gammas: Any, proposer: str) -> str:
    """ "small=5, large=1": the default proposer's γ first."""
    if not isinstance(gammas, dict) or not gammas:
        return "n/a"
    names = [proposer] * (proposer in gammas) + [name for name in gammas if name != proposer]
    return ", ".join(f"{name}={gammas[name]}" for name in names)


def _arms_as_methods(summary: pd.DataFrame) -> pd.DataFrame:
    """Each arm (config `arms:`) drawn as a method of its own, "cos[confidence-0.4]", beside the run's "cos"."""
    armed = arm_rows(summary)
    if not armed.any():
        return summary
    named = summary.copy()
    named.loc[armed, "method"] = [arm_method_name(m, a) for m, a in zip(named.loc[armed, "method"], named.loc[armed, "arm"])]
    return named


def _methods(rows: pd.DataFrame) -> list[str]:
    present = set(rows["method"])
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


# Names outside the registry (arms, "cos[heuristic]"): colours none of the registry's C0… uses, handed
# out in the order names are first drawn, so the arms of one report differ and keep theirs in every plot.
OTHER_COLOURS = ("#17becf", "#bcbd22", "#8c564b", "#e377c2", "#7f7f7f", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e")
_other_colours: dict[str, str] = {}


def _color(method: str) -> str:
    """One colour per method in every plot: its place in the method registry's order; other names a colour each."""
    if method in METHOD_ORDER:
        return f"C{METHOD_ORDER.index(method) % 10}"
    return _other_colours.setdefault(method, OTHER_COLOURS[len(_other_colours) % len(OTHER_COLOURS)])


def _method_handles(methods: Sequence[str], line: bool) -> list[Line2D]:
    return [Line2D([], [], color=_color(m), marker="o", linestyle="-" if line else "none", label=m) for m in methods]


def _mark_handles(rows: pd.DataFrame) -> list[Line2D]:
    handles = [Line2D([], [], color="grey", marker="D", markerfacecolor="none", linestyle="none", label=THEORY_LABEL)]
    if np.isfinite(_finite(rows["paper_speedup"])).any():
        handles.append(Line2D([], [], color="black", marker="*", markersize=9, linestyle="none", label=PAPER_LABEL))
    handles.append(Line2D([], [], color="grey", linestyle="--", label="vanilla (= 1)"))
    return handles


def _finite(values: pd.Series) -> np.ndarray:
    """Values as floats, with missing and infinite ones as NaN (matplotlib skips NaN; inf breaks the axes)."""
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return np.where(np.isfinite(array), array, np.nan)


def _grid(n_panels: int, n_columns: int, panel: tuple[float, float], sharey: bool = True) -> tuple[Figure, list[Any]]:
    """A figure of `n_panels` axes in rows of `n_columns`; axes past the last panel are removed."""
    n_panels, n_columns = max(1, n_panels), max(1, n_columns)
    n_rows = -(-n_panels // n_columns)
    # At least MIN_WIDTH wide, so that one panel still has room for the title and the legend.
    figure = Figure(figsize=(max(MIN_WIDTH, panel[0] * n_columns), panel[1] * n_rows + 1.2), layout="constrained")
    FigureCanvasAgg(figure)  # attach the Agg canvas: no display needed, no pyplot global state
    grid = figure.subplots(n_rows, n_columns, squeeze=False, sharey=sharey)
    axes = list(grid.flat)
    for unused in axes[n_panels:]:
        unused.remove()
    return figure, axes[:n_panels]


def _title(figure: Figure, *lines: str) -> None:
    """The figure's title: what is drawn, then how it was measured, each wrapped to the figure's width
    (about 11 characters an inch at this size)."""
    width = int(figure.get_figwidth() * 11)
    figure.suptitle("\n".join(part for line in lines for part in textwrap.wrap(line, width=width)), fontsize="medium")


def _legend(figure: Figure, handles: Sequence[Line2D]) -> None:
    if handles:
        columns = max(1, min(len(handles), int(figure.get_figwidth() // 2.8)))  # the longest labels take about 2.8 inches
        figure.legend(handles=list(handles), loc="outside lower center", ncols=columns, fontsize="small", frameon=False)


def _nothing_to_draw(axes: Any, message: str) -> None:
    axes.text(0.5, 0.5, f"nothing to draw: {message}", ha="center", va="center", transform=axes.transAxes)


def _save(figure: Figure, out_path: Path) -> Figure:
    figure.savefig(out_path, dpi=110, metadata={"Software": None})  # no version stamp: same input, same bytes
    return figure
