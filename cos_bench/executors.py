"""How `cos-bench sweep` runs its cells: `local` (one after another, in this process) or `ray`
(one Ray task per cell, on a Ray cluster).

The unit of work is a whole cell, not a cell × task. A cell is one results folder with one writer
(its `writer.lock`), one manifest and one calibration of its models: splitting it by task would put
several writers on one folder (or change the folder layout) and load and calibrate the same models
once per task. A real sweep has far more cells than a cluster has GPUs, so cells keep it busy.

Both executors write a cell through `run.run_experiment`, so a cell folder is the same either way
(records, manifest; a Ray cell also keeps what it printed in `worker.log`) and so are the resumption
rules: finished records are skipped, a cell that died resumes, the folder lock keeps one writer. A
failed cell is reported with its error and the others go on. Before the first Ray cell, one worker
per cell that can run at once is started and made to import what a cell imports: Ray's start-up,
shown as such, not hidden in the first cells.

Ray is an optional dependency (`pip install 'cos-bench[ray]'`): it is imported only here, and only
when a sweep asks for it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cos_bench.config import ExecutorSpec, ExperimentConfig
from cos_bench.errors import CosBenchError
from cos_bench.run import run_experiment
from cos_bench.storage import LOCK_NAME

WORKER_LOG = "worker.log"  # a Ray cell's console output, in its folder (the local executor prints to the terminal)
POLL_SECONDS = 0.5  # how often the driver's progress bar looks at the cells
PROBE_SECONDS = 5.0  # a Ray head that does not answer a TCP connect in this long is reported, not waited for
RAY_MISSING = "Ray is not installed: pip install 'cos-bench[ray]'"


@dataclass(frozen=True)
class CellJob:
    """One sweep cell as an executor runs it; picklable, so a Ray worker receives it whole."""

    label: str
    config: ExperimentConfig
    folder: Path  # absolute: a worker on another node has another working directory
    values: Mapping[str, Any]  # swept key -> value, stored in each record


@dataclass(frozen=True)
class CellOutcome:
    job: CellJob
    error: str | None  # None: the cell finished; else one line saying why not


@dataclass(frozen=True)
class CellResources:
    """What one Ray task asks the cluster for."""

    num_cpus: int
    num_gpus: int


class Executor(Protocol):
    def run(self, jobs: Sequence[CellJob], console: Console) -> list[CellOutcome]:
        """Every cell, each into its folder; outcomes in job order."""
        ...


def run_cell(job: CellJob, console: Console, model_cache: dict[str, Any]) -> None:
    """One cell into its folder: the same call under either executor."""
    run_experiment(job.config, job.folder, console, model_cache, dict(job.values), show_summary=False)


@contextmanager
def open_executor(spec: ExecutorSpec, device: str, cells: int, console: Console) -> Iterator[Executor]:
    """The executor `spec` names, ready to run `cells` cells. For `ray` the cluster is joined (or started)
    and its workers warmed here, before the caller writes anything, and the cluster is left again
    afterwards if this call joined it."""
    if spec.kind == "local":
        yield LocalExecutor()
        return
    ray = import_ray()
    check_device(device, spec.gpus_per_cell)
    joined = join_cluster(ray, spec.ray_address)
    try:
        need = cell_resources(ray, device, spec)
        start = time.perf_counter()
        pids = warm_workers(ray, need, min(cells, concurrent_cells(ray, need)))
        console.print(
            f"Ray start-up: {len(pids)} worker process(es) ready with torch, transformers and datasets imported "
            f"in {time.perf_counter() - start:.1f} s (measured), before any cell",
            highlight=False,
        )
        yield RayExecutor(ray, need)
    finally:
        if joined:
            ray.shutdown()


# --- local ------------------------------------------------------------------------


class LocalExecutor:
    """Cells one after another in this process, sharing loaded models between cells."""

    def run(self, jobs: Sequence[CellJob], console: Console) -> list[CellOutcome]:
        model_cache: dict[str, Any] = {}
        outcomes = []
        for number, job in enumerate(jobs, 1):
            console.rule(f"cell {number}/{len(jobs)}: {job.label}")
            try:
                run_cell(job, console, model_cache)
                outcomes.append(CellOutcome(job, None))
            except CosBenchError as err:
                outcomes.append(failed(job, str(err), console))
            except Exception as err:  # a bug or an exhausted device: its traceback, then the other cells
                console.print_exception()
                outcomes.append(failed(job, f"{type(err).__name__}: {first_line(str(err))}", console))
        return outcomes


def failed(job: CellJob, error: str, console: Console) -> CellOutcome:
    console.print(f"[red]cell {escape(job.label)} failed:[/] {escape(error)}", highlight=False, soft_wrap=True)
    return CellOutcome(job, error)


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


# --- ray: joining a cluster -----------------------------------------------------------


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise CosBenchError(RAY_MISSING) from None
    return ray


def join_cluster(ray: Any, address: str | None) -> bool:
    """Join the cluster at `address` (None: $RAY_ADDRESS, else the latest one started on this machine,
    else a new local one — ray.init's own rule); True when this call joined it, False when the
    process already belonged to one (a test's, a notebook's), which is then used as it is."""
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS")
    if target and target != "auto":
        probe(target)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError, ray.exceptions.RayError) as err:  # RayError: e.g. AuthenticationError
        # Ray's message may be a chained traceback; its last line names the failure.
        last = [line.strip() for line in str(err).splitlines() if line.strip()][-1:] or [type(err).__name__]
        # Since Ray 2.59 `ray start --head` turns on token authentication, but ray.init(address=...) sends
        # the token only when RAY_AUTH_MODE=token: the refusal then reads like an unreachable head.
        by_address = target and target != "auto" and not os.environ.get("RAY_AUTH_MODE")
        token = "; if the head uses token authentication, set RAY_AUTH_MODE=token" if by_address else ""
        raise CosBenchError(
            f"cannot join the Ray cluster at {target or 'this machine'} ({last[0]}); pass --ray-address with the head's "
            f"host:port (6379 unless `ray start --head --port` said otherwise), or leave it out to start a local cluster{token}"
        ) from None
    return True


def probe(address: str) -> None:
    """A TCP connect to the head first: ray.init retries an unreachable address for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # not host:port: ray.init's own error names the form it wants
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__  # socket.timeout has no strerror
        raise CosBenchError(
            f"cannot reach the Ray cluster at {address} ({reason}); start its head with `ray start --head`, "
            "or pass --ray-address with the address that command printed"
        ) from None


# --- ray: what a cell asks for -------------------------------------------------------


def check_device(device: str, gpus_per_cell: int | None) -> None:
    """Devices a Ray cell cannot honour, refused before the cluster is joined."""
    if device.startswith("cuda:"):
        raise CosBenchError(
            f"device {device} picks a GPU by number, but under --executor ray Ray gives each cell its own GPU(s); use --device cuda"
        )
    if device == "multi-gpu" and gpus_per_cell is None:
        raise CosBenchError("device multi-gpu spreads each cell over several GPUs of one node: say how many with --gpus-per-cell N")
    if device in ("cuda", "multi-gpu") and gpus_per_cell == 0:
        raise CosBenchError(
            f"device {device} needs a GPU, but --gpus-per-cell is 0 (Ray hides every GPU from a cell that asks for none); "
            "pass --gpus-per-cell 1 or more, or --device cpu"
        )


def cell_resources(ray: Any, device: str, spec: ExecutorSpec) -> CellResources:
    """GPUs from `device` unless `gpus_per_cell` says: cuda 1, auto 1 on a cluster with GPUs, else none;
    refused when no node of the cluster could ever hold one cell (Ray would queue it forever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    gpus = spec.gpus_per_cell
    if gpus is None:
        gpus = 1 if device == "cuda" or (device == "auto" and any(node.get("GPU", 0) for node in nodes)) else 0
    need = CellResources(num_cpus=spec.cpus_per_cell, num_gpus=gpus)
    if not any(node.get("CPU", 0) >= need.num_cpus and node.get("GPU", 0) >= need.num_gpus for node in nodes):
        have = ", ".join(f"{node.get('CPU', 0):g} CPU/{node.get('GPU', 0):g} GPU" for node in nodes) or "no live node"
        raise CosBenchError(
            f"no node of the Ray cluster has {need.num_cpus} CPU(s) and {need.num_gpus} GPU(s) for one cell (nodes: {have}); "
            "lower --cpus-per-cell / --gpus-per-cell, or add such a node to the cluster"
        )
    return need


# --- ray: warming the workers ------------------------------------------------------------

# What a cell imports before its first decode. A new Ray worker is a fresh Python process; importing
# these takes seconds (the local executor pays it once, before its first cell). Warming every worker
# the sweep will use at start-up keeps that cost out of the first cells and out of the cell timings'
# neighbourhood, shows it on the driver as start-up, and makes a node that cannot import them fail
# here, in one line, before any cell has started.
# transformers' modeling and generation modules are most of a first model load's time (1.3 s of 1.7 s
# for the tiny pair here); the architecture's own module is small.
WARM_IMPORTS = ("cos_bench.run", "torch", "transformers.modeling_utils", "transformers.generation.utils", "datasets")


def concurrent_cells(ray: Any, need: CellResources) -> int:
    """How many cells the live nodes can run at once, at `need` each."""
    slots = 0
    for node in (node["Resources"] for node in ray.nodes() if node["Alive"]):
        fits = [int(node.get(name, 0) // amount) for name, amount in (("CPU", need.num_cpus), ("GPU", need.num_gpus)) if amount]
        slots += min(fits, default=1)
    return max(slots, 1)


WARM_WAIT_S = 60.0  # how long a warm-up task holds its worker waiting for the others to start


class WarmBarrier:
    """A Ray actor counting the warm-up tasks that have started. Each task holds its worker until all
    have: a task that finished at once (its imports already done) would free its worker, and Ray
    could lease that same worker to the next task, leaving one warm worker where the cells need two."""

    def __init__(self) -> None:
        self.started = 0

    def start(self) -> None:
        self.started += 1

    def count(self) -> int:
        return self.started


def warm_worker(modules: Sequence[str], barrier: Any, count: int, wait_s: float = WARM_WAIT_S) -> int:
    """The body of one warm-up task: import what a cell imports, then wait (up to `wait_s`) until
    all `count` tasks have started on `barrier` (a WarmBarrier actor); returns this worker's process id."""
    import ray

    for module in modules:
        importlib.import_module(module)
    ray.get(barrier.start.remote())
    deadline = time.monotonic() + wait_s
    while ray.get(barrier.count.remote()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return os.getpid()


def warm_workers(ray: Any, need: CellResources, count: int, modules: Sequence[str] = WARM_IMPORTS) -> set[int]:
    """Start `count` workers shaped like a cell and import `modules` in each; their process ids.

    The tasks run at once and each holds its worker until all have started (`WarmBarrier`), so each
    takes its own worker (a fresh one spends seconds importing); Ray then leases these idle workers
    to the cells. CosBenchError if a worker cannot import them."""
    task = ray.remote(warm_worker).options(num_cpus=need.num_cpus, num_gpus=need.num_gpus, max_retries=0)
    barrier = ray.remote(WarmBarrier).options(num_cpus=0).remote()
    try:
        return set(ray.get([task.remote(tuple(modules), barrier, count) for _ in range(count)]))
    except ray.exceptions.RayError as err:
        cause = getattr(err, "cause", None) or err
        raise CosBenchError(
            f"a Ray worker cannot import what a cell needs ({type(cause).__name__}: {first_line(str(cause))}); "
            "install cos-bench with the same version on every node of the cluster (pip install 'cos-bench[ray]')"
        ) from None
    finally:
        ray.kill(barrier)


# --- ray: running and following the cells ----------------------------------------------


class RayExecutor:
    """One Ray task per cell; the driver follows them with one progress bar over all cells."""

    def __init__(self, ray: Any, resources: CellResources) -> None:
        self.ray = ray
        self.resources = resources

    def run(self, jobs: Sequence[CellJob], console: Console) -> list[CellOutcome]:
        ray, need = self.ray, self.resources
        totals = ray.cluster_resources()
        console.print(
            f"Ray: {len([n for n in ray.nodes() if n['Alive']])} node(s), {totals.get('CPU', 0):g} CPUs, {totals.get('GPU', 0):g} GPUs; "
            f"each of {len(jobs)} cells asks for {need.num_cpus} CPU(s) and {need.num_gpus} GPU(s)",
            highlight=False,
        )
        # No retries: a cell whose worker died (killed, out of memory, node lost) is reported, and the
        # same command resumes it; a silent retry would hide the cause and usually meet it again.
        task = ray.remote(ray_cell).options(num_cpus=need.num_cpus, num_gpus=need.num_gpus, max_retries=0)
        since = utc_now()
        refs = {task.remote(job, os.getcwd()): job for job in jobs}
        outcomes = follow(ray, refs, since, console)
        return [outcomes[ref] for ref in refs]


def ray_cell(job: CellJob, driver_cwd: str) -> str:
    """The body of one Ray task, in a worker process: the cell into its folder as the local executor
    runs it, its console into `worker.log` there; returns the host it ran on."""
    if os.path.isdir(driver_cwd):
        os.chdir(driver_cwd)  # relative model and data paths mean what they meant to the driver (a shared filesystem)
    job.folder.mkdir(parents=True, exist_ok=True)
    with open(job.folder / WORKER_LOG, "a", encoding="utf-8") as log:
        console = Console(file=log, width=200, soft_wrap=True)  # a log line is never wrapped
        console.rule(f"{utc_now()} cell {job.label} on {socket.gethostname()}")
        try:
            run_cell(job, console, {})  # models load once per cell: a GPU task's worker does not outlive it
        except CosBenchError as err:
            console.print(f"error: {escape(str(err))}")
            raise
        except Exception:
            console.print_exception()
            raise
    return socket.gethostname()


def follow(ray: Any, refs: Mapping[Any, CellJob], since: str, console: Console) -> dict[Any, CellOutcome]:
    """Wait for every cell, printing each failure as it comes; unfinished cells are cancelled if the
    driver stops (Ctrl-C), and their folders resume on the next run."""
    outcomes: dict[Any, CellOutcome] = {}
    pending = list(refs)
    columns = (TextColumn("[bold]cells"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[state]}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("cells", total=len(refs), state="")
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_SECONDS)
                for ref in ready:
                    outcomes[ref] = outcome(ray, ref, refs[ref], console)
                progress.update(bar, completed=len(outcomes), state=state_text(list(outcomes.values()), [refs[r] for r in pending], since))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    return outcomes


def outcome(ray: Any, ref: Any, job: CellJob, console: Console) -> CellOutcome:
    try:
        ray.get(ref)
    except ray.exceptions.RayTaskError as err:  # the cell raised: its own exception is the cause
        cause = err.cause
        if isinstance(cause, CosBenchError):
            return failed(job, str(cause), console)
        return failed(job, f"{type(cause).__name__}: {first_line(str(cause))} (traceback in {job.folder / WORKER_LOG})", console)
    except ray.exceptions.RayError as err:  # the worker or its node died: killed, out of memory, lost
        return failed(job, f"{type(err).__name__}: {first_line(str(err))}", console)
    return CellOutcome(job, None)


def state_text(outcomes: Sequence[CellOutcome], pending: Sequence[CellJob], since: str) -> str:
    done = sum(o.error is None for o in outcomes)
    running = sum(holds_lock_since(job.folder, since) for job in pending)
    return f"done {done} · running {running} · queued {len(pending) - running} · failed {sum(o.error is not None for o in outcomes)}"


def holds_lock_since(folder: Path, since: str) -> bool:
    """Whether a writer that started after `since` holds the cell folder: the lock file's text names its
    holder while it runs (storage.exclusive_writer) and is emptied when it ends. Read, never locked:
    taking the lock, even for a moment, could refuse the worker about to start the cell."""
    try:
        holder = json.loads((folder / LOCK_NAME).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return False
    return isinstance(holder, dict) and str(holder.get("started", "")) >= since  # a killed writer's text is older


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")  # the form the lock file's "started" takes
