"""Check a sweep's report against issue 5's four targets and print the table for results/*/README.md.

Usage: python scripts/targets.py results/cpu-benchmark/report/summary.csv

Every figure comes from `summary.csv`, which `cos-bench report` computes from the stored
records; this script only selects, compares and counts. The targets:
- cos faster than vanilla in every group, and never slower than sd; hf-ensemble is the bar to beat;
- cos measured (decode-only) speedup >= 0.9 x Thm 3.6 from the measured alpha and c;
- vanilla framework overhead <= 1.10 (time per token / sum of bare single-step forwards), printed
  beside the loop overhead (wall time / time inside the same decodes' forward calls);
- greedy cos token-identical to greedy vanilla on every example.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from cos_bench.metrics import SWEEP_PREFIX, arm_rows, sweep_columns

KEYS = ["run", "task", "setting"]
SHORT_NAMES = {"gamma.small": "γ", "temperature": "T"}  # table labels for the usual swept parameters
THEORY_FLOOR = 0.9
OVERHEAD_CEILING = 1.10
PER_METHOD = [
    "speedup_mean",
    "speedup_decode",
    "theoretical_speedup",
    "measured_over_theoretical",
    "identical_to_vanilla",
    "loop_overhead",
    "speedup_prompt_se",
]  # summary columns set side by side per method


def load(path: Path) -> pd.DataFrame:
    """One row per (cell, task, setting) with each method's figures side by side."""
    frame = pd.read_csv(path, na_values=["n/a"])
    if "arm" in frame:
        frame["arm"] = frame["arm"].fillna("")  # the CSV writes the run's own methods' empty arm as an empty cell
    frame = frame[~arm_rows(frame)].copy()  # issue 5's targets are the run's own methods'; arms are scripts/draft_targets.py's
    frame["cell"] = cell_labels(frame)
    wide = frame.pivot_table(
        index=KEYS,
        columns="method",
        values=[value for value in PER_METHOD if value in frame],  # older summaries lack the newer columns
        aggfunc="first",
    )
    wide.columns = [f"{method}_{value}" for value, method in wide.columns]
    per_group = frame.groupby(KEYS).agg(
        cell=("cell", "first"),
        c=("c", "first"),
        temperature=("temperature", "first"),
        examples=("n_examples", "first"),
    )
    vanilla = frame[frame.method == "vanilla"].set_index(KEYS)[["framework_overhead"]].rename(columns={"framework_overhead": "overhead"})
    cos = frame[frame.method == "cos"].set_index(KEYS)
    # α is cos's own measured acceptance: the one Thm 3.6 is evaluated with.
    alpha = cos[["alpha_expected"]].rename(columns={"alpha_expected": "alpha"})
    return wide.join(per_group).join(vanilla).join(alpha).reset_index()


def cell_labels(frame: pd.DataFrame) -> pd.Series:
    """Each row's sweep cell from its sweep_<param> columns, e.g. 'γ=5, T=1'; the run name outside a sweep."""
    swept = sweep_columns(frame)
    if not swept:
        return frame["run"]

    def label(row: pd.Series) -> str:
        names = (column[len(SWEEP_PREFIX) :] for column in swept)
        return ", ".join(f"{SHORT_NAMES.get(name, name)}={_value(row[column])}" for name, column in zip(names, swept))

    return frame.apply(label, axis=1)


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


