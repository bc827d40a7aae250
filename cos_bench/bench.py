"""`cos-bench run` and `sweep`: every method on the same prompts, fairly timed, resumably stored.

For each example, every (combination setting, method) decodes the same
prompt with the same limits, one after another (interleaved, so drift hits
every method alike). Each finished decode is appended to records.jsonl at
once; rerunning the same command skips what is there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cos_bench import __version__
from cos_bench.config import Combination, ExperimentConfig, config_to_dict, sweep_cells
from cos_bench.core import CORE_METHODS, Contrastive, DecodeResult, DecodeSettings, HFRunner, ModelRunner, StopRule, WeightedEnsemble
from cos_bench.core.combine import CombinationRule
from cos_bench.core.runner import PREFILL_BUCKET, StaticRunner
from cos_bench.errors import CosBenchError
from cos_bench.metrics import load_records, summarize
from cos_bench.models import MULTI_GPU, LoadedModel, load_model, resolve_device, shared_vocab_size
from cos_bench.record import Calibration, RunRecord, Timing
from cos_bench.report import ReportPaths, plot_sweep, render_console_table, write_summary_report
from cos_bench.storage import ResultsStore, exclusive_writer, read_manifest, record_key, write_manifest
from cos_bench.tasks import get_task
from cos_bench.tasks.base import PROMPT_FORMAT_VERSION, Example, Task
from cos_bench.tasks.data import resolve_data_source
from cos_bench.timing import C_HOW, PASS_HOW, cost_ratio, pass_seconds, pass_tokens, step_seconds, timed

# Fields that may change between a run and its resumption without mixing incomparable numbers.
# `engine` as written may change (auto vs its resolution); the resolved engine is compared on its own.
RESUMABLE_CHANGES = ("limit", "repeats", "warmup", "methods", "tasks", "allow_code_eval", "data_dir", "engine")
WARMUP_TOKENS = 8  # enough to run every code path (drafting, verification, rollback) once


# --- building blocks --------------------------------------------------------------------------


def build_rule(combination: Combination, model_names: Sequence[str]) -> CombinationRule:
    if combination.rule == "we":
        return WeightedEnsemble(combination.weights)
    return Contrastive(
        combination.mu,
        expert_index=model_names.index(combination.expert),
        amateur_index=model_names.index(combination.amateur),
        plausibility_alpha=combination.plausibility_alpha,
    )


ENGINE_HOW = (
    "eager: one Hugging Face forward per call with a DynamicCache; compiled: a StaticCache sized once and "
    "the forward compiled by torch.compile (CUDA graphs on CUDA), every graph length compiled and recorded "
    "before any clock is read; compile_seconds is that untimed wall time"
)
RUNNER_CAPACITY_STEP = 256  # cache sizes are rounded up, so sweep cells with similar prompts share compiled runners


def resolve_engine(choice: str, device_choice: str) -> str:
    """auto = compiled on one CUDA device, eager elsewhere.

    On a GPU eager batch-1 forwards are bound by the host launching kernels (issue 12:
    0.5B, 1.5B and 7B all stepped in 29–38 ms on an H200), so only compiled steps
    measure the models. On CPUs eager is kept: on the 2-core AMD EPYC the compiled engine
    was 1.3x slower per token on the offline pair, after 160 s of compiling
    (results/cpu-engine-ab/). A model spread over several GPUs
    (multi-gpu) runs eagerly: CUDA graphs cannot follow accelerate's device hops.
    """
    device = resolve_device(device_choice)
    multi_gpu = device_choice.strip().lower() in MULTI_GPU
    if choice == "auto":
        return "compiled" if device.type == "cuda" and not multi_gpu else "eager"
    if choice == "compiled" and multi_gpu:
        raise CosBenchError("--engine compiled cannot span several GPUs (multi-gpu); use --engine eager or one --device cuda:N")
    return choice


@dataclass
class Engine:
    """The loaded models of one experiment and a runner (own KV cache) for each."""

    models: list[LoadedModel]
    vocab_size: int
    kind: str  # the resolved engine: eager | compiled
    runners: list[ModelRunner] = field(default_factory=list)
    graph_lengths: tuple[int, ...] = ()  # fed lengths compiled and recorded before timing (compiled only)
    capacity: int | None = None  # static cache positions per model (compiled only)

    @property
    def device(self) -> torch.device:
        return self.models[0].device

    @property
    def tokenizer(self):
        return self.models[0].tokenizer

    def eos_ids(self) -> frozenset[int]:
        ids = {self.tokenizer.eos_token_id}
        for loaded in self.models:
            configured = getattr(loaded.model.generation_config, "eos_token_id", None)
            ids.update(configured if isinstance(configured, list) else [configured])
        return frozenset(i for i in ids if i is not None)


def load_engine(cfg: ExperimentConfig, console: Console, cache: dict[str, Any] | None = None) -> Engine:
    """Load every model of the config (reusing `cache` across sweep cells) and check their tokenizers agree.

    Runners come later (`build_runners`): a static cache is sized for the prompts.
    """
    cache = {} if cache is None else cache
    models = []
    for spec in cfg.models:
        key = _model_key(cfg, spec.source)
        if key not in cache:
            console.print(f"loading [bold]{spec.name}[/] from {spec.source}")
            cache[key] = load_model(spec.source, name=spec.name, device=cfg.device, dtype=cfg.dtype)
        models.append(dataclasses.replace(cache[key], name=spec.name))
    return Engine(models, shared_vocab_size(models), resolve_engine(cfg.engine, cfg.device))


def _model_key(cfg: ExperimentConfig, source: str) -> str:
    return f"{source}|{cfg.device}|{cfg.dtype}"


def build_runners(
    cfg: ExperimentConfig, engine: Engine, prompt_lengths: Sequence[int], console: Console, cache: dict[str, Any]
) -> dict[str, float]:
    """Give every model its runner; for the compiled engine, compile and record every fed length
    the methods can use before any clock is read. Returns the seconds that took per model.

    After a prefill, a feed is at most Σγ + 1 tokens: every model may have drafted its γ
    before one verifies, plus the correction no model has fed yet.
    """
    if engine.kind == "eager":
        engine.runners = [HFRunner(m.name, m.model, engine.vocab_size) for m in engine.models]
        return {}
    max_block = sum(cfg.gammas) + 1
    longest = max(prompt_lengths, default=1)
    needed = _round_up(longest + max_block, PREFILL_BUCKET)  # the longest prefill, padded
    engine.capacity = _round_up(needed + cfg.max_new_tokens, RUNNER_CAPACITY_STEP)
    engine.runners = []
    for spec, loaded in zip(cfg.models, engine.models):
        key = f"runner|{_model_key(cfg, spec.source)}|{engine.capacity}|{max_block}"
        if key not in cache:
            cache[key] = StaticRunner(loaded.name, loaded.model, engine.vocab_size, engine.capacity, max_block, compiled=True)
        runner = cache[key]
        runner.name = loaded.name
        engine.runners.append(runner)
    first = engine.runners[0]
    prefills = {first.padded_length(length + extra) for length in prompt_lengths for extra in range(max_block + 1)}
    engine.graph_lengths = tuple(sorted(set(range(1, max_block + 1)) | prefills))
    console.print(f"compiling and recording {len(engine.graph_lengths)} fed lengths per model (untimed)")
    return {runner.name: runner.warm_up(engine.graph_lengths) for runner in engine.runners}


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def use_chat(cfg: ExperimentConfig, tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None)) if cfg.chat is None else cfg.chat


@dataclass(frozen=True)
class Prompt:
    example: Example
    index: int
    ids: torch.Tensor  # [P] on the models' device


def build_prompts(task: Task, examples: Sequence[Example], engine: Engine, chat: bool) -> list[Prompt]:
    prompts = []
    for index, example in enumerate(examples):
        text = task.build_prompt(example, engine.tokenizer, chat)
        # A chat template already spells out its special tokens; plain prompts get the tokenizer's own (e.g. BOS).
        ids = engine.tokenizer(text, add_special_tokens=not chat, return_tensors="pt").input_ids[0]
        prompts.append(Prompt(example, index, ids.to(engine.device)))
    return prompts


def decode_one(engine: Engine, method: str, prompt_ids: torch.Tensor, settings: DecodeSettings, stop: StopRule, seed: int) -> DecodeResult:
    generator = torch.Generator(device=engine.device).manual_seed(seed) if settings.temperature > 0 else None
    if method in CORE_METHODS:
        return CORE_METHODS[method](engine.runners, prompt_ids, settings, stop, generator)
    return _hf_ensemble(engine, prompt_ids, settings, stop, seed)


def _hf_ensemble(engine: Engine, prompt_ids: torch.Tensor, settings: DecodeSettings, stop: StopRule, seed: int) -> DecodeResult:
    from cos_bench.methods.hf_ensemble import hf_ensemble_decode

    drafter = settings.proposer
    (target,) = [i for i in range(len(engine.models)) if i != drafter]
    return hf_ensemble_decode(
        engine.models[target].model,
        engine.models[drafter].model,
        prompt_ids,
        drafter_weight=settings.rule.weights[drafter],
        temperature=settings.temperature,
        max_new_tokens=stop.max_new_tokens,
        eos_token_ids=sorted(stop.eos_token_ids),
        gamma=settings.gammas[drafter],
        seed=seed,
        target_name=engine.models[target].name,
        drafter_name=engine.models[drafter].name,
        stop=stop.reason,  # end where every method ends, cut at that exact token
    )


# --- the manifest -----------------------------------------------------------------------------


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
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda"] = torch.version.cuda
    return info


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


def comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}


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
        if comparable(previous) != comparable(config):
            changed = sorted(k for k in set(previous) | set(config) if k not in RESUMABLE_CHANGES and previous.get(k) != config.get(k))
            raise CosBenchError(
                f"{out_dir} holds results of a different configuration (changed: {', '.join(changed)}); "
                "pass --out with a new folder, or restore those settings to resume"
            )
    return ResultsStore(out_dir)


def manifest(
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
    earlier = {key: previous.get(key) for key in ("created", "git_revision", "versions", "hardware", "engine", "calibration")}
    return {**current, "history": [*previous.get("history", []), earlier]}


# --- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    task: Task
    prompt: Prompt
    combination: Combination
    method: str
    repeat: int

    @property
    def key(self) -> str:
        return record_key(self.task.name, self.prompt.example.example_id, self.combination.label, self.method, self.repeat)


def example_seed(cfg: ExperimentConfig, task: str, index: int, repeat: int) -> int:
    """One seed per (example, repeat), the same for every method, stable across resumptions."""
    digest = hashlib.sha256(f"{cfg.seed}|{task}|{index}|{repeat}".encode()).digest()
    return int.from_bytes(digest[:6], "little")


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: Path,
    console: Console | None = None,
    model_cache: dict[str, Any] | None = None,
    sweep_values: dict[str, Any] | None = None,
    show_summary: bool = True,
) -> Path:
    """Run (or resume) one experiment into `out_dir`; returns the folder.

    The folder is locked first (one writer at a time) and stays locked until the summary is written.
    """
    console = console or Console(stderr=True)
    with exclusive_writer(out_dir):
        store = open_results(cfg, out_dir)
        done = store.done_keys()
        source = resolve_data_source(cfg.data_dir)
        tasks = [get_task(name) for name in cfg.tasks]
        examples = {task.name: task.load(source, cfg.limit, cfg.offset, cfg.seed, cfg.subjects) for task in tasks}
        model_cache = {} if model_cache is None else model_cache  # loaded models and built runners, shared by sweep cells
        engine = load_engine(cfg, console, model_cache)
        chat = use_chat(cfg, engine.tokenizer)
        prompts = {task.name: build_prompts(task, examples[task.name], engine, chat) for task in tasks}
        lengths = [int(p.ids.shape[0]) for task in tasks for p in prompts[task.name]]
        compile_seconds = build_runners(cfg, engine, lengths, console, model_cache)

        calibration = calibrate(cfg, engine, [p.ids for task in tasks for p in prompts[task.name]][:2], console)
        write_manifest(out_dir, with_history(out_dir, manifest(cfg, engine, chat, calibration, tasks, compile_seconds)))

        planned = plan(cfg, tasks, prompts)
        jobs = [job for job in planned if job.key not in done]
        skipped = len(planned) - len(jobs)
        if skipped:
            console.print(f"resuming {out_dir}: {skipped} records already there are kept and skipped")
        if jobs:
            warm_up(cfg, engine, jobs, chat)
            execute(cfg, engine, jobs, chat, store, calibration, console, sweep_values or {})
        if show_summary:
            show(out_dir, console)
    return out_dir


def plan(cfg: ExperimentConfig, tasks: Sequence[Task], prompts: dict[str, list[Prompt]]) -> list[Job]:
    """Examples outermost, methods innermost: every method of an example runs back to back."""
    return [
        Job(task, prompt, combination, method, repeat)
        for task in tasks
        for prompt in prompts[task.name]
        for repeat in range(cfg.repeats)
        for combination in cfg.combinations
        for method in cfg.methods
        if method != "hf-ensemble" or combination.rule == "we"  # the peer baseline is WE-only
    ]


def settings_for(cfg: ExperimentConfig, combination: Combination) -> DecodeSettings:
    return DecodeSettings(build_rule(combination, cfg.model_names), cfg.temperature, cfg.gammas, cfg.proposer_index)


def stop_for(task: Task, engine: Engine, chat: bool, max_new_tokens: int) -> StopRule:
    tokenizer = engine.tokenizer
    return StopRule(
        max_new_tokens=max_new_tokens,
        eos_token_ids=engine.eos_ids(),
        stop_strings=task.stop_strings_for(chat),
        decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
    )


def calibrate(cfg: ExperimentConfig, engine: Engine, prompt_ids: Sequence[torch.Tensor], console: Console) -> dict:
    console.print("measuring each model's single-step and verification-pass forward times (for c and the pass cost)")
    step = {runner.name: step_seconds(runner, prompt_ids, engine.device) for runner in engine.runners}
    tokens = pass_tokens(dict(zip(cfg.model_names, cfg.gammas)), cfg.proposer)
    passes = {runner.name: pass_seconds(runner, prompt_ids, engine.device, tokens[runner.name]) for runner in engine.runners}
    return {
        "step_seconds": step,
        "c": cost_ratio(step, cfg.proposer),
        "c_how": C_HOW,
        "proposer": cfg.proposer,
        "pass_tokens": tokens,
        "pass_seconds": passes,
        "pass_cost": {name: passes[name] / step[name] for name in passes},
        "pass_how": PASS_HOW,
    }


def warm_up(cfg: ExperimentConfig, engine: Engine, jobs: Sequence[Job], chat: bool) -> None:
    """Untimed decodes of every (setting, method) before any clock is read."""
    first = jobs[0]
    stop = stop_for(first.task, engine, chat, min(cfg.max_new_tokens, WARMUP_TOKENS))
    for job in {(j.combination, j.method): j for j in jobs}.values():
        for _ in range(cfg.warmup):
            decode_one(engine, job.method, first.prompt.ids, settings_for(cfg, job.combination), stop, seed=0)


def execute(
    cfg: ExperimentConfig,
    engine: Engine,
    jobs: Sequence[Job],
    chat: bool,
    store: ResultsStore,
    calibration: dict,
    console: Console,
    sweep_values: dict[str, Any],
) -> None:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[live]}"),
    )
    live = LiveRates()
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(cfg.name, total=len(jobs), live="")
        for job in jobs:
            record = run_job(cfg, engine, job, chat, calibration, sweep_values)
            store.append(record)
            live.add(record)
            progress.update(bar, advance=1, live=live.text())


def run_job(cfg: ExperimentConfig, engine: Engine, job: Job, chat: bool, calibration: dict, sweep_values: dict) -> RunRecord:
    settings = settings_for(cfg, job.combination)
    stop = stop_for(job.task, engine, chat, cfg.max_new_tokens)
    seed = example_seed(cfg, job.task.name, job.prompt.index, job.repeat)
    result, total_s = timed(lambda: decode_one(engine, job.method, job.prompt.ids, settings, stop, seed), engine.device)
    # One total per decode: `timed` synchronises the device before both clock reads, while the
    # loop's own clock (`total_seconds`) may stop with kernels still queued on an asynchronous
    # device, so the synchronised wall time is the one recorded, in the timing and the accounting alike.
    result = dataclasses.replace(result, total_seconds=total_s)
    text = engine.tokenizer.decode(list(result.token_ids), skip_special_tokens=True)
    completion = job.task.completion_for_scoring(job.prompt.example, text)
    (score,) = job.task.score_many([job.prompt.example], [completion], allow_code_eval=cfg.allow_code_eval)
    return RunRecord(
        key=job.key,
        run_label=cfg.name,
        task=job.task.name,
        example_id=job.prompt.example.example_id,
        setting=job.combination.label,
        rule=job.combination.rule,
        method=job.method,
        repeat=job.repeat,
        seed=seed,
        temperature=cfg.temperature,
        n_models=len(cfg.models),
        gammas=dict(cfg.gamma),
        proposer=cfg.proposer,
        paper_setting=cfg.paper_setting,
        prompt_tokens=int(job.prompt.ids.shape[0]),
        text=text,
        timing=Timing.of(total_s, result.first_token_seconds),
        accounting=result,
        score=score,
        calibration=Calibration(
            step_seconds=calibration["step_seconds"],
            c=calibration["c"],
            pass_tokens=calibration["pass_tokens"],
            pass_cost=calibration["pass_cost"],
        ),
        sweep=dict(sweep_values),
    )


class LiveRates:
    """Running tokens/s and acceptance per method, for the progress bar."""

    def __init__(self) -> None:
        self.tokens: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.accepted: dict[str, int] = {}
        self.drafted: dict[str, int] = {}

    def add(self, record: RunRecord) -> None:
        method = record.method
        self.tokens[method] = self.tokens.get(method, 0) + record.new_tokens
        self.seconds[method] = self.seconds.get(method, 0.0) + record.timing.total_s
        self.accepted[method] = self.accepted.get(method, 0) + record.accounting.accepted_tokens
        self.drafted[method] = self.drafted.get(method, 0) + record.accounting.drafted_tokens

    def text(self) -> str:
        parts = []
        for method, tokens in self.tokens.items():
            part = f"{method} {tokens / max(self.seconds[method], 1e-9):.1f} tok/s"
            if self.drafted[method]:
                part += f" acc {self.accepted[method] / self.drafted[method]:.2f}"
            parts.append(part)
        return " | ".join(parts)


def show(folder: Path, console: Console) -> None:
    summary = summarize(load_records([folder]))
    console.print(render_console_table(summary))
    paths = write_summary_report(summary, folder / "report")
    console.print(f"results: {folder}/records.jsonl; report: {paths.summary_md}")


# --- sweeps -----------------------------------------------------------------------------------


def parse_cell_label(label: str) -> dict[str, Any]:
    """'lambda=0.5,gamma.small=3,proposer=small' -> {'lambda': 0.5, 'gamma.small': 3, 'proposer': 'small'}."""
    values: dict[str, Any] = {}
    for part in label.split(","):
        key, _, raw = part.partition("=")
        try:
            number = float(raw)
            values[key] = int(number) if number.is_integer() and "." not in raw else number
        except ValueError:
            values[key] = raw
    return values


def cell_folder_name(label: str) -> str:
    return label.replace("=", "-").replace(",", "_")


def run_sweep(cfg: ExperimentConfig, out_dir: Path, console: Console | None = None) -> list[Path]:
    """Every cell of the grid into its own folder under `out_dir`; then plots of speedup against each swept parameter."""
    console = console or Console(stderr=True)
    cells = sweep_cells(cfg)
    # The sweep folder has one writer too: a second sweep would rewrite sweep.json and the report.
    with exclusive_writer(out_dir):
        (out_dir / "sweep.json").write_text(json.dumps({"config": config_to_dict(cfg), "cells": [label for label, _ in cells]}, indent=2))
        cache: dict[str, Any] = {}
        folders = []
        for number, (label, cell) in enumerate(cells, 1):
            console.rule(f"cell {number}/{len(cells)}: {label}")
            folder = out_dir / cell_folder_name(label)
            folders.append(run_experiment(cell, folder, console, cache, parse_cell_label(label), show_summary=False))
        paths = report_folders([out_dir], out_dir / "report", console)
    console.print(f"sweep report: {paths.summary_md}")
    return folders


def report_folders(folders: Sequence[Path], out_dir: Path, console: Console) -> ReportPaths:
    """Tables and plots for results or sweep folders (sweep plots for each parameter a sweep varies)."""
    cells = [cell for folder in folders for cell in sweep_folders(folder)]
    summary = summarize(load_records(cells))
    paths = write_summary_report(summary, out_dir)
    for param in sorted({p for folder in folders if (folder / "sweep.json").exists() for p in swept_parameters(folder)}):
        plot_sweep(summary, param, out_dir / f"sweep_{param}.png")
    console.print(render_console_table(summary))
    return paths


def swept_parameters(sweep_dir: Path) -> list[str]:
    """The parameters a sweep folder varies, from the cell labels in its sweep.json."""
    cells = json.loads((sweep_dir / "sweep.json").read_text())["cells"]
    return sorted({key for label in cells for key in parse_cell_label(label)})


def sweep_folders(folder: Path) -> Iterator[Path]:
    """A results folder, or the cell folders of a sweep folder."""
    if (folder / "manifest.json").exists():
        yield folder
        return
    cells = sorted(p for p in folder.iterdir() if (p / "manifest.json").exists()) if folder.is_dir() else []
    if not cells:
        raise CosBenchError(f"{folder} is not a cos-bench results or sweep folder: pass a folder written by `cos-bench run` or `sweep`")
    yield from cells
