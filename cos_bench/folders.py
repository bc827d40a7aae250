"""Results and sweep folders read back: which folders a path holds, what a sweep varied, and the
report over them (`cos-bench report`; rendering is `report.py`'s)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from cos_bench.errors import CosBenchError
from cos_bench.metrics import load_records, summarize
from cos_bench.plots import plot_sweep
from cos_bench.report import ReportPaths, render_headline, write_summary_report
from cos_bench.storage import RECORDS_NAME, SWEEP_NAME


def parse_cell_label(label: str) -> dict[str, Any]:
    """'lambda=0.5,gamma.small=3,proposer=small' -> {'lambda': 0.5, 'gamma.small': 3, 'proposer': 'small'}."""
    values: dict[str, Any] = {}
    for part in label.split(","):
        key, _, raw = part.partition("=")
        try:
            number = float(raw)
            values[key] = int(number) if number.is_integer() and "." not in raw else number
        except ValueError:
            values[key] = raw
    return values


def report_folders(folders: Sequence[Path], out_dir: Path, console: Console) -> ReportPaths:
    """Tables and plots for results or sweep folders (sweep plots for each parameter a sweep varies)."""
    cells = [cell for folder in folders for cell in sweep_folders(folder)]
    summary = summarize(load_records(cells))
    paths = write_summary_report(summary, out_dir)
    for param in sorted({p for folder in folders if (folder / SWEEP_NAME).exists() for p in swept_parameters(folder)}):
        plot_sweep(summary, param, out_dir / f"sweep_{param}.png")
    console.print(render_headline(summary))
    if paths.acceptance_png is None:
        console.print("acceptance by draft position: nothing to draw (every row drafted one position, γ = 1)")
    return paths


def read_sweep(sweep_dir: Path) -> dict[str, Any]:
    """A sweep folder's sweep.json: the last sweep command's `config` and `cells`, and `earlier` commands' (oldest first)."""
    path = sweep_dir / SWEEP_NAME
    try:
        written = json.loads(path.read_text(encoding="utf-8"))
        earlier = written.get("earlier", []) if isinstance(written, dict) else None
        if not isinstance(earlier, list) or not all(_is_sweep_entry(entry) for entry in [*earlier, written]):
            raise ValueError("not a config with a list of cell labels per sweep command")
    except (ValueError, UnicodeDecodeError) as err:
        raise CosBenchError(
            f"{path} is corrupt ({err}); restore it, or delete it (the cell folders stay) and rerun the sweep command"
        ) from None
    return written


def _is_sweep_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("cells"), list) and all(isinstance(label, str) for label in entry["cells"])


def sweep_cell_labels(sweep_dir: Path) -> list[str]:
    """Every cell any sweep command ran into `sweep_dir`, once each: a resumed sweep may run only part of the grid."""
    written = read_sweep(sweep_dir)
    entries = [*written.get("earlier", []), written]
    return list(dict.fromkeys(label for entry in entries for label in entry["cells"]))


def swept_parameters(sweep_dir: Path) -> list[str]:
    """The parameters a sweep folder varies, from the cell labels of every sweep command in its sweep.json."""
    return sorted({key for label in sweep_cell_labels(sweep_dir) for key in parse_cell_label(label)})


def sweep_folders(folder: Path) -> Iterator[Path]:
    """A results folder, or the cell folders of a sweep folder that hold at least one record (a cell that
    failed or was stopped before its first decode has nothing to report)."""
    if (folder / "manifest.json").exists():
        yield folder
        return
    started = sorted(p for p in folder.iterdir() if (p / "manifest.json").exists()) if folder.is_dir() else []
    if not started:
        raise CosBenchError(f"{folder} is not a cos-bench results or sweep folder: pass a folder written by `cos-bench run` or `sweep`")
    cells = [cell for cell in started if (cell / RECORDS_NAME).exists()]
    if not cells:
        raise CosBenchError(f"no cell of the sweep folder {folder} has finished a decode yet; rerun the `cos-bench sweep` to resume them")
    yield from cells