# The transformers peer both ways: at its own drafting defaults, and matched to the run's γ.
PEERS = ("hf-ensemble", "hf-ensemble-matched")


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def markdown_table(groups: pd.DataFrame) -> str:
    columns = [
        ("cos speedup", "cos_speedup_mean"),
        ("sd speedup", "sd_speedup_mean"),
        ("hf-ensemble speedup", "hf-ensemble_speedup_mean"),
        ("hf-ensemble-matched speedup", "hf-ensemble-matched_speedup_mean"),
        ("cos decode speedup", "cos_speedup_decode"),
        ("Thm 3.6", "cos_theoretical_speedup"),
        ("cos measured/theory", "cos_measured_over_theoretical"),
        ("α", "alpha"),
        ("c", "c"),
        ("vanilla overhead", "overhead"),
        ("vanilla loop overhead", "vanilla_loop_overhead"),
        ("cos identical", "cos_identical_to_vanilla"),
    ]
    head = ["cell", "task", "setting", "n", *(name for name, _ in columns)]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for row in groups.to_dict("records"):
        cells = [row["cell"], row["task"], row["setting"], str(int(row["examples"]))]
        cells += [_fmt(row.get(key)) for _, key in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tallies(groups: pd.DataFrame) -> list[str]:
    """The targets, counted over groups (and, for identity, over greedy examples)."""
    out = []
    n = len(groups)
    faster = groups.cos_speedup_mean > 1.0
    out.append(
        f"cos faster than vanilla: {int(faster.sum())} / {n} groups "
        f"(end-to-end {groups.cos_speedup_mean.min():.2f}-{groups.cos_speedup_mean.max():.2f}x)"
    )
    ratio = groups.cos_speedup_mean / groups.sd_speedup_mean
    slower = ratio < 1.0
    cos_se, sd_se = _column(groups, "cos_speedup_prompt_se"), _column(groups, "sd_speedup_prompt_se")
    out.append(
        f"cos not slower than sd: {int((~slower).sum())} / {n} groups (cos/sd {ratio.min():.2f}-{ratio.max():.2f})"
        + _misses(
            groups[slower],
            lambda r: f"cos {_with_se(r.cos_speedup_mean, cos_se[r.name])} vs sd {_with_se(r.sd_speedup_mean, sd_se[r.name])}",
            "misses (speedup ± standard error over prompts)",
        )
    )
    for peer in PEERS:
        speedup = _column(groups, f"{peer}_speedup_mean")
        we = groups[speedup.notna()]  # none where only CD ran, or where this variant did not run
        if len(we):
            peer_ratio = we.cos_speedup_mean / speedup[we.index]
            out.append(
                f"{peer} faster than cos: {int((peer_ratio < 1.0).sum())} / {len(we)} WE groups "
                f"({peer} {speedup[we.index].min():.2f}-{speedup[we.index].max():.2f}x "
                f"over vanilla; cos/{peer} {peer_ratio.min():.2f}-{peer_ratio.max():.2f})"
            )
    for method in ("cos", "sd"):
        mt = groups[f"{method}_measured_over_theoretical"].dropna()
        misses = groups.loc[mt[mt < THEORY_FLOOR].index]
        out.append(
            f"{method} measured/theory >= {THEORY_FLOOR}: {int((mt >= THEORY_FLOOR).sum())} / {len(mt)} groups "
            f"({mt.min():.2f}-{mt.max():.2f})" + _misses(misses, lambda r, method=method: f"{r[f'{method}_measured_over_theoretical']:.2f}")
        )
    overhead = groups.overhead.dropna()
    misses = groups.loc[overhead[overhead > OVERHEAD_CEILING].index]
    out.append(
        f"vanilla overhead <= {OVERHEAD_CEILING}: {int((overhead <= OVERHEAD_CEILING).sum())} / {len(overhead)} groups "
        f"({overhead.min():.2f}-{overhead.max():.2f})" + _misses(misses, lambda r: f"{r.overhead:.2f}")
    )
    for method in ("vanilla", "cos"):
        loop = _column(groups, f"{method}_loop_overhead").dropna()
        if len(loop):
            out.append(
                f"{method} loop overhead (wall time / time inside forward calls, same decodes): "
                f"{loop.min():.3f}-{loop.max():.3f} over {len(loop)} groups"
            )
    for method in ("cos", "sd", *PEERS):  # the peer is not exact by design; its rate is shown beside
        identical = _column(groups, f"{method}_identical_to_vanilla")
        if identical.isna().all():  # the method was not run
            continue
        greedy = (groups.temperature == 0) & identical.notna()
        examples = groups.examples[greedy]
        same = (identical[greedy] * examples).round().astype(int)
        out.append(
            f"greedy {method} identical to vanilla: {int(same.sum())} / {int(examples.sum())} examples; "
            f"{int((identical[greedy] == 1.0).sum())} / {int(greedy.sum())} groups at 1.00"
        )
    return out


def _column(groups: pd.DataFrame, key: str) -> pd.Series:
    """A per-method column, all NaN where the summary had none (pivot_table drops all-n/a columns)."""
    return groups[key] if key in groups else pd.Series(math.nan, index=groups.index)


def _with_se(value: float, se: float) -> str:
    return _fmt(value) if math.isnan(se) else f"{value:.2f} ± {se:.2f}"


def _misses(rows: pd.DataFrame, describe: Callable[[pd.Series], str], heading: str = "misses") -> str:
    """'; heading: <group> <describe(row)>; …' naming each group that missed a target, or '' if none did."""
    if rows.empty:
        return ""
    listed = "; ".join(f"{r.cell} {r.task} {r.setting} {describe(r)}" for _, r in rows.iterrows())
    return f"; {heading}: {listed}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/targets.py PATH/TO/summary.csv", file=sys.stderr)
        return 2
    path = Path(argv[0])
    if not path.is_file():
        print(f"error: {path} not found; run `cos-bench report RESULTS_DIR` first", file=sys.stderr)
        return 2
    groups = load(path)
    print(markdown_table(groups))
    print()
    for line in tallies(groups):
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
