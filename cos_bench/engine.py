"""What a decode needs: the engine (loaded models, a runner each), the rule, settings, stop rule and prompts.

`decode_one` runs one registered method (`cos_bench.methods`) on one prompt; it knows
nothing of jobs, timing or storage (`run.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console

from cos_bench.config import Combination, ExperimentConfig
from cos_bench.core import DecodeResult, DecodeSettings, HFRunner, ModelRunner, StopRule
from cos_bench.core.runner import StaticRunner, graph_lengths, static_capacity
from cos_bench.errors import CosBenchError
from cos_bench.methods import DecodeContext, get_method
from cos_bench.models import MULTI_GPU, LoadedModel, load_model, resolve_device, shared_vocab_size
from cos_bench.tasks.base import Example, Task

ENGINE_HOW = (
    "eager: one Hugging Face forward per call with a DynamicCache; compiled: a StaticCache sized once and "
    "the forward compiled by torch.compile (CUDA graphs on CUDA), every graph length compiled and recorded "
    "before any clock is read; compile_seconds is that untimed wall time"
)


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
    max_block = sum(cfg.longest_drafts) + 1  # Σγ under a fixed draft policy; an adaptive one may draft up to its caps
    engine.capacity = static_capacity(prompt_lengths, cfg.longest_budget, max_block)
    engine.runners = []
    for spec, loaded in zip(cfg.models, engine.models):
        key = f"runner|{_model_key(cfg, spec.source)}|{engine.capacity}|{max_block}"
        if key not in cache:
            cache[key] = StaticRunner(loaded.name, loaded.model, engine.vocab_size, engine.capacity, max_block, compiled=True)
        runner = cache[key]
        runner.name = loaded.name
        engine.runners.append(runner)
    engine.graph_lengths = graph_lengths(prompt_lengths, max_block)
    console.print(f"compiling and recording {len(engine.graph_lengths)} fed lengths per model (untimed)")
    return {runner.name: _warm_up_or_explain(runner, engine.graph_lengths) for runner in engine.runners}


def _warm_up_or_explain(runner: StaticRunner, lengths: Sequence[int]) -> float:
    """Compile and record; a model whose forward torch.compile cannot handle (a custom architecture,
    an unsupported op, an old torch) is one line naming the way out, not a compiler traceback."""
    try:
        return runner.warm_up(lengths)
    except (CosBenchError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 — torch.compile raises many types; each ends the same way
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CosBenchError(
            f"the compiled engine could not compile or record {runner.name} ({type(exc).__name__}: {detail}); rerun with --engine eager"
        ) from None


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


def settings_for(cfg: ExperimentConfig, combination: Combination) -> DecodeSettings:
    return DecodeSettings(combination.build(cfg.model_names), cfg.temperature, cfg.gammas, cfg.proposer_index)


def stop_for(task: Task, engine: Engine, chat: bool, max_new_tokens: int) -> StopRule:
    tokenizer = engine.tokenizer
    return StopRule(
        max_new_tokens=max_new_tokens,
        eos_token_ids=engine.eos_ids(),
        stop_strings=task.stop_strings_for(chat),
        decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
    )


def decode_one(engine: Engine, method: str, prompt_ids: torch.Tensor, settings: DecodeSettings, stop: StopRule, seed: int) -> DecodeResult:
    """One decode of `prompt_ids` ([P]) by the registered `method`, seeded with `seed`."""
    generator = torch.Generator(device=engine.device).manual_seed(seed) if settings.temperature > 0 else None
    context = DecodeContext(runners=engine.runners, models=engine.models, seed=seed, generator=generator)
    return get_method(method)(context, prompt_ids, settings, stop)
