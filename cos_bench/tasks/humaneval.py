"""HumanEval: write a Python function; the score is whether its unit tests pass.

Base models continue the function stub (the dataset's prompt) and are stopped at
the next top-level statement. Instruct models are shown the stub and asked for the
whole function in a ```python block; from the reply we take that block, which may
re-state the whole function (then the program is the prompt's preamble — imports
and helper functions — plus the block) or hold just the body (then prompt + body).

The program (solution + the dataset's tests + `check(entry_point)`) runs in the
sandbox, only when the user allowed code execution; otherwise every score is
"not evaluated". It passes only if `check` returned: exiting with status 0 is not
enough (the sandbox's `must_finish`), so `sys.exit(0)` and the like before or
instead of the tests fail. As in the reference harness, `check` calls the
solution in the program's own process; unlike it, `check` gets the solution
through `_RESULT_GUARD`, which refuses results of classes the program defined
(an object whose `__eq__` always says True). pass@1 is the mean of `correct`;
`pass_at_k_by_problem` gives the unbiased pass@k when a problem has several samples.
"""

from __future__ import annotations

import re
import textwrap
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from cos_bench.errors import CosBenchError
from cos_bench.sandbox import CODE_EVAL_ENV, code_eval_allowed, pass_at_k, run_programs
from cos_bench.tasks.base import Example, Score, Task, chat_prompt, check_lengths, cut_at_stop
from cos_bench.tasks.data import DataSource, Split, load_rows, select_rows

TEST = Split(
    "openai/openai_humaneval",
    None,
    "test",
    "humaneval_test",
    ("task_id", "prompt", "canonical_solution", "test", "entry_point"),
)
TIMEOUT_S = 10.0  # per program; the slowest canonical solution takes well under a second

_CHAT_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function, including "
    "its signature and any imports it needs, in a single ```python code block.\n\n```python\n{prompt}```"
)
# The assistant's reply is opened for it with the fenced stub, so the model writes the body
# straight away instead of first re-stating the signature and docstring (dozens of tokens
# that cost as much to decode as the solution), and the closing fence ends the code.
_RESPONSE_PREFIX = "```python\n{prompt}"
_CLOSING_FENCE = "\n```"
# An opening fence (maybe tagged python) to a closing fence, or to the end of a truncated reply.
_FENCED = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE | re.IGNORECASE)
# Defined after the tests, so the solution cannot define it first. A result the solution built
# from its own classes could compare equal to anything (`__eq__` returning True, `__sub__`
# returning 0): the dataset's answers are plain built-in values, so such a result is refused,
# and so is one inside a list, tuple, set or dict. A class counts as the program's when its
# `__module__` is "__main__"; a completion that renames its module or class is tampering with
# the program itself, which no harness running the tests in-process can stop.
_RESULT_GUARD = """
def _cos_bench_guard(candidate):
    def guarded(*args, **kwargs):
        result = candidate(*args, **kwargs)
        pending, seen = [result], set()
        while pending:
            value = pending.pop()
            if id(value) in seen:
                continue
            seen.add(id(value))
            if any(cls.__module__ == "__main__" for cls in type(value).__mro__):
                raise TypeError(f"the solution returned a {type(value).__name__!r} object, of a class it "
                                "defined itself: its comparisons cannot be trusted")
            if isinstance(value, dict):  # keys and values, not items: fresh tuples would recycle ids
                pending.extend([*value.keys(), *value.values()])
            elif isinstance(value, (list, tuple, set, frozenset)):
                pending.extend(value)
        return result
    return guarded
"""
_TOP_LEVEL_CODE = re.compile(r"^(?:from\s+\S+\s+import|import\s|def\s|class\s|@)", re.MULTILINE)
_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==", re.MULTILINE)


def _defines(code: str, entry_point: str) -> re.Match | None:
    return re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE)


def extract_code(generated_text: str, entry_point: str, stop_strings: Sequence[str]) -> str:
    """The code to score: a fenced block, a re-stated function, or a body cut at the stop strings."""
    blocks = _FENCED.findall(generated_text)
    if blocks:
        # Prefer the block that defines the function; models sometimes add a usage example block.
        code = next((b for b in blocks if _defines(b, entry_point)), blocks[0])
    elif _defines(generated_text, entry_point):
        start = _TOP_LEVEL_CODE.search(generated_text)  # skip any prose before the code
        code = generated_text[start.start() :] if start else generated_text
    else:
        return cut_at_stop(generated_text, stop_strings)
    guard = _MAIN_GUARD.search(code)  # a demo under __main__ would run (and might exit 0 early)
    return (code[: guard.start()] if guard else code).rstrip() + "\n"


