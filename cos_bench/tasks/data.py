"""Where evaluation rows come from: the Hugging Face Hub, or a local folder of JSON Lines files.

A local folder holds files in the Hub's own field layout (see the offline copies'
README), so one loader serves both; `datasets` reads `.jsonl` and `.jsonl.gz` alike.
The folder is chosen by the --data-dir option, else the COS_BENCH_DATA_DIR
environment variable; with neither, rows come from the Hub.
"""

from __future__ import annotations

import gzip
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cos_bench.errors import CosBenchError

DATA_DIR_ENV = "COS_BENCH_DATA_DIR"


@dataclass(frozen=True)
class DataSource:
    """A local folder of JSON Lines files, or None for the Hugging Face Hub."""

    data_dir: Path | None

    def describe(self) -> str:
        return f"local folder {self.data_dir}" if self.data_dir else "the Hugging Face Hub"


@dataclass(frozen=True)
class Split:
    """One split of one dataset, as named on the Hub and as a local file."""

    hub_id: str
    hub_config: str | None
    hub_split: str
    local_stem: str  # "<stem>.jsonl.gz" or "<stem>.jsonl" in the data folder
    fields: tuple[str, ...]  # columns every row must have


def resolve_data_source(data_dir: str | Path | None) -> DataSource:
    """The option wins, then the environment variable, then the Hub."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        return DataSource(None)
    path = Path(chosen).expanduser()
    if not path.is_dir():
        origin = "--data-dir" if data_dir not in (None, "") else DATA_DIR_ENV
        raise CosBenchError(
            f"data folder {path} (from {origin}) does not exist: point it at a folder of the "
            "evaluation JSON Lines files, or leave it unset to load from the Hugging Face Hub"
        )
    return DataSource(path.resolve())


def load_rows(source: DataSource, split: Split) -> list[dict[str, Any]]:
    """All rows of one split, in file order, each checked to have the split's fields."""
    if source.data_dir is None:
        dataset = _load_from_hub(split)
        where = f"{split.hub_id} ({split.hub_split}) on the Hugging Face Hub"
    else:
        path = _local_file(source.data_dir, split)
        dataset = _load_local(path, split)
        where = str(path)
    missing = [field for field in split.fields if field not in dataset.column_names]
    if missing:
        raise CosBenchError(
            f"{where} lacks the field(s) {', '.join(missing)} (has {', '.join(dataset.column_names)}): "
            f"use a file in the Hub's layout for {split.hub_id}"
        )
    rows = dataset.to_list()
    require_fields(rows, split.fields, where)
    return rows


def select_rows(count: int, limit: int | None, offset: int, seed: int | None) -> list[int]:
    """Indices of a deterministic subset: file order, or a seeded shuffle; then offset..offset+limit."""
    if limit is not None and limit < 1:
        raise CosBenchError(f"limit must be at least 1, got {limit}: pass a positive --limit or none")
    if offset < 0:
        raise CosBenchError(f"offset must be 0 or more, got {offset}: pass a non-negative --offset")
    if offset >= count:
        raise CosBenchError(f"offset {offset} is past the end of the {count} examples: lower --offset")
    order = list(range(count))
    if seed is not None:
        random.Random(seed).shuffle(order)  # its own generator: nothing else moves the global one
    end = None if limit is None else offset + limit
    return order[offset:end]


def _local_file(data_dir: Path, split: Split) -> Path:
    for suffix in (".jsonl.gz", ".jsonl"):
        path = data_dir / f"{split.local_stem}{suffix}"
        if path.is_file():
            return path
    raise CosBenchError(
        f"no {split.local_stem}.jsonl.gz (or .jsonl) in {data_dir}: add it (the rows of "
        f"{split.hub_id}, split {split.hub_split}, one JSON object a line) or point --data-dir / "
        f"{DATA_DIR_ENV} at a folder that has it"
    )


def _load_local(path: Path, split: Split):
    import datasets

    if _is_blank(path):  # `datasets` would only say "StopIteration" or "corresponds to no data"
        raise CosBenchError(
            f"{path} is empty: replace it with the rows of {split.hub_id} (split {split.hub_split}), one JSON object a line"
        )
    try:
        dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as exc:  # datasets wraps parse errors in several types; all mean a bad file
        raise CosBenchError(
            f"{path} is not valid JSON Lines ({_root_cause(exc)}): replace it with a good copy, one JSON object a line"
        ) from exc
    if len(dataset) == 0:
        raise CosBenchError(f"{path} has no rows: replace it with a good copy, one JSON object a line")
    return dataset


def _is_blank(path: Path) -> bool:
    """True for a file (gzipped or not) with nothing but whitespace; reads only up to the first row."""
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as handle:
            while block := handle.read(1 << 16):
                if block.strip():
                    return False
    except (OSError, EOFError):
        return False  # corrupt or truncated gzip: `datasets` reports it as not valid JSON Lines
    return True


def _load_from_hub(split: Split):
    import datasets

    try:
        return datasets.load_dataset(split.hub_id, split.hub_config, split=split.hub_split)
    except Exception as exc:  # offline, hub down, gated, renamed: the fix is the same
        raise CosBenchError(
            f"cannot load {split.hub_id} from the Hugging Face Hub ({_root_cause(exc)}): check the "
            f"connection, or pass --data-dir (or set {DATA_DIR_ENV}) to a folder with "
            f"{split.local_stem}.jsonl.gz"
        ) from exc


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def require_fields(rows: Sequence[dict[str, Any]], fields: Sequence[str], where: str) -> None:
    """Reject rows with a missing field before any prompt is built (a half-written file, say)."""
    for index, row in enumerate(rows):
        missing = [field for field in fields if row.get(field) is None]
        if missing:
            raise CosBenchError(f"row {index} of {where} has no {', '.join(missing)}: replace the file with a good copy")
