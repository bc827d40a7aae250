"""The task interface: load examples, build prompts, score completions.

A task knows nothing of models beyond a tokenizer's chat template: the caller
decodes each prompt (stopping at `stop_strings_for(chat)`), passes the text through
`completion_for_scoring`, and hands the results to `score_many`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cos_bench.errors import CosBenchError
from cos_bench.tasks.data import DataSource

# Bump whenever any prompt text, few-shot choice or stop string changes, so that numbers
# from different prompt formats are never mixed silently. It goes into every result.
PROMPT_FORMAT_VERSION = "2026.12-1"


@dataclass(frozen=True)
class Example:
    """One evaluation item: its dataset row and, for base-model prompts, the few-shot exemplars."""

    task: str
    example_id: str
    row: Mapping[str, Any]
    fewshot: tuple[Mapping[str, Any], ...] = ()  # chosen at load time, so build_prompt is pure


@dataclass(frozen=True)
class Score:
    """The outcome for one completion.

    verdict: "correct" | "wrong" | "no answer" (GSM8K, MMLU); "passed" | "failed" | "timed out" |
    "crashed" (HumanEval); "not evaluated" (code execution not allowed). correct is None only
    when not evaluated; "no answer" counts as not correct. answered: whether the completion states
    its answer in the form the task asks for (GSM8K: an explicit final answer, not just some number;
    MMLU: a letter), so a token budget that cut it off shows; None where a task has no such test
    (HumanEval) and in records from before it was kept.
    """

    correct: bool | None
    extracted: str | None
    verdict: str
    detail: str
    answered: bool | None = None


class Task(ABC):
    name: str
    stop_strings: tuple[str, ...]  # for plain (base-model) prompts
    chat_stop_strings: tuple[str, ...] = ()  # for chat prompts: none that could cut a reply short
    # The token budget that reaches the answer (measured per task, see each task's module); a
    # config's `max_new_tokens` overrides it. A decode cut before its answer scores "no answer".
    default_max_new_tokens: int

    def stop_strings_for(self, chat: bool) -> tuple[str, ...]:
        return self.chat_stop_strings if chat else self.stop_strings

    def prompt_format(self, chat: bool) -> str:
        """The exact prompt format, for results: version, task and prompt kind."""
        return f"{PROMPT_FORMAT_VERSION}/{self.name}/{'chat' if chat else 'base'}"

    @abstractmethod
    def load(
        self,
        source: DataSource,
        limit: int | None,
        offset: int = 0,
        seed: int | None = None,
        subjects: Sequence[str] | None = None,
    ) -> list[Example]:
        """A deterministic subset: file order, or shuffled by seed; then offset..offset+limit.

        subjects filters MMLU; the other tasks have none and ignore it, so one run can mix tasks.
        """

    @abstractmethod
    def build_prompt(self, example: Example, tokenizer: Any, chat: bool) -> str:
        """The full prompt text; chat prompts go through the tokenizer's chat template."""

    @abstractmethod
    def completion_for_scoring(self, example: Example, generated_text: str) -> str:
        """The part of the generated text that gets scored."""

    @abstractmethod
    def score_many(self, examples: Sequence[Example], completions: Sequence[str], allow_code_eval: bool = False) -> list[Score]:
        """One Score per (example, completion) pair."""


def chat_prompt(tokenizer: Any, user_message: str) -> str:
    """The user turn rendered by the model's own chat template, ready for the assistant's reply."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise CosBenchError(
            "this model's tokenizer has no chat template: turn chat prompts off (base-model "
            "prompts) or use an instruct model that ships one"
        )
    messages = [{"role": "user", "content": user_message}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """Text up to the earliest stop string (the decoder may have kept the stop string itself)."""
    positions = [text.find(stop) for stop in stop_strings if stop and stop in text]
    return text[: min(positions)] if positions else text


def check_lengths(examples: Sequence[Example], completions: Sequence[str]) -> None:
    if len(examples) != len(completions):
        raise ValueError(f"{len(examples)} examples but {len(completions)} completions")
