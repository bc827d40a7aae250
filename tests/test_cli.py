"""The command line end to end on a tiny random model pair saved to a temp dir.

Covers: a full run (results folder, manifest, terminal table, report with every
column), resuming after an interruption (torn last line, Ctrl-C) without loss or
duplicates, one writer per results folder (a second run is refused naming the
first; a killed run frees the folder), one-line errors for bad input that leave
earlier results intact, a report that refuses to count a record twice, a sweep
with both proposer orders, and the report command. Data: tests/data/tasks.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from tiny import save_tiny_pair, word_tokenizer
from typer.testing import CliRunner

from cos_bench import run
from cos_bench.cli import app
from cos_bench.config import load_config
from cos_bench.storage import LOCK_NAME

DATA = Path(__file__).parent / "data" / "tasks"  # a few rows of each split, in the Hub's layout: always here

runner = CliRunner()
METHODS = ["vanilla", "sd", "cos", "hf-ensemble"]
REPORT_COLUMNS = [
    "tok/s pooled", "tok/s mean ± sd", "speedup mean", "speedup pooled", "α expected", "α empirical",
    "mean acc. len", "c", "theory", "measured/theory", "quality", "identical", "paper",
]  # fmt: skip


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    return save_tiny_pair(tmp_path_factory.mktemp("models"))


def write_config(folder: Path, pair, filename: str = "tiny.yaml", **changes) -> Path:
    small, large = pair
    data = {
        "name": "tiny",
        "models": [{"name": "small", "source": str(small)}, {"name": "large", "source": str(large)}],
        "combinations": [{"rule": "we", "weights": [0.5, 0.5]}, {"rule": "cd", "mu": 0.1, "expert": "large", "amateur": "small"}],
        "methods": METHODS,
        "gamma": {"small": 3, "large": 1},
        "tasks": ["humaneval", "gsm8k"],
        "limit": 2,
        "max_new_tokens": 8,
        "data_dir": str(DATA),
        "warmup": 1,
        "dtype": "float32",  # greedy identity is asserted below: no bf16 rounding near ties
    }
    data.update(changes)
    path = folder / filename
    path.write_text(yaml.safe_dump(data))
    return path


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# 2 tasks × 2 examples × (we: 4 methods + cd: 3 methods, hf-ensemble is WE-only)
EXPECTED_RECORDS = 2 * 2 * (4 + 3)


def test_run_writes_results_manifest_table_and_report(tmp_path, pair):
    out = tmp_path / "run"
    result = invoke("run", "--config", write_config(tmp_path, pair), "--out", out)
    assert result.exit_code == 0, result.output
    records = lines(out / "records.jsonl")
    assert len(records) == EXPECTED_RECORDS
    assert len({r["key"] for r in records}) == EXPECTED_RECORDS
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest) >= {"config", "versions", "hardware", "git_revision", "models", "prompt_format_version", "calibration"}
    assert manifest["calibration"]["c"] > 0 and set(manifest["calibration"]["step_seconds"]) == {"small", "large"}
    assert all(manifest["calibration"]["pass_cost"][m] > 0 for m in ("small", "large")) and manifest["calibration"]["pass_how"]
    assert all(set(r["calibration"]) == {"step_seconds", "c", "pass_tokens", "pass_cost"} for r in records)
    assert all(m["source"]["kind"] == "local" for m in manifest["models"])
    # auto on a CPU resolves to the eager engine, and the manifest says so.
    assert manifest["engine"]["requested"] == "auto" and manifest["engine"]["engine"] == "eager"
    for r in records:
        accounting = r["accounting"]
        emitted = (
            sum(m["accepted"] + m["bonus_accepted"] for m in accounting["models"])
            + accounting["corrections"]
            + accounting["direct_samples"]
        )
        if r["method"] != "hf-ensemble":  # its ids are cut at stop strings after generate(); its counts are not
            assert emitted == r["new_tokens"]
        assert r["timing"]["total_s"] >= r["timing"]["first_token_s"] > 0
    # Greedy sd and cos reproduce vanilla token for token on every example.
    by_key = {(r["task"], r["example_id"], r["setting"], r["method"]): r["token_ids"] for r in records}
    for (task, example, setting, method), ids in by_key.items():
        if method in ("sd", "cos"):
            assert ids == by_key[(task, example, setting, "vanilla")]
    assert "cos-bench summary" in result.output and "speedup" in result.output
    summary = (out / "report" / "summary.md").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| task | setting | T | method"))
    for column in REPORT_COLUMNS:
        assert f"| {column} |" in header
    assert (out / "report" / "speedup.png").stat().st_size > 0


def test_resume_after_a_torn_line_keeps_records_and_duplicates_none(tmp_path, pair):
    config, out = write_config(tmp_path, pair), tmp_path / "run"
    assert invoke("run", "--config", config, "--out", out).exit_code == 0
    path = out / "records.jsonl"
    original = path.read_text().splitlines()
    kept = original[:5]
    # A crash mid-write: five whole records and half of the sixth.
    path.write_text("\n".join(kept) + "\n" + original[5][: len(original[5]) // 2])
    result = invoke("run", "--config", config, "--out", out)
    assert result.exit_code == 0, result.output
    assert "5 records already there" in result.output
    records = lines(path)
    assert len(records) == EXPECTED_RECORDS and len({r["key"] for r in records}) == EXPECTED_RECORDS
    assert [json.dumps(r) for r in records[:5]] == [json.dumps(json.loads(line)) for line in kept]  # untouched
    history = json.loads((out / "manifest.json").read_text())["history"]
    assert len(history) == 1 and {"git_revision", "calibration", "created"} <= set(history[0])


def test_a_resumed_run_with_nothing_left_neither_calibrates_nor_rewrites_its_manifest(tmp_path, pair, monkeypatch):
    config, out = write_config(tmp_path, pair), tmp_path / "run"
    assert invoke("run", "--config", config, "--out", out).exit_code == 0
    manifest, records = (out / "manifest.json").read_bytes(), (out / "records.jsonl").read_bytes()
    calibrated = []
    monkeypatch.setattr(run, "calibrate", lambda *args: calibrated.append(args))
    result = invoke("run", "--config", config, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"{EXPECTED_RECORDS} records already there" in result.output
    assert calibrated == []
    assert (out / "manifest.json").read_bytes() == manifest and (out / "records.jsonl").read_bytes() == records


def test_ctrl_c_leaves_a_valid_folder_and_the_rerun_completes(tmp_path, pair, monkeypatch):
    config, out = write_config(tmp_path, pair), tmp_path / "run"
    real, calls = run.run_job, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "run_job", interrupted)
    result = invoke("run", "--config", config, "--out", out)
    assert result.exit_code == 130 and "rerun the same command to resume" in result.output
    assert len(lines(out / "records.jsonl")) == 3
    monkeypatch.setattr(run, "run_job", real)
    assert invoke("run", "--config", config, "--out", out).exit_code == 0
    records = lines(out / "records.jsonl")
    assert len(records) == EXPECTED_RECORDS and len({r["key"] for r in records}) == EXPECTED_RECORDS


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_a_second_run_on_a_folder_in_use_is_refused_and_touches_nothing(tmp_path, pair, monkeypatch):
    # The first run is paused in its second decode (one record stored). A second run on the same folder
    # must refuse, not redo the missing decodes beside it and leave each one stored twice.
    config, out = write_config(tmp_path, pair, limit=1, tasks=["gsm8k"], methods=["vanilla", "cos"]), tmp_path / "run"
    real, paused, resume, calls, failures = run.run_job, threading.Event(), threading.Event(), [], []

    def pausing(*args, **kwargs):
        if threading.current_thread() is first:
            calls.append(1)
            if len(calls) == 2:
                paused.set()
                resume.wait(timeout=300)
        return real(*args, **kwargs)

    def first_run():
        try:
            run.run_experiment(load_config(config), out, Console(file=io.StringIO()))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            failures.append(exc)
            paused.set()

    monkeypatch.setattr(run, "run_job", pausing)
    first = threading.Thread(target=first_run)
    first.start()
    try:
        assert paused.wait(timeout=300) and not failures, failures
        before = {name: (out / name).read_bytes() for name in ("records.jsonl", "manifest.json")}
        assert len(before["records.jsonl"].splitlines()) == 1
        error = one_line_error(invoke("run", "--config", config, "--out", out))
        assert f"PID {os.getpid()} " in error and "wait for it to finish, or pass --out with another folder" in error
        assert {name: (out / name).read_bytes() for name in before} == before
    finally:
        resume.set()
        first.join(timeout=300)
    assert not failures, failures
    records = lines(out / "records.jsonl")  # 1 example × (we, cd) × (vanilla, cos)
    assert len(records) == len({r["key"] for r in records}) == 4
    again = invoke("run", "--config", config, "--out", out)  # the first run has ended: the folder is free
    assert again.exit_code == 0 and "4 records already there" in again.output, again.output


HOLD_LOCK = """
import sys, time
from cos_bench.storage import exclusive_writer
with exclusive_writer(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_folder_held_by_a_run_killed_with_sigkill_is_free_again(tmp_path, pair):
    config, out = write_config(tmp_path, pair, limit=1, tasks=["gsm8k"], methods=["vanilla"]), tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        error = one_line_error(invoke("run", "--config", config, "--out", out))
        assert f"PID {holder.pid} " in error
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]  # refused before writing anything
        holder.kill()  # SIGKILL: the holder runs no cleanup; the kernel drops its lock
        holder.wait(timeout=30)
        result = invoke("run", "--config", config, "--out", out)
        assert result.exit_code == 0, result.output
        assert len(lines(out / "records.jsonl")) == 2
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()


