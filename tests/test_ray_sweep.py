"""`cos-bench sweep --executor ray` on a real local Ray cluster (ray.init(num_cpus=2)) over the tiny pair.

The Ray sweep stores the records of the local executor (token ids, keys, counts, α: every field but
the timings); each cell's manifest names the node it ran on; a worker killed mid-cell fails that cell
only, and the same command then completes it without a duplicate; a cell whose folder has another
writer is reported and the others finish, under either executor; a missing Ray, an unreachable
head, a device Ray cannot honour and a cell no node can hold are each one line.

The sweep and the record comparison are scripts/ray_vs_local.py's, which times the same sweep.
All tests here share one cluster and run on one xdist worker (group "ray", `--dist loadgroup`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from script_loader import load_script
from tiny import save_tiny_pair
from typer.testing import CliRunner

from cos_bench.cli import app
from cos_bench.errors import CosBenchError
from cos_bench.executors import (
    RAY_MISSING,
    WARM_IMPORTS,
    WORKER_LOG,
    CellResources,
    WarmBarrier,
    concurrent_cells,
    warm_worker,
    warm_workers,
)
from cos_bench.storage import LOCK_NAME, RECORDS_NAME, exclusive_writer

pytestmark = pytest.mark.xdist_group("ray")

CELLS = ["lambda-0.2_temperature-0", "lambda-0.2_temperature-1", "lambda-0.8_temperature-0", "lambda-0.8_temperature-1"]
RECORDS_PER_CELL = 3 * 3  # 3 gsm8k prompts × vanilla, sd, cos
runner = CliRunner()


script = load_script("ray_vs_local")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray-sweep")
    return script.write_sweep_config(folder, *save_tiny_pair(folder / "models"))


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_records(config, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("local") / "sweep"
    result = invoke("sweep", "--config", config, "--out", out)
    assert result.exit_code == 0, result.output
    records = script.sweep_records(out)
    assert sorted(records) == CELLS and all(len(cell) == RECORDS_PER_CELL for cell in records.values())
    assert all(json.loads((out / cell / "manifest.json").read_text())["node"]["host"] == socket.gethostname() for cell in CELLS)
    return records


def test_a_ray_sweep_stores_the_local_executors_records_and_names_each_node(cluster, config, local_records, tmp_path):
    out = tmp_path / "sweep"
    result = invoke("sweep", "--config", config, "--out", out, "--executor", "ray")
    assert result.exit_code == 0, result.output
    assert script.sweep_records(out) == local_records  # greedy and sampled cells alike
    (node_id,) = [node["NodeID"] for node in cluster.nodes() if node["Alive"]]
    for cell in CELLS:
        manifest = json.loads((out / cell / "manifest.json").read_text())
        assert manifest["node"] == {"host": socket.gethostname(), "ray_node_id": node_id}
        assert manifest["config"]["executor"] == "ray"
        assert "cell lambda=" in (out / cell / WORKER_LOG).read_text()
    assert (out / "report" / "sweep_lambda.png").stat().st_size > 0
    assert "each of 4 cells asks for 1 CPU(s) and 0 GPU(s)" in result.output and "done 4" in result.output
    assert "Ray start-up: 2 worker process(es) ready" in result.output  # 2 CPUs: two cells at a time


def test_warm_workers_start_one_process_per_concurrent_cell_and_the_cells_reuse_them(cluster):
    need = CellResources(num_cpus=1, num_gpus=0)
    workers = warm_workers(cluster, need, concurrent_cells(cluster, need))
    assert len(workers) == 2 and "transformers.modeling_utils" in WARM_IMPORTS

    @cluster.remote(num_cpus=1)
    def pid_after_a_while() -> int:
        time.sleep(0.2)  # both run at once, so each holds a worker
        return os.getpid()

    assert set(cluster.get([pid_after_a_while.remote() for _ in range(4)])) <= workers


def test_warm_tasks_that_finish_at_once_still_take_one_worker_each(cluster):
    # Nothing to import: each task would end at once and free its worker for the next one (the flake
    # this guards against: one warm worker where the cells need two). Each holds its worker until all start.
    need = CellResources(num_cpus=1, num_gpus=0)
    for _ in range(3):
        assert len(warm_workers(cluster, need, 2, modules=())) == 2


def test_a_warm_task_holds_its_worker_until_every_warm_task_has_started(cluster):
    barrier = cluster.remote(WarmBarrier).options(num_cpus=0).remote()
    task = cluster.remote(warm_worker).options(num_cpus=1)
    start = time.monotonic()
    cluster.get(task.remote((), barrier, 2, 1.0))  # the second task never comes: it waits out its 1 s
    assert time.monotonic() - start >= 1.0
    start = time.monotonic()
    cluster.get(task.remote((), barrier, 2, 30.0))  # the second of two: both have started, no wait
    assert time.monotonic() - start < 10.0
    cluster.kill(barrier)


def test_a_worker_that_cannot_import_what_a_cell_needs_is_one_line(cluster):
    with pytest.raises(CosBenchError) as err:
        warm_workers(cluster, CellResources(num_cpus=1, num_gpus=0), 1, modules=("cos_bench_no_such_module",))
    message = str(err.value)
    assert "\n" not in message and "ModuleNotFoundError: No module named 'cos_bench_no_such_module'" in message
    assert "install cos-bench with the same version on every node" in message


class FakeNodes:
    """ray.nodes() of a cluster that is not started: what concurrent_cells reads."""

    def __init__(self, *nodes: tuple[bool, dict]) -> None:
        self._nodes = [{"Alive": alive, "Resources": resources} for alive, resources in nodes]

    def nodes(self) -> list[dict]:
        return self._nodes


@pytest.mark.parametrize(
    ("need", "nodes", "cells"),
    [
        ((1, 0), [(True, {"CPU": 2.0})], 2),
        ((2, 0), [(True, {"CPU": 16.0, "GPU": 2.0}), (True, {"CPU": 5.0})], 8 + 2),
        ((1, 1), [(True, {"CPU": 16.0, "GPU": 2.0}), (True, {"CPU": 8.0})], 2),  # GPUs bound; a CPU-only node holds none
        ((4, 2), [(True, {"CPU": 16.0, "GPU": 8.0}), (False, {"CPU": 64.0, "GPU": 8.0})], 4),  # a dead node counts for nothing
        ((8, 0), [(True, {"CPU": 2.0})], 1),  # never fewer than one: cell_resources refuses a cell no node can hold
    ],
)
def test_concurrent_cells_counts_what_the_live_nodes_hold_at_once(need, nodes, cells):
    assert concurrent_cells(FakeNodes(*nodes), CellResources(*need)) == cells


def kill_a_cell_writer(out: Path, killed: list[str], deadline: float) -> None:
    """SIGKILL the worker holding a cell folder once that cell has stored a record; the lock file names it."""
    while time.monotonic() < deadline and not killed:
        for records in out.glob(f"*/{RECORDS_NAME}"):
            try:
                holder = json.loads((records.parent / LOCK_NAME).read_text() or "null")
            except (OSError, ValueError):
                continue
            if records.read_text().count("\n") >= 1 and holder and holder["pid"] != os.getpid():
                os.kill(holder["pid"], signal.SIGKILL)
                killed.append(records.parent.name)
                return
        time.sleep(0.002)


def test_a_worker_killed_mid_cell_fails_that_cell_only_and_a_rerun_completes_it(cluster, config, local_records, tmp_path):
    out = tmp_path / "sweep"
    killed: list[str] = []
    killer = threading.Thread(target=kill_a_cell_writer, args=(out, killed, time.monotonic() + 120))
    killer.start()
    first = invoke("sweep", "--config", config, "--out", out, "--executor", "ray")
    killer.join()
    assert killed, "no cell ever held its lock with a record stored"
    (cell,) = killed
    stored = (out / cell / RECORDS_NAME).read_text().split("\n")[:-1]  # whole lines: the kill may have torn the last
    assert 1 <= len(stored) < RECORDS_PER_CELL  # it died mid-cell
    (error,) = error_lines(first)
    assert first.exit_code == 2 and error.startswith("error: 1 of 4 sweep cells did not finish")
    assert "WorkerCrashedError" in first.output
    assert cell.replace("-", "=").replace("_", ",") in error
    assert "Sweep cells that did not finish" in (out / "report" / "summary.md").read_text()  # the report of the 3 others (and the part)

    again = invoke("sweep", "--config", config, "--out", out, "--executor", "ray")
    assert again.exit_code == 0, again.output
    assert f"{len(stored)} records already there are kept" in (out / cell / WORKER_LOG).read_text()
    assert script.sweep_records(out) == local_records  # sweep_records refuses a key stored twice
    assert "did not finish" not in (out / "report" / "summary.md").read_text()


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_cell_with_another_writer_is_reported_and_the_others_finish(request, config, executor, tmp_path):
    if executor == "ray":
        request.getfixturevalue("cluster")
    out = tmp_path / "sweep"
    with exclusive_writer(out / CELLS[1]):  # another run writes this cell's folder
        result = invoke("sweep", "--config", config, "--out", out, "--executor", executor)
    (error,) = error_lines(result)
    assert result.exit_code == 2 and error.startswith("error: 1 of 4 sweep cells did not finish (lambda=0.2,temperature=1;")
    assert "is being written by another cos-bench run" in result.output
    assert [cell for cell in CELLS if (out / cell / RECORDS_NAME).exists()] == [CELLS[0], *CELLS[2:]]
    summary = (out / "report" / "summary.md").read_text()
    assert "`lambda=0.2,temperature=1`: " in summary.split("Sweep cells that did not finish")[1]


def test_a_missing_ray_is_one_line(monkeypatch, config, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    result = invoke("sweep", "--config", config, "--out", tmp_path / "sweep", "--executor", "ray")
    assert result.exit_code == 2 and result.output.strip() == f"error: {RAY_MISSING}"
    assert not (tmp_path / "sweep").exists()


def test_an_unreachable_ray_head_is_one_line_at_once(monkeypatch, config, tmp_path):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process, even if this one joined a cluster
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed again below: nothing listens there
    start = time.monotonic()
    result = invoke("sweep", "--config", config, "--out", tmp_path / "sweep", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}")
    (error,) = error_lines(result)
    assert result.exit_code == 2 and error.startswith(f"error: cannot reach the Ray cluster at 127.0.0.1:{port} (")
    assert time.monotonic() - start < 30 and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--device", "cuda:1"], "device cuda:1 picks a GPU by number"),
        (["--device", "multi-gpu"], "say how many with --gpus-per-cell N"),
        (["--device", "cuda", "--gpus-per-cell", "0"], "device cuda needs a GPU, but --gpus-per-cell is 0"),
        (["--executor", "dask"], "executor: must be one of local, ray (got str 'dask')"),
        (["--cpus-per-cell", "0"], "cpus_per_cell: must be ≥ 1 (got 0)"),
    ],
)
def test_settings_a_ray_cell_cannot_honour_are_one_line(config, tmp_path, options, message):
    pytest.importorskip("ray")
    result = invoke("sweep", "--config", config, "--out", tmp_path / "sweep", "--executor", "ray", *options)
    (error,) = error_lines(result)
    assert result.exit_code == 2 and message in error and not (tmp_path / "sweep").exists()


def test_a_cell_no_node_can_hold_is_refused_before_it_queues_forever(cluster, config, tmp_path):
    result = invoke("sweep", "--config", config, "--out", tmp_path / "sweep", "--executor", "ray", "--gpus-per-cell", "1")
    (error,) = error_lines(result)
    assert result.exit_code == 2 and "no node of the Ray cluster has 1 CPU(s) and 1 GPU(s) for one cell (nodes: 2 CPU/0 GPU)" in error