def build_program(row: Mapping[str, Any], completion: str) -> str:
    """Solution + tests + the call that runs them (through the result guard), as one Python program."""
    prompt, entry_point = row["prompt"], row["entry_point"]
    if _defines(completion, entry_point):
        stub = _defines(prompt, entry_point)
        preamble = prompt[: stub.start()] if stub else ""  # imports and helper functions
        solution = preamble + completion
    else:
        solution = prompt + _as_body(completion)
    return f"{solution}\n\n{row['test']}\n{_RESULT_GUARD}\ncheck(_cos_bench_guard({entry_point}))\n"


def _as_body(completion: str) -> str:
    # A chat model may give the body without its indentation: it belongs inside the function.
    first = next((line for line in completion.splitlines() if line.strip()), "")
    return textwrap.indent(completion, "    ") if first and not first[0].isspace() else completion


def pass_at_k_by_problem(example_ids: Sequence[str], scores: Sequence[Score], k: int) -> float:
    """Mean over problems of the unbiased pass@k, from every sample scored for each problem."""
    if any(score.correct is None for score in scores):
        raise CosBenchError(f"pass@{k} needs executed programs: pass --allow-code-eval or set {CODE_EVAL_ENV}=1")
    passed: dict[str, list[bool]] = defaultdict(list)
    for example_id, score in zip(example_ids, scores, strict=True):
        passed[example_id].append(bool(score.correct))
    if not passed:
        raise ValueError("no scores")
    return sum(pass_at_k(len(runs), sum(runs), k) for runs in passed.values()) / len(passed)


class HumanEval(Task):
    name = "humaneval"
    stop_strings = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
    chat_stop_strings = (_CLOSING_FENCE,)  # the reply continues the prefilled block: its end ends the code
    # The canonical solutions take 46 tokens at the median, 167 at the 99th percentile and 241 at most
    # (Qwen2.5 tokenizer, closing fence included); the models' own bodies, with comments, run up to
    # about 1.5× that. The block's closing fence ends a finished body well before the budget.
    default_max_new_tokens = 384

    def __init__(self, timeout_s: float = TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    def load(
        self,
        source: DataSource,
        limit: int | None,
        offset: int = 0,
        seed: int | None = None,
        subjects: Sequence[str] | None = None,
    ) -> list[Example]:
        rows = load_rows(source, TEST)
        return [Example(self.name, rows[i]["task_id"], rows[i]) for i in select_rows(len(rows), limit, offset, seed)]

    def build_prompt(self, example: Example, tokenizer: Any, chat: bool) -> str:
        if chat:
            instruction = chat_prompt(tokenizer, _CHAT_INSTRUCTION.format(prompt=example.row["prompt"]))
            return instruction + _RESPONSE_PREFIX.format(prompt=example.row["prompt"])
        return example.row["prompt"]

    def completion_for_scoring(self, example: Example, generated_text: str) -> str:
        if not _FENCED.search(generated_text):
            # A continuation of the prefilled block (or a base-model body): code ends at the closing fence.
            generated_text = generated_text.split(_CLOSING_FENCE)[0]
        return extract_code(generated_text, example.row["entry_point"], self.stop_strings)

    def score_many(self, examples: Sequence[Example], completions: Sequence[str], allow_code_eval: bool = False) -> list[Score]:
        check_lengths(examples, completions)
        if not code_eval_allowed(allow_code_eval):
            detail = f"running model-written code is off: pass --allow-code-eval or set {CODE_EVAL_ENV}=1"
            return [Score(None, completion, "not evaluated", detail) for completion in completions]
        programs = [build_program(example.row, completion) for example, completion in zip(examples, completions)]
        verdicts = run_programs(programs, timeout_s=self.timeout_s, allow=True, must_finish=True)
        return [
            Score(
                verdict.status == "passed",
                completion,
                verdict.status,
                verdict.reason if verdict.isolated_network else f"{verdict.reason} (ran without network isolation)",
            )
            for completion, verdict in zip(completions, verdicts)
        ]
