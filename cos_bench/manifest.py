"""The results folder's manifest: what a run was (config, engine, models, versions, hardware, calibration).

`open_results` refuses to resume a folder written by a different configuration or engine, and
`refuse_other_hardware` one timed on a different machine; `with_history` keeps what earlier
invocations of a resumed run recorded.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from cos_bench import __version__
from cos_bench.config import ExperimentConfig, config_to_dict
from cos_bench.core.runner import PREFILL_BUCKET
from cos_bench.cpuinfo import KERNEL_FLAGS, cpu_generation, cpu_model, kernel_isa
from cos_bench.engine import ENGINE_HOW, Engine, resolve_engine
from cos_bench.errors import CosBenchError
from cos_bench.storage import ResultsStore, read_manifest
from cos_bench.tasks.base import PROMPT_FORMAT_VERSION, Task

# Fields that may change between a run and its resumption without mixing incomparable numbers.
# `engine` as written may change (auto vs its resolution); the resolved engine is compared on its own.
# How a sweep dispatched its cells (the executor keys) changes no number: a cell resumes under either executor
# where both give it the same hardware (`refuse_other_hardware`; a CPU cell under Ray runs cpus_per_cell threads).
RESUMABLE_CHANGES = (
    "limit", "repeats", "warmup", "methods", "arms", "tasks", "allow_code_eval", "data_dir", "engine",
    "executor", "ray_address", "gpus_per_cell", "cpus_per_cell",
)  # fmt: skip


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_generation": cpu_generation(),
        "cpu_isa": kernel_isa(),
        "torch_cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda"] = torch.version.cuda
    return info


def _timing_hardware(info: dict[str, Any], device_type: str) -> dict[str, Any]:
    """What of a manifest's `hardware` sets the speed of a run's forwards on `device_type`, hence the ratios
    between its methods. On a CPU: the CPU (its model name, and the instruction sets that pick torch's
    matmul kernels: one name covers CPUs with and without AVX-512), its generation (family and model
    numbers: one name and one set of flags covered a Zen 4 and a Zen 5) and its threads. On a GPU: the kinds of GPU (not their count:
    a cell given one GPU of eight times alike on each) and the CPU that launches their work; CPU threads
    barely touch a GPU run, and a Ray cell runs `cpus_per_cell` of them where a local run uses every core.
    A field the manifest did not record (cpu_model, cpu_isa, cpu_generation before they were added) is left out of the comparison."""
    fields: dict[str, Any] = {"CPU": info.get("cpu_model")}
    if device_type == "cpu":
        isa = info.get("cpu_isa")
        fields |= {
            "CPU generation": info.get("cpu_generation"),
            "instruction sets": None if isa is None else str(isa) or "none of " + "/".join(KERNEL_FLAGS),
            "torch kernels": info.get("torch_cpu_kernels"),
            "CPUs": info.get("cpu_count"),
            "torch threads": info.get("torch_threads"),
        }
    elif device_type == "cuda":
        fields["GPUs"] = _gpu_kinds(info.get("cuda_devices"))
    return {name: value for name, value in fields.items() if value is not None}


def _gpu_kinds(devices: Any) -> str:
    """The kinds of GPU a manifest lists, "none" for none; a hand-edited value that is not a list is compared as written."""
    if not devices:
        return "none"
    return ", ".join(sorted({str(device) for device in devices})) if isinstance(devices, list) else str(devices)


def refuse_other_hardware(out_dir: Path, device: torch.device) -> None:
    """CosBenchError if the folder's run was timed on hardware that differs from this machine's where it
    sets the speed of forwards on `device`: a resume there would average two machines' speedups into one
    group. Called only when decodes remain, so a finished folder can still be reopened anywhere."""
    if not (out_dir / "manifest.json").exists():
        return
    written = read_manifest(out_dir).get("hardware")
    if not written or not isinstance(written, dict):
        return  # written without a hardware record (test fixtures), or a hand-edited one: nothing to compare
    before, now = _timing_hardware(written, device.type), _timing_hardware(hardware(), device.type)
    changed = [f"{name} {before[name]} -> {now.get(name)}" for name in before if before[name] != now.get(name)]
    if changed:
        raise CosBenchError(
            f"{out_dir} was timed on other hardware ({'; '.join(changed)}), and resuming here would mix two machines' "
            "timings in one run; resume it on the hardware that started it, or pass --out with a new folder"
        )


def node() -> dict[str, Any]:
    """The machine this run executes on: its host name, and its Ray node id when the process belongs to a
    Ray cluster (a `sweep --executor ray` worker); None otherwise, so both executors' manifests have the same keys."""
    ray = sys.modules.get("ray")  # imported only by the Ray executor: a local run never loads it
    ray_node = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None
    return {"host": socket.gethostname(), "ray_node_id": ray_node}


