"""MMLU: four-way multiple choice over 57 subjects; the score is the chosen letter.

Base models get the original 5-shot prompt (the subject's five dev questions, each
ending "Answer: X") and answer with one letter. Instruct models get the question
alone, are asked for the letter and then an explanation, and find their reply opened
with "The correct answer is", so the letter is among its first tokens. Asked for the letter
alone, the offline Qwen2.5-Coder pair reasoned first: 78% of the committed benchmark's MMLU
decodes (48 tokens) ended before any letter; with the opened reply, the 1.5B model gave the
letter first on 20 of 20 test questions. The explanation after it is what a speed run times.
Only the reply's first paragraph is scored: the answer it opens with, not a later aside, so a
larger token budget cannot change the verdict.

Extraction rules, first match wins; letters count only in capitals (so the article
"a" is never an answer), and markdown asterisks are ignored:
1. an explicit statement, the last one in the reply: "answer is D", "Answer: C",
   "answer: (B)", "The correct answer is option A";
2. the reply, or its first line, is one letter, maybe wrapped or followed by punctuation:
   "B", "(B)", "B.", "B\nBecause ...";
3. the reply opens with a letter and a delimiter: "C. Paris", "(B) 12", "D) none", "A:", "B, Paris"
   (a colon, "option" or "choice" the reply opens with is skipped first: ": C. Paris" and "choice C."
   continue "The correct answer is").
4. the whole reply is exactly one option's text (ignoring case and a final period).
Anything else is "no answer", its own outcome (counted as not correct).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from cos_bench.errors import CosBenchError
from cos_bench.tasks.base import Example, Score, Task, chat_prompt, check_lengths
from cos_bench.tasks.data import DataSource, Split, load_rows, select_rows

FIELDS = ("question", "subject", "choices", "answer")
TEST = Split("cais/mmlu", "all", "test", "mmlu_test", FIELDS)
DEV = Split("cais/mmlu", "all", "dev", "mmlu_dev", FIELDS)
LETTERS = "ABCD"

_STATED = re.compile(r"answer(?:\s+is)?\s*[:：]?\s*(?:option\s+)?\(?([A-D])\)?(?![\w])", re.IGNORECASE)
_ALONE = re.compile(r"^\(?([A-D])\)?[.):]?$")
_CONTINUATION = re.compile(r"^(?:option|choice)\s+(?=\(?[A-D]\b)", re.IGNORECASE)
_OPENING = re.compile(r"^(?:\(([A-D])\)|([A-D])[.):,])(?:\s|$)")

_CHAT_INSTRUCTION = (
    "The following is a multiple choice question about {subject}. Answer with the letter "
    "of the correct option (A, B, C or D), then explain.\n\n{question}"
)
_RESPONSE_PREFIX = "The correct answer is"  # opens the assistant's reply: the letter comes next
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def extract_letter(reply: str, choices: Sequence[str] = ()) -> str | None:
    """The chosen letter by the rules in the module docstring, or None for no answer."""
    # A chat reply continues "The correct answer is", so it may open with that sentence's colon,
    # or name the letter as "option C" / "choice C".
    text = _CONTINUATION.sub("", reply.replace("*", "").strip().lstrip(":：").strip())
    # Rule 1 must see the letter in capitals even though "answer" may be any case.
    stated = [m.group(1) for m in _STATED.finditer(text) if m.group(1).isupper()]
    if stated:
        return stated[-1]
    if match := _ALONE.match(text.split("\n", 1)[0].strip()):
        return match.group(1)
    if match := _OPENING.match(text):
        return match.group(1) or match.group(2)
    normalized = text.rstrip(".").strip().lower()
    matching = [LETTERS[i] for i, choice in enumerate(choices) if str(choice).strip().rstrip(".").lower() == normalized]
    return matching[0] if len(matching) == 1 else None


def format_question(row: Mapping[str, Any]) -> str:
    options = "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(row["choices"]))
    return f"{row['question'].strip()}\n{options}"


def subject_name(subject: str) -> str:
    return subject.replace("_", " ")


class MMLU(Task):
    name = "mmlu"
    stop_strings = ("\n",)  # a base model answers " B" and would go on to invent the next question
    chat_stop_strings = ()
    # The letter takes 1–3 tokens after the opened reply; the rest of the budget times the explanation
    # (a base model stops at the end of its one-line answer).
    default_max_new_tokens = 64

    def load(
        self,
        source: DataSource,
        limit: int | None,
        offset: int = 0,
        seed: int | None = None,
        subjects: Sequence[str] | None = None,
    ) -> list[Example]:
        rows = load_rows(source, TEST)
        for index, row in enumerate(rows):
            if len(row["choices"]) != len(LETTERS) or row["answer"] not in range(len(LETTERS)):
                raise CosBenchError(f"MMLU test row {index} needs 4 choices and an answer 0-3: replace the file with a good copy")
        indices = _subject_filter(rows, subjects)
        shots_by_subject: dict[str, list[dict]] = {}
        for row in load_rows(source, DEV):
            shots_by_subject.setdefault(row["subject"], []).append(row)
        chosen = [indices[i] for i in select_rows(len(indices), limit, offset, seed)]
        examples = []
        for i in chosen:
            subject = rows[i]["subject"]
            shots = tuple(shots_by_subject.get(subject, []))
            examples.append(Example(self.name, f"mmlu/{subject}/{i}", rows[i], shots))
        return examples

    def build_prompt(self, example: Example, tokenizer: Any, chat: bool) -> str:
        row = example.row
        if chat:
            instruction = _CHAT_INSTRUCTION.format(subject=subject_name(row["subject"]), question=format_question(row))
            return chat_prompt(tokenizer, instruction) + _RESPONSE_PREFIX
        header = f"The following are multiple choice questions (with answers) about {subject_name(row['subject'])}.\n\n"
        shots = "".join(f"{format_question(s)}\nAnswer: {LETTERS[s['answer']]}\n\n" for s in example.fewshot)
        return f"{header}{shots}{format_question(row)}\nAnswer:"

    def completion_for_scoring(self, example: Example, generated_text: str) -> str:
        # The first paragraph: the opened chat reply states its letter there (a base model's reply
        # is one line anyway). No cut at a single "\n": "B\nBecause ..." still counts.
        return _PARAGRAPH_BREAK.split(generated_text.strip(), maxsplit=1)[0].strip()

    def score_many(self, examples: Sequence[Example], completions: Sequence[str], allow_code_eval: bool = False) -> list[Score]:
        check_lengths(examples, completions)
        return [score_completion(example.row, completion) for example, completion in zip(examples, completions)]


def score_completion(row: Mapping[str, Any], completion: str) -> Score:
    gold = LETTERS[row["answer"]]
    letter = extract_letter(completion, row["choices"])
    if letter is None:
        return Score(False, None, "no answer", f"gold {gold}; no letter found", answered=False)
    correct = letter == gold
    return Score(correct, letter, "correct" if correct else "wrong", f"gold {gold}; chose {letter}", answered=True)


def _subject_filter(rows: Sequence[Mapping[str, Any]], subjects: Sequence[str] | None) -> list[int]:
    if not subjects:
        return list(range(len(rows)))
    known = sorted({row["subject"] for row in rows})
    unknown = [s for s in subjects if s not in known]
    if unknown:
        raise CosBenchError(f"unknown MMLU subject(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    wanted = set(subjects)
    return [i for i, row in enumerate(rows) if row["subject"] in wanted]
