"""Results folders: atomic manifest, resumable append-only records, loading for analysis."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cos_bench.errors import CosBenchError
from cos_bench.record import RunRecord
from cos_bench.storage import (
    LOCK_NAME,
    RECORDS_NAME,
    ResultsStore,
    exclusive_writer,
    read_manifest,
    read_records,
    read_runs,
    record_key,
    update_manifest,
    write_manifest,
)

SMALL_RUN = Path(__file__).parent / "data" / "small_run"
FIXTURE = RunRecord.from_json(json.loads((SMALL_RUN / RECORDS_NAME).read_text(encoding="utf-8").splitlines()[0]))


def _record(n: int) -> RunRecord:
    return dataclasses.replace(FIXTURE, key=record_key("gsm8k", f"e{n}", "we-0.5", "cos", 0), text="ü" * n)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --- keys -------------------------------------------------------------------------------


def test_record_key_is_readable_and_distinguishes_every_part():
    assert record_key("humaneval", "HumanEval/0", "we-0.5", "cos", 1) == "humaneval|HumanEval/0|we-0.5|cos|1"
    keys = {
        record_key("t", "e", "s", "cos", 0),
        record_key("t", "e", "s", "cos", 1),
        record_key("t", "e", "s", "sd", 0),
        record_key("t", "e", "s", "cos", 0, variant={"gamma": 5}),
        record_key("t", "e", "s", "cos", 0, variant={"gamma": 1}),
    }
    assert len(keys) == 5


def test_record_key_variant_order_does_not_matter():
    assert record_key("t", "e", "s", "cos", 0, {"a": 1, "b": 2}) == record_key("t", "e", "s", "cos", 0, {"b": 2, "a": 1})


def test_record_key_refuses_the_separator_in_a_part():
    with pytest.raises(ValueError, match="ambiguous"):
        record_key("t", "a|b", "s", "cos", 0)


# --- append and resume -------------------------------------------------------------------------


def test_append_writes_one_line_per_record_and_skips_duplicates(tmp_path):
    store = ResultsStore(tmp_path / "run")
    assert store.done_keys() == set()
    assert store.append(_record(1)) is True
    assert store.append(_record(2)) is True
    assert store.append(_record(1)) is False  # already stored: never duplicated
    assert [r.key for r in store.records()] == [_record(1).key, _record(2).key]
    assert len(_lines(store.path)) == 2
    # A fresh store (a resumed run) knows the keys without being told.
    assert ResultsStore(tmp_path / "run").append(_record(2)) is False


def test_append_requires_a_key(tmp_path):
    with pytest.raises(ValueError, match="key"):
        ResultsStore(tmp_path).append(dataclasses.replace(_record(1), key=""))


def test_torn_last_line_is_ignored_repaired_and_appending_continues(tmp_path):
    store = ResultsStore(tmp_path)
    for n in range(3):
        store.append(_record(n))
    intact = store.path.read_bytes()
    torn = json.dumps(_record(3).to_json()).encode()[:17]  # a crash half-way through the fourth append
    with open(store.path, "ab") as handle:
        handle.write(torn)

    # Reading alone (e.g. a report beside a live run) skips the tail but changes nothing.
    assert len(store.records()) == 3
    assert store.path.read_bytes() == intact + torn

    resumed = ResultsStore(tmp_path)
    assert resumed.done_keys() == {_record(n).key for n in range(3)}
    assert resumed.path.read_bytes() == intact  # repaired: the next line will not be glued to garbage

    for n in (3, 4, 0):  # the lost one is redone, a new one added, a finished one skipped
        resumed.append(_record(n))
    assert [r.key for r in ResultsStore(tmp_path).records()] == [_record(n).key for n in range(5)]
    assert all(json.loads(line) for line in _lines(resumed.path))


def test_torn_multibyte_character_counts_as_torn(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(_record(1))
    with open(store.path, "ab") as handle:
        handle.write('{"key": "x", "p": "ü'.encode()[:-1])  # cut inside the UTF-8 bytes of ü
    assert ResultsStore(tmp_path).done_keys() == {_record(1).key}


def test_complete_last_record_without_newline_is_kept(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(_record(1))
    with open(store.path, "ab") as handle:
        handle.write(json.dumps(_record(2).to_json()).encode())  # whole record, newline never written
    resumed = ResultsStore(tmp_path)
    assert resumed.done_keys() == {_record(1).key, _record(2).key}
    resumed.append(_record(3))
    assert [json.loads(line)["key"] for line in _lines(store.path)] == [_record(n).key for n in (1, 2, 3)]


def test_corrupt_middle_line_is_an_error_naming_file_and_line(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(_record(1))
    with open(store.path, "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    with open(store.path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(_record(2).to_json()) + "\n")
    with pytest.raises(CosBenchError, match=rf"{RECORDS_NAME} line 2 .*delete that line"):
        ResultsStore(tmp_path).done_keys()
    with pytest.raises(CosBenchError, match="line 2"):
        ResultsStore(tmp_path).append(_record(3))
    with pytest.raises(CosBenchError, match="line 2"):
        read_runs([tmp_path])


def test_blank_lines_are_tolerated(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(_record(1))
    with open(store.path, "a", encoding="utf-8") as handle:
        handle.write("\n")
    store.append(_record(2))
    assert len(ResultsStore(tmp_path).records()) == 2


def _duplicate_lines(path: Path, *numbers: int) -> None:
    """Append copies of the given lines (0-based): what two runs writing one folder at once leave."""
    lines = _lines(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(lines[n] + "\n" for n in numbers))


def test_a_key_stored_twice_is_refused_on_resume_and_left_as_it_was(tmp_path):
    store = ResultsStore(tmp_path)
    for n in range(3):
        store.append(_record(n))
    _duplicate_lines(store.path, 0, 2)
    with open(store.path, "ab") as handle:
        handle.write(json.dumps(_record(3).to_json()).encode()[:9])  # a torn tail too: it must survive the refusal
    before = store.path.read_bytes()
    with pytest.raises(CosBenchError, match=r"holds 2 key\(s\) more than once \(2 extra line\(s\).*rerun `cos-bench run`") as error:
        ResultsStore(tmp_path).done_keys()
    assert "\n" not in str(error.value)
    assert store.path.read_bytes() == before


def test_read_runs_refuses_duplicated_keys_naming_the_folder_and_count(tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(SMALL_RUN, folder)
    _duplicate_lines(folder / RECORDS_NAME, 0, 1, 1)
    with pytest.raises(CosBenchError, match=rf"{folder / RECORDS_NAME} holds 2 key\(s\) more than once \(3 extra") as error:
        read_runs([folder])
    assert "\n" not in str(error.value) and "new folder" in str(error.value)


def test_read_runs_refuses_one_folder_given_twice(tmp_path):
    with pytest.raises(CosBenchError, match="both run 'small_run'.*pass each folder once"):
        read_runs([SMALL_RUN, SMALL_RUN])
    twin = tmp_path / "small_run"  # another folder of the same name: both would be run 'small_run'
    shutil.copytree(SMALL_RUN, twin)
    with pytest.raises(CosBenchError, match="count them twice"):
        read_runs([SMALL_RUN, twin])


# --- one writer per folder ----------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from cos_bench.storage import exclusive_writer
with exclusive_writer(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_is_refused_in_one_line_naming_the_holder(tmp_path):
    with exclusive_writer(tmp_path):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
        with pytest.raises(CosBenchError, match=rf"{tmp_path} is being written by another cos-bench run \(PID {os.getpid()} on ") as error:
            with exclusive_writer(tmp_path):
                pass
        assert "\n" not in str(error.value) and "wait for it to finish, or pass --out with another folder" in str(error.value)
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released, and no stale PID left behind


def test_the_lock_is_released_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with exclusive_writer(tmp_path):
            raise RuntimeError("a run crashed")
    with exclusive_writer(tmp_path):
        pass


def test_the_lock_dies_with_its_holder_even_by_kill_9(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CosBenchError, match=rf"PID {holder.pid} "):
            with exclusive_writer(tmp_path):
                pass
        holder.kill()  # SIGKILL: no cleanup code runs in the holder
        holder.wait(timeout=30)
        with exclusive_writer(tmp_path):  # the kernel dropped the lock with the process
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()


# --- manifest ---------------------------------------------------------------------------------


def test_manifest_round_trip_and_update(tmp_path):
    folder = tmp_path / "run"
    manifest = {"config": {"tasks": ["gsm8k"]}, "git_revision": None, "calibration": None}
    write_manifest(folder, manifest)
    assert read_manifest(folder) == manifest
    calibration = {"step_seconds": {"small": 0.01, "large": 0.04}, "c": 0.25, "c_how": "timed", "proposer": "small"}
    updated = update_manifest(folder, calibration=calibration)
    assert updated["calibration"] == calibration
    assert read_manifest(folder) == {**manifest, "calibration": calibration}
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"]  # no temp files left behind


def test_manifest_write_is_atomic(tmp_path, monkeypatch):
    write_manifest(tmp_path, {"version": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_manifest(tmp_path, {"version": 2})
    monkeypatch.undo()
    assert read_manifest(tmp_path) == {"version": 1}  # the old manifest survives whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_read_manifest_errors_say_what_and_how(tmp_path):
    with pytest.raises(CosBenchError, match="not a cos-bench results folder.*cos-bench run"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"config": ')
    with pytest.raises(CosBenchError, match="corrupt.*re-run into a new folder"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(CosBenchError, match="not an object"):
        read_manifest(tmp_path)


# --- loading ----------------------------------------------------------------------------------


def test_read_runs_labels_each_record_with_its_folder(tmp_path):
    second = tmp_path / "second_run"
    shutil.copytree(SMALL_RUN, second)
    stored = read_runs([SMALL_RUN, second])
    assert [s.run for s in stored] == ["small_run"] * 12 + ["second_run"] * 12
    assert [s.record for s in stored[:12]] == read_records(SMALL_RUN / RECORDS_NAME)


def test_a_record_round_trips_through_the_file(tmp_path):
    record = dataclasses.replace(_record(1), sweep={"gamma": 3, "pair": [3, 1]})
    ResultsStore(tmp_path).append(record)
    (line,) = _lines(tmp_path / RECORDS_NAME)
    assert RunRecord.from_json(json.loads(line)) == record
    assert ResultsStore(tmp_path).records() == [record]


def test_read_runs_refuses_folders_without_records(tmp_path):
    with pytest.raises(CosBenchError, match="not a cos-bench results folder"):
        read_runs([tmp_path / "typo"])
    assert not (tmp_path / "typo").exists()  # reading never creates folders
    (tmp_path / RECORDS_NAME).write_text("")
    with pytest.raises(CosBenchError, match="no finished records"):
        read_runs([tmp_path])


def test_read_runs_names_a_record_missing_a_field(tmp_path):
    (tmp_path / RECORDS_NAME).write_text(json.dumps({"key": "k", "task": "gsm8k"}) + "\n")
    with pytest.raises(CosBenchError, match="'k'.*lacks field"):
        read_runs([tmp_path])


def test_fixture_folder_is_a_results_folder():
    assert read_manifest(SMALL_RUN)["calibration"]["c"] == 0.25
