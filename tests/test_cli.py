"""The command line end to end on a tiny random model pair saved to a temp dir.

Covers: a full run (results folder, manifest, terminal table, report with every
column), resuming after an interruption (torn last line, Ctrl-C) without loss or
duplicates, one-line errors for bad input that leave earlier results intact, a
sweep with both proposer orders, and the report command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny import save_tiny_pair, word_tokenizer
from typer.testing import CliRunner

from cos_bench import bench
from cos_bench.cli import app

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data (the offline datasets)")

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
        emitted = sum(m["accepted"] + m["bonus_accepted"] for m in accounting["models"]) + accounting["corrections"] + accounting["direct_samples"]
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
    header = next(line for line in summary.splitlines() if line.startswith("| task"))
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


def test_ctrl_c_leaves_a_valid_folder_and_the_rerun_completes(tmp_path, pair, monkeypatch):
    config, out = write_config(tmp_path, pair), tmp_path / "run"
    real, calls = bench.run_job, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "run_job", interrupted)
    result = invoke("run", "--config", config, "--out", out)
    assert result.exit_code == 130 and "rerun the same command to resume" in result.output
    assert len(lines(out / "records.jsonl")) == 3
    monkeypatch.setattr(bench, "run_job", real)
    assert invoke("run", "--config", config, "--out", out).exit_code == 0
    records = lines(out / "records.jsonl")
    assert len(records) == EXPECTED_RECORDS and len({r["key"] for r in records}) == EXPECTED_RECORDS


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_resuming_with_another_engine_is_refused_in_one_line(tmp_path, pair):
    out = tmp_path / "run"
    config = write_config(tmp_path, pair, limit=1, tasks=["gsm8k"], methods=["vanilla"])
    assert invoke("run", "--config", config, "--out", out).exit_code == 0
    before = (out / "records.jsonl").read_text()
    error = one_line_error(invoke("run", "--config", config, "--out", out, "--engine", "compiled"))
    assert "eager engine" in error and "--engine eager" in error
    assert (out / "records.jsonl").read_text() == before
    assert "must be one of auto, eager, compiled" in one_line_error(invoke("run", "--config", config, "--engine", "turbo"))


@pytest.mark.slow
def test_compiled_engine_end_to_end_on_cpu(tmp_path, pair):
    # torch.compile (inductor, no CUDA graphs on a CPU): the static-cache runners compile every
    # fed length before timing, and greedy sd and cos still reproduce vanilla token for token.
    out = tmp_path / "compiled"
    config = write_config(tmp_path, pair, limit=1, tasks=["humaneval", "gsm8k"], methods=["vanilla", "sd", "cos"], combinations=[{"rule": "we", "weights": [0.5, 0.5]}])
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
    assert "sum to 1" in one_line_error(invoke("run", "--config", write_config(tmp_path, pair, "weights.yaml", combinations=[{"rule": "we", "weights": [0.5, 0.6]}])))
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
    report = invoke("report", out, "--out", tmp_path / "rep")
    assert report.exit_code == 0, report.output
    assert (tmp_path / "rep" / "summary.csv").exists()
    assert (tmp_path / "rep" / "sweep_lambda.png").stat().st_size > 0


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
