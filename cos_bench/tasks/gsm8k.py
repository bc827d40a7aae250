"""GSM8K: grade-school maths; the score is the final number.

Extraction, on the completion cut at the stop strings:
- strict: the last explicit final answer: `#### n`, "The (final) answer is n", or `\\boxed{n}`;
- flexible: the last number anywhere in the text.
The scored answer is the strict one when there is one, else the flexible one; the detail
gives both. Numbers are normalised before comparing: "$1,000.00" = "1000", "18." = "18",
"-5" and "−5" are negative, "3.50" = "3.5".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from cos_bench.tasks.base import Example, Score, Task, chat_prompt, check_lengths, cut_at_stop
from cos_bench.tasks.data import DataSource, Split, load_rows, select_rows

TEST = Split("openai/gsm8k", "main", "test", "gsm8k_test", ("question", "answer"))
TRAIN = Split("openai/gsm8k", "main", "train", "gsm8k_train", ("question", "answer"))
NUM_SHOTS = 5  # the first five training rows, the same for every question

# A sign only where it cannot be a hyphen or a minus between two operands ("10-15").
_NUMBER = (
    r"(?:(?<![\w)])[-−]\s?)?\$?\s?(?:(?<![\w)])[-−])?"  # sign and dollar, either order
    r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?<!\d)\.\d+)"  # 1,000 | 18 | 3.5 | .5
)
_NUMBER_RE = re.compile(_NUMBER)
_STRICT_RE = re.compile(
    rf"####\s*(?P<a>{_NUMBER})"
    rf"|answer is[:\s]*\**\s*(?P<b>{_NUMBER})"
    rf"|\\boxed\{{\s*(?:\\\$|\\text\{{\$\}})?\s*(?P<c>{_NUMBER})",
    re.IGNORECASE,
)
_CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")  # GSM8K's "<<16-3-4=9>>" annotations

_CHAT_INSTRUCTION = (
    "Solve the following math problem step by step. At the end, write the final answer on its "
    'own line as "The answer is N." where N is a number.\n\n{question}'
)


def normalize_number(text: str) -> str | None:
    """Canonical form of a number as written: no $, no thousands commas, no trailing zeros."""
    negative = "-" in text or "−" in text
    digits = re.sub(r"[^\d.]", "", text).rstrip(".")
    try:
        value = Decimal(digits)
    except InvalidOperation:
        return None
    value = -value if negative else value
    return "0" if value == 0 else format(value.normalize(), "f")


def extract_strict(text: str) -> str | None:
    matches = list(_STRICT_RE.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    return normalize_number(last.group("a") or last.group("b") or last.group("c"))


def extract_flexible(text: str) -> str | None:
    numbers = _NUMBER_RE.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def gold_answer(row: dict[str, Any]) -> str | None:
    return normalize_number(row["answer"].split("####")[-1])


class GSM8K(Task):
    name = "gsm8k"
    stop_strings = ("Question:", "</s>", "<|im_end|>", "\n\n\n")
    chat_stop_strings = ()
    # Chat replies plan before they compute: greedy, the offline Qwen2.5-Coder-0.5B reached "The answer
    # is N" after 178–313 tokens (median 239) on the first 10 test questions and ended each reply by
    # itself within 318; 256 would have cut 4 of the 10. The reference solutions take 30–130 tokens for
    # those, at most 299 over the test set: 512 leaves room for the longer questions.
    default_max_new_tokens = 512

    def load(
        self,
        source: DataSource,
        limit: int | None,
        offset: int = 0,
        seed: int | None = None,
        subjects: Sequence[str] | None = None,
    ) -> list[Example]:
        rows = load_rows(source, TEST)
        shots = tuple(load_rows(source, TRAIN)[:NUM_SHOTS])
        return [Example(self.name, f"gsm8k/test/{index}", rows[index], shots) for index in select_rows(len(rows), limit, offset, seed)]

    def build_prompt(self, example: Example, tokenizer: Any, chat: bool) -> str:
        question = example.row["question"].strip()
        if chat:
            return chat_prompt(tokenizer, _CHAT_INSTRUCTION.format(question=question))
        shots = "".join(
            f"Question: {shot['question'].strip()}\nAnswer: {_CALCULATOR_NOTE.sub('', shot['answer']).strip()}\n\n"
            for shot in example.fewshot
        )
        return f"{shots}Question: {question}\nAnswer:"

    def completion_for_scoring(self, example: Example, generated_text: str) -> str:
        return cut_at_stop(generated_text, self.stop_strings).strip()

    def score_many(self, examples: Sequence[Example], completions: Sequence[str], allow_code_eval: bool = False) -> list[Score]:
        check_lengths(examples, completions)
        return [score_completion(example.row, completion) for example, completion in zip(examples, completions)]


def score_completion(row: dict[str, Any], completion: str) -> Score:
    gold = gold_answer(row)
    strict, flexible = extract_strict(completion), extract_flexible(completion)
    answer = strict if strict is not None else flexible
    detail = f"gold {gold}; strict {strict or 'none'}; flexible {flexible or 'none'}"
    if answer is None:
        return Score(False, None, "no answer", detail, answered=False)
    correct = answer == gold
    return Score(correct, answer, "correct" if correct else "wrong", detail, answered=strict is not None)
