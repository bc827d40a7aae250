"""Re-score a results folder's MMLU records with today's letter extractor; the summary's quality columns.

Usage: .venv/bin/python scripts/rescore_mmlu.py RESULTS_DIR [--limit 20] [--data-dir ../shared/data]

Stored scores are what the extractor of the run's commit gave. This scores the stored texts again,
then summarises them as `cos-bench report` does (cos_bench.metrics.summarize): per setting × method,
accuracy, the method − vanilla accuracy paired by prompt ± its standard error, the share of decodes
that reached an answer, and how many verdicts changed. The records themselves are not rewritten.
Records of other tasks are skipped. The examples are those of a run with seed 0 and offset 0.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from cos_bench.metrics import flatten_record, summarize
from cos_bench.storage import read_runs
from cos_bench.tasks import get_task
from cos_bench.tasks.data import DataSource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    task = get_task("mmlu")
    examples = {e.example_id: e for e in task.load(DataSource(args.data_dir), args.limit, 0, 0)}
    rows = []
    for stored in read_runs([args.results]):
        record = stored.record
        if record.task != "mmlu":
            continue
        example = examples[record.example_id]
        (score,) = task.score_many([example], [task.completion_for_scoring(example, record.text)])
        row = flatten_record(dataclasses.replace(record, score=score), run=stored.run)
        row["changed"] = score.correct != record.score.correct
        rows.append(row)
    frame = pd.DataFrame(rows)
    summary = summarize(frame)
    changed = frame.groupby(["setting", "method"])["changed"].sum()
    for _, line in summary.iterrows():
        text = (
            f"{line['setting']} {line['method']}: decodes {line['n_records']}, reached the answer {line['reached_answer']:.2f}, "
            f"accuracy {line['quality']:.2f}, verdicts changed {changed[(line['setting'], line['method'])]}"
        )
        if line["method"] != "vanilla":
            text += f", {line['method']} − vanilla {line['quality_vs_vanilla']:+.2f} ± {line['quality_vs_vanilla_se']:.2f}"
        print(text)


if __name__ == "__main__":
    main()
