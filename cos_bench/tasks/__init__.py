"""Evaluation tasks: HumanEval, GSM8K and MMLU behind one small interface (see base.py)."""

from __future__ import annotations

from cos_bench.errors import CosBenchError
from cos_bench.tasks.base import PROMPT_FORMAT_VERSION, Example, Score, Task
from cos_bench.tasks.data import DATA_DIR_ENV, DataSource, resolve_data_source
from cos_bench.tasks.gsm8k import GSM8K
from cos_bench.tasks.humaneval import HumanEval
from cos_bench.tasks.mmlu import MMLU

# The task registry: a new task is one module plus one entry here (configs validate against it).
TASKS: dict[str, type[Task]] = {"humaneval": HumanEval, "gsm8k": GSM8K, "mmlu": MMLU}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str) -> Task:
    """A fresh task object by name (case-insensitive)."""
    task_class = TASKS.get(name.strip().lower())
    if task_class is None:
        raise CosBenchError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return task_class()


__all__ = [
    "DATA_DIR_ENV",
    "PROMPT_FORMAT_VERSION",
    "TASKS",
    "TASK_NAMES",
    "DataSource",
    "Example",
    "Score",
    "Task",
    "get_task",
    "resolve_data_source",
]
