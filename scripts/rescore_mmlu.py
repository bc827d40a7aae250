"""Re-score stored MMLU records with today's letter extractor; counts per setting × method.

Usage: .venv/bin/python scripts/rescore_mmlu.py RECORDS_JSONL [--limit 20] [--data-dir ../shared/data]

Stored scores are what the extractor of the run's commit gave. This prints, from the stored texts,
what today's extractor gives: decodes that reached the answer (a letter, or stopped on their own),
correct ones, verdicts that changed, and cos − vanilla paired by prompt ± its standard error.
Records of other tasks are skipped. The examples are those of a run with seed 0 and offset 0.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from cos_bench.tasks import get_task
from cos_bench.tasks.data import DataSource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    task = get_task("mmlu")
    examples = {e.example_id: e for e in task.load(DataSource(args.data_dir), args.limit, 0, 0)}
    rows = [json.loads(line) for line in args.records.read_text(encoding="utf-8").splitlines() if line.strip()]
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    correct_by_prompt: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for row in (r for r in rows if r["task"] == "mmlu"):
        example = examples[row["example_id"]]
        (score,) = task.score_many([example], [task.completion_for_scoring(example, row["text"])])
        tally = counts[(row["setting"], row["method"])]
        tally["decodes"] += 1
        tally["reached"] += bool(score.answered or row["stop_reason"] != "max_new_tokens")
        tally["correct"] += bool(score.correct)
        tally["changed"] += score.correct != row["score"]["correct"]
        correct_by_prompt[(row["setting"], row["example_id"])][row["method"]] = int(bool(score.correct))
    for (setting, method), tally in sorted(counts.items()):
        line = f"{setting} {method}: " + ", ".join(f"{name} {tally[name]}" for name in ("decodes", "reached", "correct", "changed"))
        if method != "vanilla":
            diffs = [
                p[method] - p["vanilla"] for (s, _), p in correct_by_prompt.items() if s == setting and {method, "vanilla"} <= p.keys()
            ]
            if len(diffs) > 1:
                line += f", {method} − vanilla {statistics.mean(diffs):+.2f} ± {statistics.stdev(diffs) / math.sqrt(len(diffs)):.2f}"
        print(line)


if __name__ == "__main__":
    main()
