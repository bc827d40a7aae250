"""Did each task's token budget reach the answers? Counted from a results folder's records.

Usage: .venv/bin/python scripts/budget_check.py RESULTS_DIR [--method vanilla] [--span 32]

Per task × setting × temperature, for one method's decodes (vanilla by default, the issue 16
target's reference), all counted from records.jsonl:
- stopped: ended by end-of-sequence or a stop string, not the budget;
- reached: stopped, or stated the task's answer before the budget (the record's score.answered:
  GSM8K an explicit final answer, MMLU a letter) — the summary's `reached answer` column;
- cut, looping: cut by the budget with no answer, and the last `--span` generated tokens occur
  earlier in the same decode, i.e. a greedy repetition loop that no larger budget would end;
- cut, other: the rest of the cut decodes without an answer (a larger budget might reach them);
  cut decodes whose score has no answered mark (older records, HumanEval) are counted apart.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cos_bench.record import RunRecord  # noqa: E402
from cos_bench.storage import read_runs  # noqa: E402


def ends_in_a_loop(token_ids: Sequence[int], span: int) -> bool:
    """Whether the last `span` tokens also occur earlier in `token_ids` (overlap allowed)."""
    tail = list(token_ids[-span:])
    if len(token_ids) < span + 1:
        return False
    head = list(token_ids[:-1])  # any earlier start, so a cycle shorter than the span still counts
    return any(head[i : i + span] == tail for i in range(len(head) - span + 1))


def outcome(record: RunRecord, span: int) -> str:
    if record.stop_reason != "max_new_tokens":
        return "stopped"
    if record.reached_answer:
        return "answered before the budget"
    if record.score.answered is None:
        return "cut, unmarked"  # a record from before scores marked answers, or a task without the test (HumanEval)
    return "cut, looping" if ends_in_a_loop(record.token_ids, span) else "cut, other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--method", default="vanilla")
    parser.add_argument("--span", type=int, default=32, help="tokens a loop must repeat (default 32)")
    args = parser.parse_args()
    groups: dict[tuple[str, str, float], Counter] = {}
    for stored in read_runs([args.results]):
        record = stored.record
        if record.method == args.method:
            groups.setdefault((record.task, record.setting, record.temperature), Counter())[outcome(record, args.span)] += 1
    print(f"| task | setting | T | {args.method} decodes | stopped | reached the answer | cut, looping | cut, other |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (task, setting, temperature), counts in sorted(groups.items()):
        n = sum(counts.values())
        reached = counts["stopped"] + counts["answered before the budget"]
        print(
            f"| {task} | {setting} | {temperature:g} | {n} | {counts['stopped']} ({counts['stopped'] / n:.0%}) "
            f"| {reached} ({reached / n:.0%}) | {counts['cut, looping']} | {counts['cut, other']} |"
        )
    unmarked = sum(counts["cut, unmarked"] for counts in groups.values())
    if unmarked:
        print(
            f"\n{unmarked} cut decode(s) carry no answered mark (older records, or HumanEval): counted as not reached, in neither cut column."
        )


if __name__ == "__main__":
    main()