def versions() -> dict[str, str]:
    import datasets
    import transformers

    return {
        "cos_bench": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }


# Config keys added after results were first written, with the value those results were made with.
ADDED_KEYS: dict[str, Any] = {"draft": {"policy": "fixed"}}


def comparable(config: dict) -> dict:
    return {k: v for k, v in {**ADDED_KEYS, **config}.items() if k not in RESUMABLE_CHANGES}


def open_results(cfg: ExperimentConfig, out_dir: Path) -> ResultsStore:
    """The results folder for this config: new, or an earlier run of the same experiment to resume."""
    config = config_to_dict(cfg)
    if (out_dir / "manifest.json").exists():
        written = read_manifest(out_dir)
        previous = written.get("config", {})
        earlier_engine = written.get("engine", {}).get("engine", "eager")  # folders from before engines were eager
        engine = resolve_engine(cfg.engine, cfg.device)
        if earlier_engine != engine:
            raise CosBenchError(
                f"{out_dir} holds results of the {earlier_engine} engine and this run would use the {engine} engine; "
                f"pass --engine {earlier_engine} to resume it, or --out with a new folder"
            )
        earlier_prompts = written.get("prompt_format_version")
        if earlier_prompts is not None and earlier_prompts != PROMPT_FORMAT_VERSION:
            # Same config, different prompts (e.g. MMLU's reply now opens with the letter): records would not compare.
            raise CosBenchError(
                f"{out_dir} holds results made with prompt format {earlier_prompts} and this version writes {PROMPT_FORMAT_VERSION}; "
                "pass --out with a new folder (or run the cos-bench version that wrote it to resume)"
            )
        if comparable(previous) != comparable(config):
            changed = sorted(k for k in set(previous) | set(config) if k not in RESUMABLE_CHANGES and previous.get(k) != config.get(k))
            raise CosBenchError(
                f"{out_dir} holds results of a different configuration (changed: {', '.join(changed)}); "
                "pass --out with a new folder, or restore those settings to resume"
            )
    return ResultsStore(out_dir)


def build_manifest(
    cfg: ExperimentConfig, engine: Engine, chat: bool, calibration: dict, tasks: Sequence[Task], compile_seconds: dict[str, float]
) -> dict:
    return {
        "config": config_to_dict(cfg),
        "engine": {
            "requested": cfg.engine,
            "engine": engine.kind,
            "graph_lengths": list(engine.graph_lengths),
            "prefill_bucket": PREFILL_BUCKET if engine.kind == "compiled" else None,
            "cache_capacity": engine.capacity,
            "compile_seconds": compile_seconds,
            "how": ENGINE_HOW,
        },
        "versions": versions(),
        "hardware": hardware(),
        "node": node(),
        "git_revision": git_revision(),
        "models": [
            {
                "name": m.name,
                "source": dataclasses.asdict(m.source),
                "dtype": str(m.dtype),
                "device": str(m.device),
                "parameters": sum(p.numel() for p in m.model.parameters()),
            }
            for m in engine.models
        ],
        "vocab_size": engine.vocab_size,
        "chat": chat,
        "prompt_format_version": PROMPT_FORMAT_VERSION,
        "prompt_formats": {task.name: task.prompt_format(chat) for task in tasks},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "calibration": calibration,
    }


def with_history(out_dir: Path, current: dict) -> dict:
    """Keep what earlier invocations of a resumed run recorded: their records were made with
    their code revision, versions and calibration, not this one's."""
    if not (out_dir / "manifest.json").exists():
        return current
    previous = read_manifest(out_dir)
    earlier = {key: previous.get(key) for key in ("created", "git_revision", "versions", "hardware", "node", "engine", "calibration")}
    return {**current, "history": [*previous.get("history", []), earlier]}
