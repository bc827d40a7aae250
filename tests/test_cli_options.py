"""`run` and `sweep` share one options object; the command line's raw values are parsed by cos_bench.config."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from cos_bench import cli
from cos_bench.cli import SharedOptions, app
from cos_bench.config import config_from_command_line
from cos_bench.errors import CosBenchError

runner = CliRunner()
SHARED_FLAGS = [
    "--config", "exp.yaml", "--limit", "3", "--tasks", "gsm8k, mmlu", "--methods", "vanilla,cos",
    "--max-new-tokens", "7", "--repeats", "2", "--seed", "4", "--device", "cpu", "--dtype", "float32",
    "--engine", "eager", "--data-dir", "data", "--allow-code-eval", "--warmup", "0", "--set", "offset=1",
]  # fmt: skip
SHARED_VALUES = {
    "limit": 3, "tasks": "gsm8k, mmlu", "methods": "vanilla,cos", "max_new_tokens": 7, "repeats": 2, "seed": 4,
    "device": "cpu", "dtype": "float32", "engine": "eager", "data_dir": "data", "allow_code_eval": True, "warmup": 0,
}  # fmt: skip


def command_params(name: str) -> dict[str, tuple]:
    command = typer.main.get_command(app).commands[name]
    return {p.name: (tuple(p.opts), p.help, p.default, p.multiple, p.is_flag) for p in command.params}


def test_run_and_sweep_declare_the_shared_options_identically():
    run, sweep = command_params("run"), command_params("sweep")
    shared = [f.name for f in fields(SharedOptions)]
    assert len(shared) == 16
    for name in shared:
        assert name in run and run[name] == sweep[name], name
    assert set(run) - set(shared) == {"out", "temperature", "gamma", "proposer", "draft"}
    assert set(sweep) - set(shared) == {
        "out", "lambdas", "mus", "gamma_grid", "temperatures", "proposers", "drafts", "executor", "ray_address", "gpus_per_cell",
        "cpus_per_cell",
    }  # fmt: skip


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_each_command_builds_its_config_once_from_the_shared_options(monkeypatch, command):
    calls = []

    def record(path, options, sets=None, grids=None):
        calls.append((path, dict(options), list(sets), grids))
        raise CosBenchError("stop here")

    monkeypatch.setattr(cli, "config_from_command_line", record)
    result = runner.invoke(app, [command, *SHARED_FLAGS])
    assert result.exit_code == 2 and "error: stop here" in result.output
    ((path, options, sets, grids),) = calls
    assert path == Path("exp.yaml") and sets == ["offset=1"]
    executor = {"executor": None, "ray_address": None, "gpus_per_cell": None, "cpus_per_cell": None}
    no_draft = {"threshold": None, "gamma_max": None}
    own = {"run": {"temperature": None, "gamma": None, "proposer": None, "draft": {"policy": None, **no_draft}}, "sweep": executor}[command]
    assert options == {**SHARED_VALUES, **own, **({"draft": no_draft} if command == "sweep" else {})}
    expected_grids = {"lambda": None, "mu": None, "gamma": None, "temperature": None, "proposer": None, "draft": (None, no_draft)}
    assert grids == (expected_grids if command == "sweep" else None)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = {
        "name": "t",
        "models": [{"name": "small", "source": "offline:a"}, {"name": "large", "source": "offline:b"}],
        "combinations": [{"rule": "we", "weights": [0.5, 0.5]}],
        "allow_code_eval": True,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_raw_options_are_parsed_by_the_config(config_file):
    cfg = config_from_command_line(
        config_file,
        {"tasks": "gsm8k, mmlu", "methods": "vanilla,cos", "gamma": ["large=2"], "limit": 2, "allow_code_eval": False},
        ["offset=4", "subjects=[anatomy]"],
        {"lambda": "0.2,0.8", "gamma": ["small=1,3"], "temperature": None, "proposer": "small,large"},
    )
    assert cfg.tasks == ("gsm8k", "mmlu") and cfg.methods == ("vanilla", "cos")
    assert dict(cfg.gamma) == {"small": 5, "large": 2} and cfg.limit == 2
    assert cfg.allow_code_eval  # a flag left off keeps the file's value
    assert cfg.offset == 4 and cfg.subjects == ("anatomy",)
    assert cfg.sweep.lambdas == (0.2, 0.8) and dict(cfg.sweep.gammas) == {"small": (1, 3)}
    assert cfg.sweep.proposers == ("small", "large") and cfg.sweep.temperatures == ()


def test_no_options_give_the_file_unchanged(config_file):
    cfg = config_from_command_line(config_file, {"limit": None, "gamma": [], "allow_code_eval": False}, None, {"mu": ""})
    assert cfg.limit is None and cfg.sweep is None and cfg.methods == ("vanilla", "sd", "cos")


@pytest.mark.parametrize(
    ("grids", "message"),
    [
        ({"lambda": "0.2,x"}, "--lambda: 'x' is not a number"),
        ({"temperature": "1,hot"}, "--temperatures: 'hot' is not a number"),
        ({"gamma": ["small=1,2.5"]}, "--gamma-grid small: '2.5' is not a whole number"),
    ],
)
def test_bad_grid_values_name_their_option(config_file, grids, message):
    with pytest.raises(CosBenchError, match=message):
        config_from_command_line(config_file, {}, None, grids)
