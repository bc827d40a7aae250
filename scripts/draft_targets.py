"""Check results with `cos` arms against issue 15's targets and print the table for a results README.

Usage: .venv/bin/python scripts/draft_targets.py FOLDER [FOLDER ...] [--same-tokens]   (run folders: a sweep's cells, one each)

Per group (run, task, setting, temperature, sweep values), among the `cos` rows: the best fixed γ
(draft policy `fixed`: the run's own γ and every γ arm) and the best adaptive policy (every other
draft policy), by the report's speedup (mean tokens/s ÷ vanilla's, `metrics.summarize`); their ratio
against the targets (≥ 1 in ≥ 90 % of groups, never below 0.95); and, where `hf-ensemble` ran (WE),
the best adaptive `cos` against it. Beside each comparison: the paired difference of per-prompt
speedups (each prompt's tokens/s ÷ vanilla's on the same prompt) ± its standard error over prompts,
so a verdict can be read against its noise. Every figure is computed from the stored records.

--same-tokens keeps, in greedy groups, only the prompts where every `cos` decode (arms included)
produced vanilla's tokens: in bf16 a near-tie can send one arm down a longer output, whose tokens/s
amortises the prefill further and so rewards the arm for the tie, not its speed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from cos_bench.metrics import COMPARE_KEYS, load_records, paired_speedups, standard_error, summarize, sweep_columns

RATIO_TARGET, RATIO_FLOOR, GROUP_SHARE = 1.0, 0.95, 0.9
PEER = "hf-ensemble"


def same_tokens_only(records: pd.DataFrame) -> pd.DataFrame:
    """Greedy records of the prompts whose every `cos` decode equals vanilla's tokens; sampled ones as they are."""
    prompt = [records[key] for key in ("run", "task", "setting", "temperature", "example_id", "repeat")]
    ids = records["token_ids"].map(tuple)
    vanilla = ids.where(records["method"] == "vanilla").groupby(prompt).transform("first")
    spoiled = ((records["method"] == "cos") & (ids != vanilla)).groupby(prompt).transform("any")
    return records[(records["temperature"] != 0) | ~spoiled]


def variant(row: pd.Series) -> str:
    """A cos row's name: its arm, or the run's own γ ("γ 5,1")."""
    return str(row["arm"]) if row["arm"] else f"γ {row['gammas_label']}"


def per_prompt_speedups(records: pd.DataFrame, group: pd.Series, method: str, arm: str) -> pd.Series:
    """Each prompt's tokens/s ÷ vanilla's on the same prompt (mean over repeats), by example id."""
    same = np.logical_and.reduce([records[key] == group[key] for key in group.index])
    mine = records[same & (records["method"] == method) & (records["arm"] == arm)]
    return paired_speedups(mine, records[same & (records["method"] == "vanilla")], "example_id")


def paired(records: pd.DataFrame, group: pd.Series, a: tuple[str, str], b: tuple[str, str]) -> str:
    """a − b in per-prompt speedup, mean ± standard error over the prompts both decoded."""
    diff = (per_prompt_speedups(records, group, *a) - per_prompt_speedups(records, group, *b)).dropna()
    if len(diff) < 2:
        return "n/a"
    return f"{diff.mean():+.2f} ± {standard_error(diff):.2f}"


def speedup(row: pd.Series) -> str:
    return f"{row['speedup_mean']:.2f} ± {row['speedup_prompt_se']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--same-tokens", action="store_true", help="greedy groups: only prompts where every cos decode equals vanilla's")
    args = parser.parse_args()
    records = load_records(args.folders)
    if args.same_tokens:
        records = same_tokens_only(records)
    summary = summarize(records)
    keys = list(COMPARE_KEYS) + sweep_columns(summary)
    print(
        "| task | setting | T | n | best fixed γ | best adaptive | adaptive ÷ fixed | paired diff | ≥ 0.95 | hf-ensemble | adaptive − peer |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ratios, floors, peer_wins = [], [], []
    for _, rows in summary.groupby(keys, sort=False, dropna=False):
        group = rows.iloc[0][keys]
        cos = rows[rows["method"] == "cos"]
        fixed, adaptive = cos[cos["draft"] == "fixed"], cos[cos["draft"] != "fixed"]
        if fixed.empty or adaptive.empty:
            continue
        best_fixed = fixed.loc[fixed["speedup_mean"].idxmax()]
        best_adaptive = adaptive.loc[adaptive["speedup_mean"].idxmax()]
        ratio = best_adaptive["speedup_mean"] / best_fixed["speedup_mean"]
        ratios.append(ratio >= RATIO_TARGET)
        floors.append(ratio >= RATIO_FLOOR)
        peer_cells = ["n/a", "n/a"]
        peer = rows[rows["method"] == PEER]
        if not peer.empty:
            peer_row = peer.iloc[0]
            peer_wins.append(best_adaptive["speedup_mean"] >= peer_row["speedup_mean"])
            peer_cells = [speedup(peer_row), paired(records, group, ("cos", best_adaptive["arm"]), (PEER, ""))]
        print(
            f"| {group['task']} | {group['setting']} | {group['temperature']:g} | {int(best_fixed['n_examples'])} "
            f"| {variant(best_fixed)}: {speedup(best_fixed)} | {variant(best_adaptive)}: {speedup(best_adaptive)} "
            f"| {ratio:.3f} | {paired(records, group, ('cos', best_adaptive['arm']), ('cos', best_fixed['arm']))} "
            f"| {'yes' if ratio >= RATIO_FLOOR else 'NO'} | {peer_cells[0]} | {peer_cells[1]} |"
        )
    if not ratios:
        raise SystemExit("no group has both a fixed and an adaptive cos row: add draft-policy arms (config `arms:`)")
    share = sum(ratios) / len(ratios)
    print()
    print(
        f"best adaptive ≥ best fixed in {sum(ratios)}/{len(ratios)} groups ({share:.0%}; target ≥ {GROUP_SHARE:.0%}): "
        f"{'met' if share >= GROUP_SHARE else 'not met'}; never below {RATIO_FLOOR}×: {'met' if all(floors) else 'not met'} "
        f"({sum(floors)}/{len(floors)})"
    )
    if peer_wins:
        print(
            f"best adaptive cos ≥ {PEER} at transformers' defaults in {sum(peer_wins)}/{len(peer_wins)} WE groups: "
            f"{'met' if all(peer_wins) else 'not met'}"
        )


if __name__ == "__main__":
    main()