def test_report_refuses_records_stored_twice_instead_of_counting_them_twice(tmp_path, pair):
    config, out = write_config(tmp_path, pair, limit=1, tasks=["gsm8k"], methods=["vanilla"]), tmp_path / "run"
    assert invoke("run", "--config", config, "--out", out).exit_code == 0
    path = out / "records.jsonl"
    original = path.read_text().splitlines()
    path.write_text("\n".join(original + original) + "\n")  # what two runs at once left before the lock
    before = path.read_bytes()
    error = one_line_error(invoke("report", out, "--out", tmp_path / "rep"))
    assert "holds 2 key(s) more than once" in error and "re-run into a new folder" in error
    assert not (tmp_path / "rep").exists()
    # A resume refuses before any decode, rather than at the summary after all of them.
    assert "more than once" in one_line_error(invoke("run", "--config", config, "--out", out))
    assert path.read_bytes() == before
    path.write_text("\n".join(original) + "\n")
    assert "pass each folder once" in one_line_error(invoke("report", out, out, "--out", tmp_path / "rep"))


def test_resuming_with_another_engine_is_refused_in_one_line(tmp_path, pair):
    out = tmp_path / "run"
    config = write_config(tmp_path, pair, limit=1, tasks=["gsm8k"], methods=["vanilla"])
    assert invoke("run", "--config", config, "--out", out).exit_code == 0
    before = (out / "records.jsonl").read_text()
    error = one_line_error(invoke("run", "--config", config, "--out", out, "--engine", "compiled"))
    assert "eager engine" in error and "--engine eager" in error
    assert (out / "records.jsonl").read_text() == before
    assert "must be one of auto, eager, compiled" in one_line_error(invoke("run", "--config", config, "--engine", "turbo"))


