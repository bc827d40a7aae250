"""`cos-bench run`: every method on the same prompts, fairly timed, resumably stored.

For each example, every (combination setting, method) decodes the same
prompt with the same limits, one after another (interleaved, so drift hits
every method alike). Each finished decode is appended to records.jsonl at
once; rerunning the same command skips what is there.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cos_bench.config import Arm, Combination, ExperimentConfig, WeightedEnsembleSpec
from cos_bench.core import DecodeSettings, PassCost
from cos_bench.engine import Engine, Prompt, build_prompts, build_runners, decode_one, load_engine, settings_for, stop_for, use_chat
from cos_bench.manifest import build_manifest, open_results, refuse_other_hardware, with_history
from cos_bench.methods import TWO_MODEL_WE_ONLY, hf_drafting
from cos_bench.metrics import load_records, summarize
from cos_bench.record import Calibration, RunRecord, Timing, arm_method_name
from cos_bench.report import render_headline, write_summary_report
from cos_bench.storage import ResultsStore, exclusive_writer, record_key, write_manifest
from cos_bench.tasks import get_task
from cos_bench.tasks.base import Task
from cos_bench.tasks.data import resolve_data_source
from cos_bench.timing import (
    C_HOW,
    LONG_FEED_HOW,
    ONEDNN_HOW,
    PASS_CURVE_HOW,
    PASS_HOW,
    choose_long_feed_float32,
    cost_ratio,
    curve_tokens,
    pass_tokens,
    time_forwards,
    timed,
)

WARMUP_TOKENS = 8  # enough to run every code path (drafting, verification, rollback) once
# An eager warm-up decode feeds only the start of the first prompt: it exists to run every code path
# once, and a full prefill per (setting, method) cost minutes on a CPU without fast bf16 products.
WARMUP_PROMPT_TOKENS = 32


@dataclass(frozen=True)
class Job:
    task: Task
    prompt: Prompt
    combination: Combination
    method: str
    repeat: int
    arm: Arm | None = None  # None: the run's own γ and draft policy

    @property
    def label(self) -> str:
        """The method as keys and the progress bar name it: "cos", or an arm's "cos[confidence-0.4]"."""
        return arm_method_name(self.method, "" if self.arm is None else self.arm.label)

    @property
    def key(self) -> str:
        return record_key(self.task.name, self.prompt.example.example_id, self.combination.label, self.label, self.repeat)

    def config(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """The config this job decodes under: the run's, with an arm's γ and draft policy laid over it."""
        return cfg if self.arm is None else dataclasses.replace(cfg, gamma=self.arm.gamma, draft=self.arm.draft, arms=())


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
        planned = plan(cfg, tasks, prompts)
        jobs = [job for job in planned if job.key not in done]
        if jobs:
            refuse_other_hardware(out_dir, engine.device)
        skipped = len(planned) - len(jobs)
        if skipped:
            console.print(f"resuming {out_dir}: {skipped} records already there are kept and skipped")
        # A resumed folder with nothing left to decode keeps its manifest as it was: a calibration
        # (or a compilation) no record used would only add a history entry that describes nothing.
        if jobs or not (out_dir / "manifest.json").exists():
            lengths = [int(p.ids.shape[0]) for task in tasks for p in prompts[task.name]]
            compile_seconds = build_runners(cfg, engine, lengths, console, model_cache)
            calibration = calibrate(cfg, engine, [p.ids for task in tasks for p in prompts[task.name]][:2], console)
            write_manifest(out_dir, with_history(out_dir, build_manifest(cfg, engine, chat, calibration, tasks, compile_seconds)))
        if jobs:
            warm_up(cfg, engine, jobs, chat, calibration)
            execute(cfg, engine, jobs, chat, store, calibration, console, sweep_values or {})
        if show_summary:
            show(out_dir, console)
    return out_dir


def plan(cfg: ExperimentConfig, tasks: Sequence[Task], prompts: dict[str, list[Prompt]]) -> list[Job]:
    """Examples outermost, methods innermost: every method of an example, then every arm, runs back to back."""
    return [
        job
        for task in tasks
        for prompt in prompts[task.name]
        for repeat in range(cfg.repeats)
        for combination in cfg.combinations
        for job in (
            *(Job(task, prompt, combination, method, repeat) for method in cfg.methods),
            *(Job(task, prompt, combination, arm.method, repeat, arm) for arm in cfg.arms),
        )
        if job.method not in TWO_MODEL_WE_ONLY or isinstance(combination, WeightedEnsembleSpec)  # the peer baseline is WE-only
    ]


def calibrated_engine(cfg: ExperimentConfig, task_name: str, count: int, console: Console) -> tuple[Engine, list[Prompt], dict]:
    """The config's models with their runners, the task's first `count` prompts, and a calibration on
    those prompts, made as a run makes them: for scripts that time forwards outside a run."""
    engine = load_engine(cfg, console)
    task = get_task(task_name)
    examples = task.load(resolve_data_source(cfg.data_dir), count, 0, cfg.seed, cfg.subjects)
    prompts = build_prompts(task, examples, engine, use_chat(cfg, engine.tokenizer))
    build_runners(cfg, engine, [int(p.ids.shape[0]) for p in prompts], console, {})
    return engine, prompts, calibrate(cfg, engine, [p.ids for p in prompts], console)


def calibrate(cfg: ExperimentConfig, engine: Engine, prompt_ids: Sequence[torch.Tensor], console: Console) -> dict:
    console.print("measuring each model's single-step and verification-pass forward times (for c and the pass cost)")
    eager = engine.kind == "eager"  # a compiled forward is inductor's code: no library to choose
    models = [m.model for m in engine.models]
    long_feed = {}
    if eager and prompt_ids:
        choices = {
            runner.name: choose_long_feed_float32(runner, model, prompt_ids[0], engine.device)
            for runner, model in zip(engine.runners, models)
        }
        long_feed = {name: choice for name, choice in choices.items() if choice}
    tokens = pass_tokens(dict(zip(cfg.model_names, cfg.gammas)), cfg.proposer)
    longest = cfg.longest_auto_drafts
    curve = curve_tokens(dict(zip(cfg.model_names, longest))) if longest else {}
    times = {
        runner.name: time_forwards(
            runner, model, prompt_ids, engine.device, tokens[runner.name], choose_onednn=eager, curve=curve.get(runner.name, ())
        )
        for runner, model in zip(engine.runners, models, strict=True)
    }
    step = {name: t.step for name, t in times.items()}
    passes = {name: t.pass_ for name, t in times.items()}
    onednn = {name: t.onednn for name, t in times.items() if t.onednn is not None}
    pass_curve = {name: {k: seconds / t.step for k, seconds in t.curve.items()} for name, t in times.items()}
    return {
        "step_seconds": step,
        "c": cost_ratio(step, cfg.proposer),
        "c_how": C_HOW,
        "proposer": cfg.proposer,
        "pass_tokens": tokens,
        "pass_seconds": passes,
        "pass_cost": {name: passes[name] / step[name] for name in passes},
        "pass_how": PASS_HOW,
        **({"pass_curve": pass_curve, "pass_curve_how": PASS_CURVE_HOW} if curve else {}),
        **({"single_token_onednn": onednn, "single_token_onednn_how": ONEDNN_HOW} if onednn else {}),
        **({"long_feed_float32": long_feed, "long_feed_float32_how": LONG_FEED_HOW} if long_feed else {}),
    }


def job_settings(cfg: ExperimentConfig, combination: Combination, calibration: dict) -> DecodeSettings:
    """A job's decode settings: the config's, its draft policy given the calibrated step times and
    verification-pass costs (`auto` uses them)."""
    steps = calibration["step_seconds"]
    passes = None  # a calibration from before pass costs were measured: auto charges the paper's one step
    if "pass_cost" in calibration:
        passes = [measured_pass_cost(calibration, name) for name in cfg.model_names]
    return dataclasses.replace(settings_for(cfg, combination), draft=cfg.draft.build([steps[name] for name in cfg.model_names], passes))


def measured_pass_cost(calibration: dict, name: str) -> PassCost:
    """Model `name`'s pass costs as calibration measured them: its verification pass, and every length
    of its curve where an `auto` policy asked for one (keys are strings once a manifest is read back)."""
    points = {int(k): float(r) for k, r in calibration.get("pass_curve", {}).get(name, {}).items()}
    points[int(calibration["pass_tokens"][name])] = float(calibration["pass_cost"][name])
    lengths = sorted(points)
    return PassCost(tuple(lengths), tuple(points[k] for k in lengths))


def warm_up(cfg: ExperimentConfig, engine: Engine, jobs: Sequence[Job], chat: bool, calibration: dict) -> None:
    """Untimed decodes of every (setting, method or arm) before any clock is read."""
    first = jobs[0]
    stop = stop_for(first.task, engine, chat, min(cfg.budget(first.task.name), WARMUP_TOKENS))
    # A compiled engine warms up on the full prompt: its recorded lengths are the prompts' own.
    ids = first.prompt.ids if engine.kind == "compiled" else first.prompt.ids[:WARMUP_PROMPT_TOKENS]
    for job in {(j.combination, j.label): j for j in jobs}.values():
        for _ in range(cfg.warmup):
            decode_one(engine, job.method, ids, job_settings(job.config(cfg), job.combination, calibration), stop, seed=0)


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
    decoded_as = job.config(cfg)
    settings = job_settings(decoded_as, job.combination, calibration)
    stop = stop_for(job.task, engine, chat, cfg.budget(job.task.name))
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
        arm="" if job.arm is None else job.arm.label,
        repeat=job.repeat,
        seed=seed,
        temperature=cfg.temperature,
        n_models=len(cfg.models),
        gammas=dict(decoded_as.gamma),
        proposer=cfg.proposer,
        draft=decoded_as.draft.label,
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
        max_new_tokens=stop.max_new_tokens,
        hf_drafting=hf_drafting(job.method, settings),
    )


class LiveRates:
    """Running tokens/s and acceptance per method, for the progress bar."""

    def __init__(self) -> None:
        self.tokens: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.accepted: dict[str, int] = {}
        self.drafted: dict[str, int] = {}

    def add(self, record: RunRecord) -> None:
        method = arm_method_name(record.method, record.arm)
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
        return escape(" | ".join(parts))  # an arm's "cos[heuristic]" is text, not a rich style tag


def show(folder: Path, console: Console) -> None:
    summary = summarize(load_records([folder]))
    console.print(render_headline(summary))
    paths = write_summary_report(summary, folder / "report")
    console.print(f"results: {folder}/records.jsonl; report: {paths.summary_md}")
