"""Bad input through the command line: exactly one `error:` line naming the fix, exit code 2, no traceback.

Most cases fail before any model or dataset is touched, so the config points at model
folders that do not exist: an error about them would mean the check came too late.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from tiny import save_tiny_pair
from typer.testing import CliRunner

from cos_bench.cli import app

runner = CliRunner()
HUMANEVAL_ROW = {
    "task_id": "HumanEval/0",
    "prompt": "def one():\n",
    "canonical_solution": "    return 1\n",
    "test": "def check(f):\n    assert f() == 1\n",
    "entry_point": "one",
}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def only_error_line(result) -> str:
    """The whole output is one `error:` line (rich neither wraps it nor eats its brackets)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def one_line_error(result) -> str:
    """One `error:` line after whatever progress the run printed first."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert result.output.rstrip().endswith(errors[0]), result.output  # not wrapped onto a second line
    return errors[0]


def write_config(folder: Path, filename: str = "exp.yaml", models: tuple | None = None, **changes) -> Path:
    small, large = models or (folder / "no-such-small", folder / "no-such-large")
    data = {
        "name": "bad-input",
        "models": [{"name": "small", "source": str(small)}, {"name": "large", "source": str(large)}],
        "combinations": [{"rule": "we", "weights": [0.5, 0.5]}],
        "methods": ["vanilla", "cos"],
        "gamma": {"small": 3, "large": 1},
        "tasks": ["humaneval"],
        "limit": 1,
        "max_new_tokens": 4,
        "data_dir": str(folder),
        "warmup": 0,
        "dtype": "float32",
    }
    data.update(changes)
    path = folder / filename
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- γ (items 4-6)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "2.7", "1e3", "five"])
def test_gamma_must_be_a_whole_number(tmp_path, value):
    error = only_error_line(invoke("run", "-c", write_config(tmp_path), "--gamma", f"small={value}", "--out", tmp_path / "run"))
    assert f"'{value}' is not a whole number" in error and "--gamma small=5" in error


def test_gamma_grid_must_be_whole_numbers(tmp_path):
    error = only_error_line(invoke("sweep", "-c", write_config(tmp_path), "--gamma-grid", "small=1,nan", "--out", tmp_path / "sweep"))
    assert "--gamma-grid small: 'nan' is not a whole number" in error and "--gamma-grid small=1,3,5" in error


def test_run_takes_one_gamma_per_model(tmp_path):
    error = only_error_line(invoke("run", "-c", write_config(tmp_path), "--gamma", "small=1,3", "--out", tmp_path / "run"))
    assert "one draft length per model" in error and "--gamma-grid" in error


@pytest.mark.parametrize("gamma", [10**20, 2.7, "3", True])
def test_yaml_gamma_must_be_an_integer_within_the_token_budget(tmp_path, gamma):
    config = write_config(tmp_path, gamma={"small": gamma, "large": 1})
    error = only_error_line(invoke("run", "-c", config, "--out", tmp_path / "run"))
    assert "gamma.small" in error
    if gamma == 10**20:
        assert "must be ≤ 5" in error and "token budget" in error and "max_new_tokens = 4" in error


def test_gamma_option_past_the_token_budget(tmp_path):
    error = only_error_line(
        invoke("run", "-c", write_config(tmp_path, max_new_tokens=16), "--gamma", "small=17", "--out", tmp_path / "run")
    )
    assert "gamma.small: must be ≤ 16 (got 17)" in error and "raise max_new_tokens" in error


# --------------------------------------------------------------------------- --out (item 6)


def test_out_that_is_a_file(tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    error = only_error_line(invoke("run", "-c", write_config(tmp_path), "--out", existing))
    assert "is a file, not a folder" in error and "pass --out" in error
    assert existing.read_text() == "keep me"


def test_out_under_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    error = only_error_line(invoke("sweep", "-c", write_config(tmp_path), "--lambda", "0.5", "--out", tmp_path / "notes.txt" / "sweep"))
    assert "notes.txt is a file, so no folder can be made under it" in error


def test_out_that_is_a_dangling_link(tmp_path):
    (tmp_path / "results").symlink_to(tmp_path / "gone")
    error = only_error_line(invoke("run", "-c", write_config(tmp_path), "--out", tmp_path / "results"))
    assert "which does not exist; create that folder or pass another --out" in error


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (unwritable even for root)")
def test_out_that_cannot_be_written(tmp_path):
    error = only_error_line(invoke("run", "-c", write_config(tmp_path), "--out", "/proc/cos-bench-results"))
    assert "cannot create a folder in /proc" in error and "a folder you can write to" in error


def test_report_checks_its_out_too(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    error = only_error_line(invoke("report", tmp_path, "--out", tmp_path / "notes.txt"))
    assert "is a file, not a folder" in error


# --------------------------------------------------------------------------- files (item 6)


def test_config_that_is_not_utf8(tmp_path):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("name: café\n".encode("latin-1"))
    error = only_error_line(invoke("run", "-c", config))
    assert "not UTF-8 text (byte 0xe9 at offset 9)" in error and "save the file as UTF-8" in error


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    return save_tiny_pair(tmp_path_factory.mktemp("models"))


BROKEN_CONFIGS = {
    "invalid JSON": '{"model_type": "qwen2",',
    "no model_type": "{}",
    "unknown model_type": '{"model_type": "no-such-architecture"}',
    "field of the wrong type": None,  # the real config with hidden_size a string
}


@pytest.mark.parametrize("text", BROKEN_CONFIGS.values(), ids=BROKEN_CONFIGS.keys())
def test_model_folder_with_a_broken_config_json(tmp_path, pair, text):
    broken = tmp_path / "broken"
    shutil.copytree(pair[0], broken)
    if text is None:
        text = json.dumps({**json.loads((broken / "config.json").read_text()), "hidden_size": "wide"})
    (broken / "config.json").write_text(text)
    (tmp_path / "humaneval_test.jsonl").write_text(json.dumps(HUMANEVAL_ROW) + "\n")
    config = write_config(tmp_path, models=(broken, pair[1]))
    error = one_line_error(invoke("run", "-c", config, "--out", tmp_path / "run"))
    assert f"cannot load model 'small' from {broken}" in error and "fix its config.json" in error


def test_empty_data_file(tmp_path):
    (tmp_path / "humaneval_test.jsonl").write_text("")
    error = only_error_line(invoke("run", "-c", write_config(tmp_path), "--out", tmp_path / "run"))
    assert "humaneval_test.jsonl is empty" in error and "StopIteration" not in error
    assert "one JSON object a line" in error


# --------------------------------------------------------------------------- markup (item 7)


def test_brackets_in_a_hint_are_printed(tmp_path):
    error = only_error_line(invoke("run", "-c", write_config(tmp_path), "--set", "limit=["))
    assert "e.g. --set 'subjects=[anatomy]'" in error


def test_brackets_in_a_path_are_printed(tmp_path):
    existing = tmp_path / "[bold]results"
    existing.write_text("")
    error = only_error_line(invoke("run", "-c", write_config(tmp_path), "--out", existing))
    assert f"--out {existing} is a file" in error
