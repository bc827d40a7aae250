"""`cos-bench sweep`: every cell of a grid run into its own results folder, then one report with plots.

The cells run on the configured executor (cos_bench.executors: here, one after another, or one Ray
task each); the report covers whatever finished and names the cells that did not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from cos_bench.config import ExperimentConfig, config_to_dict, sweep_cells
from cos_bench.errors import CosBenchError
from cos_bench.executors import CellJob, CellOutcome, open_executor
from cos_bench.folders import read_sweep, report_folders
from cos_bench.storage import RECORDS_NAME, SWEEP_NAME, exclusive_writer, write_json_atomic


def cell_folder_name(label: str) -> str:
    return label.replace("=", "-").replace(",", "_")


def run_sweep(cfg: ExperimentConfig, out_dir: Path, console: Console | None = None) -> list[Path]:
    """Every cell of the grid into its own folder under `out_dir`; then plots of speedup against each swept parameter.

    CosBenchError after the report when a cell did not finish (each one's error is printed as it fails).
    """
    console = console or Console(stderr=True)
    cells = sweep_cells(cfg)
    # Ray is imported and its cluster joined before the sweep folder is touched: a missing Ray or a
    # wrong address leaves nothing behind.
    with open_executor(cfg.executor, cfg.device, len(cells), console) as executor:
        # The sweep folder has one writer too: a second sweep would rewrite sweep.json and the report.
        with exclusive_writer(out_dir):
            record_sweep(out_dir, cfg, [cell.label for cell in cells])
            base = out_dir.absolute()  # every worker, wherever its working directory, writes the same folders
            jobs = [CellJob(cell.label, cell.config, base / cell_folder_name(cell.label), cell.values) for cell in cells]
            outcomes = executor.run(jobs, console)
            report_sweep(out_dir, outcomes, console)
    return [outcome.job.folder for outcome in outcomes]


def record_sweep(out_dir: Path, cfg: ExperimentConfig, labels: Sequence[str]) -> None:
    """Write sweep.json: this command's config and cells, after every earlier command's (`earlier`, oldest first).

    A resumed sweep may run part of the grid (one task, one temperature): overwriting would leave a
    description of that part only, while the folder holds every part.
    """
    # Round-tripped through JSON so that it compares equal to the same command read back (tuples become lists).
    entry = json.loads(json.dumps({"config": config_to_dict(cfg), "cells": list(labels)}))
    earlier: list[dict] = []
    if (out_dir / SWEEP_NAME).exists():
        previous = read_sweep(out_dir)
        earlier = list(previous.get("earlier", []))
        last = {"config": previous.get("config"), "cells": previous["cells"]}
        if last != entry:  # the same command again adds nothing to the history
            earlier.append(last)
    write_json_atomic(out_dir / SWEEP_NAME, {**entry, "earlier": earlier})


def report_sweep(out_dir: Path, outcomes: Sequence[CellOutcome], console: Console) -> None:
    """The sweep report from every stored record; CosBenchError naming the cells that did not finish."""
    missing = [outcome for outcome in outcomes if outcome.error is not None]
    if len(missing) < len(outcomes) or any((outcome.job.folder / RECORDS_NAME).exists() for outcome in missing):
        paths = report_folders([out_dir], out_dir / "report", console)
        if missing:
            note_missing(paths.summary_md, missing)
        console.print(f"sweep report: {paths.summary_md}")
    if missing:
        labels = ", ".join(outcome.job.label for outcome in missing)
        raise CosBenchError(
            f"{len(missing)} of {len(outcomes)} sweep cells did not finish ({labels}; each one's error is above); "
            "fix the cause and rerun the same command: finished records are kept and only the rest runs"
        )


def note_missing(summary_md: Path, missing: Sequence[CellOutcome]) -> None:
    """A section at the end of summary.md: which cells its tables lack (wholly or in part), and why."""
    lines = [
        "",
        "## Sweep cells that did not finish",
        "",
        "The tables above hold only the records these cells stored before they stopped; rerun the same `cos-bench sweep` to complete them.",
        "",
        *(f"- `{outcome.job.label}`: {outcome.error}" for outcome in missing),
    ]
    with open(summary_md, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
