"""`cos-bench sweep`: every cell of a grid run into its own results folder, then one report with plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from cos_bench.config import ExperimentConfig, config_to_dict, sweep_cells
from cos_bench.folders import report_folders
from cos_bench.run import run_experiment
from cos_bench.storage import exclusive_writer


def cell_folder_name(label: str) -> str:
    return label.replace("=", "-").replace(",", "_")


def run_sweep(cfg: ExperimentConfig, out_dir: Path, console: Console | None = None) -> list[Path]:
    """Every cell of the grid into its own folder under `out_dir`; then plots of speedup against each swept parameter."""
    console = console or Console(stderr=True)
    cells = sweep_cells(cfg)
    # The sweep folder has one writer too: a second sweep would rewrite sweep.json and the report.
    with exclusive_writer(out_dir):
        (out_dir / "sweep.json").write_text(json.dumps({"config": config_to_dict(cfg), "cells": [cell.label for cell in cells]}, indent=2))
        cache: dict[str, Any] = {}
        folders = []
        for number, cell in enumerate(cells, 1):
            console.rule(f"cell {number}/{len(cells)}: {cell.label}")
            folder = out_dir / cell_folder_name(cell.label)
            folders.append(run_experiment(cell.config, folder, console, cache, dict(cell.values), show_summary=False))
        paths = report_folders([out_dir], out_dir / "report", console)
    console.print(f"sweep report: {paths.summary_md}")
    return folders