def test_resuming_results_of_another_prompt_format_is_refused_in_one_line(tmp_path, pair):
    out = tmp_path / "run"
    config = write_config(tmp_path, pair, limit=1, tasks=["gsm8k"], methods=["vanilla"])
    assert invoke("run", "--config", config, "--out", out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["prompt_format_version"] = "2026.11-2"  # written before MMLU's prompt changed
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = (out / "records.jsonl").read_text()
    error = one_line_error(invoke("run", "--config", config, "--out", out, "--limit", "2"))
    assert "prompt format 2026.11-2" in error and "--out with a new folder" in error
    assert (out / "records.jsonl").read_text() == before


def test_resuming_results_timed_on_another_cpu_is_refused_but_a_finished_folder_reopens(tmp_path, pair):
    out = tmp_path / "run"
    config = write_config(tmp_path, pair, limit=1, tasks=["gsm8k"], methods=["vanilla"])
    assert invoke("run", "--config", config, "--out", out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["hardware"]["cpu_model"]  # this machine's, never empty
    manifest["hardware"]["cpu_model"] = "Some Other CPU 9000"  # as if the first segment ran on another VM type
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = (out / "records.jsonl").read_text()
    error = one_line_error(invoke("run", "--config", config, "--out", out, "--limit", "2"))
    assert "Some Other CPU 9000 ->" in error and "--out with a new folder" in error
    assert (out / "records.jsonl").read_text() == before
    # Nothing left to decode times nothing: the same command on the finished folder is not refused.
    assert invoke("run", "--config", config, "--out", out).exit_code == 0
    # A manifest from before cpu_model was recorded is compared on what it has (a CPU run: CPU count, threads).
    del manifest["hardware"]["cpu_model"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert invoke("run", "--config", config, "--out", out, "--limit", "2").exit_code == 0
    assert len(lines(out / "records.jsonl")) == 2 * before.count("\n")  # the second example, every setting


@pytest.mark.slow
def test_compiled_engine_end_to_end_on_cpu(tmp_path, pair):
    # torch.compile (inductor, no CUDA graphs on a CPU): the static-cache runners compile every
    # fed length before timing, and greedy sd and cos still reproduce vanilla token for token.
    out = tmp_path / "compiled"
    config = write_config(
        tmp_path,
        pair,
        limit=1,
        tasks=["humaneval", "gsm8k"],
        methods=["vanilla", "sd", "cos"],
        combinations=[{"rule": "we", "weights": [0.5, 0.5]}],
    )
    result = invoke("run", "--config", config, "--out", out, "--engine", "compiled")
    assert result.exit_code == 0, result.output
    engine = json.loads((out / "manifest.json").read_text())["engine"]
    assert engine["engine"] == "compiled" and engine["graph_lengths"][:5] == [1, 2, 3, 4, 5]
    assert all(seconds > 0 for seconds in engine["compile_seconds"].values())
    by_key = {(r["task"], r["method"]): r["token_ids"] for r in lines(out / "records.jsonl")}
    for (task, method), ids in by_key.items():
        assert ids == by_key[(task, "vanilla")], f"{method} diverged on {task}"


def test_bad_input_is_one_line_and_loses_nothing(tmp_path, pair):
    config, out = write_config(tmp_path, pair), tmp_path / "run"
    assert invoke("run", "--config", config, "--out", out).exit_code == 0
    before = (out / "records.jsonl").read_bytes()

    assert "temprature" in one_line_error(invoke("run", "--config", write_config(tmp_path, pair, "typo.yaml", temprature=1), "--out", out))
    assert "sum to 1" in one_line_error(
        invoke("run", "--config", write_config(tmp_path, pair, "weights.yaml", combinations=[{"rule": "we", "weights": [0.5, 0.6]}]))
    )
    assert "gamma" in one_line_error(invoke("run", "--config", config, "--gamma", "small=0", "--out", out))
    assert "gamma" in one_line_error(invoke("run", "--config", config, "--gamma", "small", "--out", out))
    assert "temperature" in one_line_error(invoke("run", "--config", config, "--temperature", "-1", "--out", out))
    assert "different configuration" in one_line_error(invoke("run", "--config", config, "--temperature", "1", "--out", out))
    assert "not a cos-bench results" in one_line_error(invoke("report", tmp_path / "models-nowhere"))
    assert "config file not found" in one_line_error(invoke("run", "--config", tmp_path / "missing.yaml"))
    assert (out / "records.jsonl").read_bytes() == before


def test_mismatched_tokenizers_are_refused_naming_both(tmp_path, pair):
    small, _ = pair
    other = tmp_path / "other"
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = word_tokenizer(["completely", "different", "words"])
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(other)  # fmt: skip
    tokenizer.save_pretrained(other)
    config = write_config(tmp_path, (small, other))
    message = one_line_error(invoke("run", "--config", config, "--out", tmp_path / "run"))
    assert "small" in message and "large" in message


def test_sweep_writes_a_folder_per_cell_and_plots(tmp_path, pair):
    from cos_bench.folders import sweep_cell_labels
    from cos_bench.sweep import cell_folder_name

    config = write_config(tmp_path, pair, tasks=["gsm8k"], limit=1, max_new_tokens=4, methods=["vanilla", "cos"],
                          combinations=[{"rule": "we", "weights": [0.5, 0.5]}])  # fmt: skip
    out = tmp_path / "sweep"
    result = invoke("sweep", "--config", config, "--out", out, "--lambda", "0.2,0.8", "--proposers", "small,large")
    assert result.exit_code == 0, result.output
    cells = sorted(p.name for p in out.iterdir() if (p / "manifest.json").exists())
    assert len(cells) == 4
    assert (out / "report" / "sweep_lambda.png").stat().st_size > 0
    assert (out / "report" / "sweep_proposer.png").stat().st_size > 0
    records = [r for cell in cells for r in lines(out / cell / "records.jsonl")]
    assert {r["sweep"]["proposer"] for r in records} == {"small", "large"}
    # Resumable: a second invocation runs nothing new.
    again = invoke("sweep", "--config", config, "--out", out, "--lambda", "0.2,0.8", "--proposers", "small,large")
    assert again.exit_code == 0 and again.output.count("already there") == 4
    assert json.loads((out / "sweep.json").read_text())["earlier"] == []  # the same command adds no history
    # A resume over part of the grid describes that part, and keeps the earlier command's cells.
    part = invoke("sweep", "--config", config, "--out", out, "--lambda", "0.2", "--proposers", "small,large")
    assert part.exit_code == 0 and part.output.count("already there") == 2
    written = json.loads((out / "sweep.json").read_text())
    assert len(written["cells"]) == 2 and [len(entry["cells"]) for entry in written["earlier"]] == [4]
    assert sorted(cell_folder_name(label) for label in sweep_cell_labels(out)) == cells
    report = invoke("report", out, "--out", tmp_path / "rep")
    assert report.exit_code == 0, report.output
    assert (tmp_path / "rep" / "summary.csv").exists()
    assert (tmp_path / "rep" / "sweep_lambda.png").stat().st_size > 0
    (out / "sweep.json").write_text('{"cells": "lambda=0.2"}')
    assert "sweep.json is corrupt" in one_line_error(invoke("report", out, "--out", tmp_path / "rep2"))


def test_any_field_can_be_overridden_with_set(tmp_path, pair):
    config, out = write_config(tmp_path, pair, tasks=["gsm8k"], limit=1, max_new_tokens=2, methods=["vanilla"]), tmp_path / "run"
    result = invoke("run", "--config", config, "--out", out, "--set", "offset=3",
                    "--set", "combinations=[{rule: we, weights: [0.3, 0.7]}]")  # fmt: skip
    assert result.exit_code == 0, result.output
    (record,) = lines(out / "records.jsonl")
    assert record["setting"] == "we-0.3"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["offset"] == 3
    assert "offest" in one_line_error(invoke("run", "--config", config, "--set", "offest=3"))
    assert "KEY=VALUE" in one_line_error(invoke("run", "--config", config, "--set", "offset"))


def test_a_second_sweep_on_a_folder_in_use_is_refused(tmp_path, pair):
    from cos_bench.storage import exclusive_writer

    config = write_config(tmp_path, pair, tasks=["gsm8k"], limit=1, max_new_tokens=4, methods=["vanilla"],
                          combinations=[{"rule": "we", "weights": [0.5, 0.5]}])  # fmt: skip
    out = tmp_path / "sweep"
    with exclusive_writer(out):  # another sweep holds the folder
        error = one_line_error(invoke("sweep", "--config", config, "--out", out, "--lambda", "0.2,0.8"))
    assert "being written by another cos-bench run" in error
    assert not (out / "sweep.json").exists() and not any(p.is_dir() for p in out.iterdir())
