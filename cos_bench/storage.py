"""Results folders: a manifest plus one JSON line per finished decode.

A run is resumable because every record is appended, flushed and fsynced the
moment its decode finishes; on restart `ResultsStore.done_keys` says what to
skip. A crash can tear only the line being written (the last one), so that is
repaired silently; damage anywhere else is reported, never guessed around.

One run writes a folder at a time (`exclusive_writer`): two runs resuming the same
folder would both run every missing decode and store each one twice. A key stored
twice all the same (a folder written before the lock existed, a hand-merged file)
is refused wherever records are read for numbers, never counted twice.

What a line holds is `record.RunRecord`'s business; this module only moves records to
and from disk. Turning them into rows for analysis is `metrics`'.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cos_bench.errors import CosBenchError
from cos_bench.methods import hf_ensemble
from cos_bench.record import RunRecord

MANIFEST_NAME = "manifest.json"
RECORDS_NAME = "records.jsonl"
SWEEP_NAME = "sweep.json"  # a sweep folder's commands and cells (cos_bench.sweep writes it, cos_bench.folders reads it)
LOCK_NAME = "writer.lock"
_KEY_SEPARATOR = "|"


# --- one writer per folder --------------------------------------------------------


@contextmanager
def exclusive_writer(folder: Path) -> Iterator[None]:
    """Hold `folder` as its only writer until the block ends; CosBenchError naming the holder if another has it.

    The lock is flock(2) on `folder/writer.lock`. The kernel ties it to the open file, so
    it goes when the file is closed: at the end of the block, or when the process dies by
    any means, kill -9 included — a crashed run never leaves a stale lock. The descriptor
    is not inherited by programs we exec (os.open is close-on-exec). The file's text (the
    holder's PID, host and start time) only lets the refusal name the holder; it decides nothing.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise CosBenchError(f"cannot create {path} ({err.strerror}): make {folder} writable, or pass --out with another folder") from None
    try:
        _lock(fd, folder, path)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # still ours here: a later reader never finds a finished run's PID
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int, folder: Path, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CosBenchError(
            f"{folder} is being written by another cos-bench run ({_describe_holder(fd)}); "
            "wait for it to finish, or pass --out with another folder"
        ) from None
    except OSError as err:  # e.g. ENOLCK: a network filesystem without locking
        raise CosBenchError(f"cannot lock {path} ({err.strerror}): pass --out with a folder on a local disk") from None


def _describe_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"PID {int(holder['pid'])} on {holder['host']}, started {holder['started']}"
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return "PID not yet recorded: it has only just started"  # between its flock and its write


# --- manifest -----------------------------------------------------------------


def write_json_atomic(path: Path, value: Mapping[str, Any]) -> Path:
    """Write `value` as JSON to `path` atomically (temp file + os.replace): a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"  # TypeError here = a non-JSON value: a bug upstream
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> Path:
    """Write `folder/manifest.json` atomically."""
    return write_json_atomic(Path(folder) / MANIFEST_NAME, manifest)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a results folder; CosBenchError when it is missing or unreadable."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise CosBenchError(f"{folder} is not a cos-bench results folder (no {MANIFEST_NAME}); pass a folder written by `cos-bench run`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CosBenchError(
            f"{path} is corrupt ({err}), so {folder} is not a readable cos-bench results folder; "
            "restore the file or re-run into a new folder"
        ) from None
    if not isinstance(manifest, dict):
        raise CosBenchError(
            f"{path} holds a JSON {type(manifest).__name__}, not an object, so {folder} is not a "
            "cos-bench results folder; restore the file or re-run into a new folder"
        )
    return manifest


def update_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    """Replace top-level manifest fields (e.g. `calibration=...`) and rewrite it atomically; returns the new manifest."""
    manifest = read_manifest(folder)
    manifest.update(fields)
    write_manifest(folder, manifest)
    return manifest


# --- records ------------------------------------------------------------------


def record_key(
    task: str,
    example_id: str,
    setting: str,
    method: str,
    repeat: int,
    variant: Mapping[str, Any] | None = None,
) -> str:
    """The identity of one decode, e.g. "gsm8k|17|we-0.5|cos|0".

    `variant` holds whatever else tells apart cells that share a setting label
    (sweep values, proposer order, temperature); without it such cells would
    collide and the later ones be skipped as already done.
    """
    parts = [task, str(example_id), setting, method, str(int(repeat))]
    for part in parts:
        if _KEY_SEPARATOR in part:
            raise ValueError(f"record key part {part!r} contains {_KEY_SEPARATOR!r}, which would make keys ambiguous")
    if variant:
        parts.append(json.dumps(dict(variant), sort_keys=True, separators=(",", ":")))
    return _KEY_SEPARATOR.join(parts)


class ResultsStore:
    """Append-only `records.jsonl` in one results folder, safe to reopen after a crash."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / RECORDS_NAME
        self._keys: set[str] | None = None  # loaded (and the file repaired) on first need

    def done_keys(self) -> set[str]:
        """Keys of the finished records; repairs a torn last line so the next append starts clean."""
        records, complete_bytes, needs_newline = _scan(self.path)
        refuse_duplicates([record["key"] for record in records], self.folder)  # before the repair below: a refused folder is left as it was
        if self.path.exists() and self.path.stat().st_size != complete_bytes:
            # A crash mid-append left a partial line: drop it, else the next record is glued to it.
            with open(self.path, "r+b") as handle:
                handle.truncate(complete_bytes)
                handle.flush()
                os.fsync(handle.fileno())
        if needs_newline:
            # The last record is whole but its newline never landed.
            self._write_bytes(b"\n")
        self._keys = {record["key"] for record in records}
        return set(self._keys)

    def append(self, record: RunRecord) -> bool:
        """Append one finished record and fsync it; returns False (writes nothing) if its key is already stored."""
        if not record.key:
            raise ValueError("a record needs a non-empty key (see record_key)")
        if self._keys is None:
            self.done_keys()
        assert self._keys is not None
        if record.key in self._keys:
            return False
        line = json.dumps(record.to_json(), ensure_ascii=False, allow_nan=True) + "\n"
        self._write_bytes(line.encode("utf-8"))  # one write: a crash can tear only this line
        self._keys.add(record.key)
        return True

    def records(self) -> list[RunRecord]:
        """Every complete record, in file order; read-only, so safe while a run is still appending."""
        return read_records(self.path)

    def _write_bytes(self, data: bytes) -> None:
        with open(self.path, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def read_records(path: Path) -> list[RunRecord]:
    """The complete records of one records.jsonl without creating or repairing anything."""
    path = Path(path)
    return [_record_checked(row, path) for row in _scan(path)[0]]


def _record_checked(row: dict[str, Any], path: Path) -> RunRecord:
    try:
        return RunRecord.from_json(row)
    except (KeyError, TypeError) as err:
        raise CosBenchError(
            f"record {row.get('key')!r} in {path} lacks field {err}; it was written by a "
            "different cos-bench version — re-run into a new folder with this version"
        ) from None


def refuse_duplicates(keys: Sequence[str], folder: Path) -> None:
    """CosBenchError if a key is stored more than once.

    Refused rather than deduplicated: within one run `append` never stores a key twice, so a
    repeat means two runs wrote the folder at once, and then both copies were timed while
    sharing the machine — keeping either would report a contended timing as a clean one.
    """
    counts = Counter(keys)
    repeated = [key for key, count in counts.items() if count > 1]
    if repeated:
        extra = sum(counts[key] - 1 for key in repeated)
        raise CosBenchError(
            f"{Path(folder) / RECORDS_NAME} holds {len(repeated)} key(s) more than once ({extra} extra line(s), e.g. "
            f"{repeated[0]!r}): two runs wrote it at once, so those decodes were timed sharing the machine; delete every "
            "line of those keys and rerun `cos-bench run` on the folder to redo them, or re-run into a new folder"
        )


def _scan(path: Path) -> tuple[list[dict[str, Any]], int, bool]:
    """Parse records.jsonl: (records, bytes up to the last complete line, last record lacks its newline).

    Only the final line may be bad (a torn write); a bad line before it is damage
    we cannot explain, so it is an error naming the line.
    """
    if not path.exists():
        return [], 0, False
    data = path.read_bytes()
    lines = data.split(b"\n")  # the final element is what follows the last newline ("" if none)
    records: list[dict[str, Any]] = []
    offset = 0
    for number, raw in enumerate(lines, start=1):
        is_last = number == len(lines)
        end = offset + len(raw) + (0 if is_last else 1)
        if raw.strip():
            record = _parse_line(raw)
            if record is None:
                if is_last:
                    return records, offset, False  # torn tail: keep everything before it
                raise CosBenchError(
                    f"{path} line {number} is not a complete JSON record, so the results are damaged; "
                    f"delete that line to keep the rest (its decode will be re-run) or re-run into a new folder"
                )
            records.append(record)
            if is_last:
                return records, end, True
        offset = end
    return records, len(data), False


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        return None
    return _current_layout(record)


def _current_layout(row: dict[str, Any]) -> dict[str, Any]:
    """A stored line as today's version names it.

    `hf-ensemble` lines from before the peer ran two ways carry no `hf_drafting`: they drafted the
    run's γ with no cut-off, which is today's `hf-ensemble-matched`, and are read back as that, key
    included, so a resumed run neither takes them for the defaults variant nor decodes them twice.
    """
    if row.get("method") != hf_ensemble.DEFAULTS.name or "hf_drafting" in row:
        return row
    matched = hf_ensemble.MATCHED.name
    parts = row["key"].split(_KEY_SEPARATOR, 4)  # task, example, setting, method, repeat[|variant] (record_key)
    if len(parts) == 5 and parts[3] == row["method"]:
        parts[3] = matched
    gamma = (row.get("gammas") or {}).get(row.get("proposer"))
    drafting = hf_ensemble.matched_drafting(int(gamma)).to_json() if isinstance(gamma, int) else None
    return {**row, "method": matched, "key": _KEY_SEPARATOR.join(parts), "hf_drafting": drafting}


# --- reading several folders -------------------------------------------------------------


@dataclass(frozen=True)
class StoredRecord:
    """A record and the run it belongs to (its folder's name)."""

    run: str
    record: RunRecord


def read_runs(folders: Sequence[Path]) -> list[StoredRecord]:
    """Every record of the given results folders, folder by folder, each labelled with its run.

    A key stored twice in a folder, or under one run name from two folders (the same
    folder passed twice, say), is refused: it would be counted twice.
    """
    stored: list[StoredRecord] = []
    first_seen: dict[tuple[str, str], int] = {}  # (run, key) -> index of the folder it came from
    for index, folder in enumerate(map(Path, folders)):
        if not (folder / RECORDS_NAME).is_file():
            raise CosBenchError(f"{folder} is not a cos-bench results folder (no {RECORDS_NAME}); pass a folder written by `cos-bench run`")
        # Read-only on purpose: a report may run beside a live run, whose torn tail is just unfinished.
        rows = _scan(folder / RECORDS_NAME)[0]
        refuse_duplicates([row["key"] for row in rows], folder)
        for row in rows:
            earlier = first_seen.setdefault((folder.name, row["key"]), index)
            if earlier != index:
                raise CosBenchError(
                    f"{folders[earlier]} and {folder} are both run {folder.name!r} and hold the same records "
                    f"(e.g. {row['key']!r}), which would count them twice; pass each folder once, or rename one"
                )
            stored.append(StoredRecord(run=folder.name, record=_record_checked(row, folder / RECORDS_NAME)))
    if not stored:
        raise CosBenchError(
            f"no finished records in {', '.join(str(f) for f in folders) or '(no folders)'}; "
            "run `cos-bench run` first (or let a run finish at least one decode)"
        )
    return stored
