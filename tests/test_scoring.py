"""Scorers on hand-written completions: the tricky formats, wrong answers and garbage."""

from __future__ import annotations

import pytest

from cos_bench.tasks import get_task
from cos_bench.tasks.base import Example
from cos_bench.tasks.gsm8k import extract_flexible, extract_strict, normalize_number
from cos_bench.tasks.humaneval import pass_at_k_by_problem
from cos_bench.tasks.mmlu import extract_letter

# ---------------------------------------------------------------------------------- GSM8K


def gsm8k_example(gold: str) -> Example:
    return Example("gsm8k", "gsm8k/test/x", {"question": "q", "answer": f"Some reasoning <<1+1=2>>2.\n#### {gold}"})


@pytest.mark.parametrize(
    "gold, completion, verdict, extracted",
    [
        ("18", "She sells 9 eggs for $2 each.\n#### 18", "correct", "18"),
        ("18", "9 * 2 = 18. The answer is 18.", "correct", "18"),  # "18." is 18
        ("18", "The answer is $18.00", "correct", "18"),
        ("1000", "He earns 4 * $250 = $1,000.00 in all. The answer is $1,000.00.", "correct", "1000"),
        ("1000", "#### 1,000", "correct", "1000"),
        ("-5", "The temperature ends at −5 degrees, so the answer is -5.", "correct", "-5"),
        ("15", "It takes between 10-15 minutes, so 15", "correct", "15"),  # "10-15" is no negative
        ("18", "The answer is 18. I checked it 2 ways.", "correct", "18"),  # strict beats a later number
        ("18", "She makes 9 * 2 = $18 every day", "correct", "18"),  # flexible: the last number
        ("18", "So the total is \\boxed{18}", "correct", "18"),
        ("42", "**The answer is: 42**", "correct", "42"),
        ("0.5", "Each gets 1/2, i.e. $.50, so the answer is 0.50", "correct", "0.5"),
        ("25", "The answer is 25%", "correct", "25"),
        ("18", "#### 5\nWait, I made an error.\n#### 18", "correct", "18"),  # the last strict one
        ("18", "The answer is 17.", "wrong", "17"),
        ("18", "I do not know how to solve this.", "no answer", None),
        ("18", "", "no answer", None),
        ("18", "!!!???", "no answer", None),
    ],
)
def test_gsm8k_scores(gold: str, completion: str, verdict: str, extracted: str | None) -> None:
    task = get_task("gsm8k")
    example = gsm8k_example(gold)
    (score,) = task.score_many([example], [task.completion_for_scoring(example, completion)])
    assert (score.verdict, score.extracted) == (verdict, extracted), score.detail
    assert score.correct is (verdict == "correct")


@pytest.mark.parametrize(
    "completion, answered",
    [
        ("9 * 2 = 18. The answer is 18.", True),
        ("#### 17", True),
        ("So the total is \\boxed{18}", True),
        ("She makes 9 * 2 = $18 every day, and then she", False),  # a number, but cut before the final answer
        ("", False),
    ],
)
def test_gsm8k_marks_an_answer_only_when_it_is_stated_as_final(completion: str, answered: bool) -> None:
    task = get_task("gsm8k")
    example = gsm8k_example("18")
    (score,) = task.score_many([example], [task.completion_for_scoring(example, completion)])
    assert score.answered is answered, score.detail


def test_gsm8k_completion_is_cut_before_an_invented_next_question() -> None:
    task = get_task("gsm8k")
    example = gsm8k_example("18")
    text = " 9 * 2 = 18.\n#### 18\n\nQuestion: Tom has 3 apples. How many?\nAnswer: #### 3"
    assert task.completion_for_scoring(example, text) == "9 * 2 = 18.\n#### 18"
    assert task.score_many([example], [task.completion_for_scoring(example, text)])[0].verdict == "correct"


def test_gsm8k_extraction_separately() -> None:
    assert extract_strict("The answer is 7, not 8") == "7"
    assert extract_flexible("The answer is 7, not 8") == "8"
    assert extract_strict("no marker 12") is None
    assert normalize_number("$1,000.00") == "1000"
    assert normalize_number("18.") == "18"
    assert normalize_number("-3.50") == "-3.5"
    assert normalize_number("abc") is None


# ---------------------------------------------------------------------------------- MMLU

MMLU_ROW = {"question": "Capital of Germany?", "subject": "geography", "choices": ["Paris", "London", "Berlin", "Rome"], "answer": 2}


@pytest.mark.parametrize(
    "completion, verdict, extracted",
    [
        ("C", "correct", "C"),
        (" C\n", "correct", "C"),  # a base model's continuation
        ("(C)", "correct", "C"),
        ("C.", "correct", "C"),
        ("Answer: C", "correct", "C"),
        ("The answer is C", "correct", "C"),
        ("The answer is (C).", "correct", "C"),
        ("**C. Berlin**", "correct", "C"),
        ("C) Berlin", "correct", "C"),
        ("The correct answer is option C because Berlin is the capital.", "correct", "C"),
        ("Let me think.\nGermany's capital is Berlin.\nAnswer: C", "correct", "C"),
        ("Berlin", "correct", "C"),  # exactly one option's text
        ("B\nBecause London is big.", "wrong", "B"),
        # Sampled continuations of "The correct answer is" (seen at T = 1 in results/cpu-quality-sampled):
        (" C, Berlin.\n\nBerlin has been the capital since 1990.", "correct", "C"),
        (": C. Berlin.\n\nBerlin is the capital.", "correct", "C"),
        (":\nC. Berlin\n\nBerlin is the capital.", "correct", "C"),
        (" the third option, Berlin.", "no answer", None),  # no letter: still no answer
        (" choice C.\nBerlin is the capital.", "correct", "C"),
        (" option C: Berlin", "correct", "C"),
        (" Option (B) London", "wrong", "B"),
        (" choice of words matters", "no answer", None),
        ("A, B and C are cities.", "wrong", "A"),  # a leading letter and comma reads as a choice
        ("I think the answer is B, not C", "wrong", "B"),
        ("A good question; hard to say.", "no answer", None),  # the article "A" is no answer
        ("The answer is a tricky one", "no answer", None),
        ("answer: (c)", "no answer", None),  # documented: capitals only
        ("E", "no answer", None),
        ("", "no answer", None),
        ("%%%% garbage ####", "no answer", None),
    ],
)
def test_mmlu_scores(completion: str, verdict: str, extracted: str | None) -> None:
    task = get_task("mmlu")
    example = Example("mmlu", "mmlu/geography/0", MMLU_ROW)
    (score,) = task.score_many([example], [task.completion_for_scoring(example, completion)])
    assert (score.verdict, score.extracted) == (verdict, extracted), score.detail
    assert score.correct is (verdict == "correct")
    assert score.answered is (extracted is not None)  # a letter, right or wrong, is an answer


def test_mmlu_extract_letter_without_choices() -> None:
    assert extract_letter("Berlin") is None
    assert extract_letter("D") == "D"


# ---------------------------------------------------------------------------------- HumanEval

ADD_ROW = {
    "task_id": "Toy/0",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Add two numbers.\n    >>> add(2, 3)\n    5\n    """\n',
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}
HELPER_ROW = {  # the stub's preamble has an import and a helper the solution needs
    "task_id": "Toy/1",
    "prompt": 'import math\n\n\ndef double(x):\n    return 2 * x\n\n\ndef root_double(x: float) -> float:\n    """sqrt(2x)."""\n',
    "canonical_solution": "    return math.sqrt(double(x))\n",
    "test": "def check(candidate):\n    assert candidate(8.0) == 4.0\n",
    "entry_point": "root_double",
}

HUMANEVAL_CASES = [
    # (row, generated text, expected verdict)
    (ADD_ROW, "    return a + b\n", "passed"),
    (ADD_ROW, "    return a + b\n\ndef unrelated():\n    pass\n", "passed"),  # cut at "\ndef "
    (ADD_ROW, "    return a + b\nprint(add(1, 2))\n", "passed"),  # cut at "\nprint("
    (ADD_ROW, "    return a - b\n", "failed"),
    (ADD_ROW, "Here you go:\n```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```\nIt adds.", "passed"),
    (ADD_ROW, "```python\n    return a + b\n```", "passed"),  # just the body
    (ADD_ROW, "```python\nreturn a + b\n```", "passed"),  # the body without its indentation
    (ADD_ROW, "```python\ndef add(a, b):\n    return a - b\n\nif __name__ == '__main__':\n    import sys\n    sys.exit(0)\n```", "failed"),
    (ADD_ROW, "def add(a, b):\n    return a + b\n", "passed"),  # re-stated, no fence
    (ADD_ROW, "```python\ndef add(a, b):\n    return a + b\n", "passed"),  # truncated before the closing fence
    (ADD_ROW, "```python\nprint(add(2, 3))\n```\n```python\ndef add(a, b):\n    return a + b\n```", "passed"),
    (ADD_ROW, "    return a +\n", "failed"),  # syntax error
    (ADD_ROW, "I cannot help with that.", "failed"),
    (ADD_ROW, "    while True:\n        pass\n", "timed out"),
    (ADD_ROW, "    import ctypes\n    ctypes.string_at(0)\n", "crashed"),  # a segfault
    (HELPER_ROW, "```python\ndef root_double(x: float) -> float:\n    return math.sqrt(double(x))\n```", "passed"),
    (HELPER_ROW, "    return math.sqrt(double(x))\n", "passed"),
    (ADD_ROW, "    return a + b\n```", "passed"),  # continues the prefilled chat block, stops at its fence
    (ADD_ROW, "    return a - b\n```\n\nThis adds the numbers.", "failed"),  # prose after the fence is not code
]


@pytest.fixture(scope="module")
def humaneval_scores():
    from cos_bench.tasks.humaneval import HumanEval

    task = HumanEval(timeout_s=3.0)
    examples = [Example("humaneval", row["task_id"], row) for row, _, _ in HUMANEVAL_CASES]
    completions = [task.completion_for_scoring(e, text) for e, (_, text, _) in zip(examples, HUMANEVAL_CASES)]
    return task.score_many(examples, completions, allow_code_eval=True)


@pytest.mark.parametrize("index", range(len(HUMANEVAL_CASES)))
def test_humaneval_scores(humaneval_scores, index: int) -> None:
    _, text, verdict = HUMANEVAL_CASES[index]
    score = humaneval_scores[index]
    assert score.verdict == verdict, f"{text!r}: {score.detail}"
    assert score.correct is (verdict == "passed")


def test_humaneval_failure_names_the_failing_assert(humaneval_scores) -> None:
    assert "assert candidate(2, 3) == 5" in humaneval_scores[3].detail


def test_humaneval_is_not_evaluated_without_opt_in(monkeypatch) -> None:
    monkeypatch.delenv("COS_BENCH_ALLOW_CODE_EVAL", raising=False)
    task = get_task("humaneval")
    example = Example("humaneval", "Toy/0", ADD_ROW)
    (score,) = task.score_many([example], ["    return a + b\n"])
    assert (score.correct, score.verdict) == (None, "not evaluated")
    assert "--allow-code-eval" in score.detail and "COS_BENCH_ALLOW_CODE_EVAL=1" in score.detail


def test_pass_at_k_by_problem() -> None:
    from cos_bench.tasks.base import Score

    ok, bad = Score(True, "", "passed", ""), Score(False, "", "failed", "")
    ids = ["p1", "p1", "p2", "p2"]
    assert pass_at_k_by_problem(ids, [ok, bad, bad, bad], k=1) == pytest.approx(0.25)
    assert pass_at_k_by_problem(ids, [ok, bad, bad, bad], k=2) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------- HumanEval: cheats

CLOSE_ROW = {  # HumanEval/0, trimmed: the brief's example of a wrong answer that exits early
    "task_id": "Toy/2",
    "prompt": "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
    '    """Whether any two numbers are closer to each other than threshold."""\n',
    "canonical_solution": "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[:i])\n",
    "test": "def check(candidate):\n    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
    "    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.8) == False\n",
    "entry_point": "has_close_elements",
}
WRONG = "def has_close_elements(numbers, threshold):\n    return False\n"
# Each one is wrong (its answer fails check), yet the program exits with status 0: it ends
# before or instead of reporting the failure, or its answer compares equal to anything.
CHEATS = {
    "exit(0)": WRONG + "\nexit(0)\n",
    "sys.exit(0)": WRONG + "\nimport sys\nsys.exit(0)\n",
    "os._exit(0)": WRONG + "\nimport os\nos._exit(0)\n",
    "raise SystemExit(0)": WRONG + "\nraise SystemExit(0)\n",
    "exit inside the call": "def has_close_elements(numbers, threshold):\n    import os\n    os._exit(0)\n",
    "exec /bin/true": WRONG + "\nimport os\nos.execv('/bin/true', ['true'])\n",
    "atexit + os._exit": "import atexit, os\natexit.register(lambda: os._exit(0))\n\n" + WRONG,
    "excepthook + os._exit": "import os, sys\nsys.excepthook = lambda *exc: os._exit(0)\n\n" + WRONG,
    "always equal": "class Anything:\n    def __eq__(self, other):\n        return True\n\n"
    "def has_close_elements(numbers, threshold):\n    return Anything()\n",
    "always equal, an int": "class Anything(int):\n    def __eq__(self, other):\n        return True\n\n"
    "def has_close_elements(numbers, threshold):\n    return Anything(0)\n",
}


def reference_program(row: dict, completion: str) -> str:
    """The program as openai/human-eval builds it: solution, tests, check; no proof that check finished."""
    preamble = row["prompt"][: row["prompt"].index("def " + row["entry_point"])]
    return f"{preamble}{completion}\n\n{row['test']}\n\ncheck({row['entry_point']})\n"


@pytest.fixture(scope="module")
def cheat_scores():
    from cos_bench.tasks.humaneval import HumanEval

    task = HumanEval(timeout_s=5.0)
    example = Example("humaneval", CLOSE_ROW["task_id"], CLOSE_ROW)
    completions = [CLOSE_ROW["canonical_solution"], "    return False\n", *CHEATS.values()]
    return task.score_many([example] * len(completions), completions, allow_code_eval=True)


def test_humaneval_cheats_work_against_exit_status_alone() -> None:
    """The control: run as the reference harness runs them, every cheat exits 0."""
    from cos_bench.sandbox import run_programs

    verdicts = run_programs([reference_program(CLOSE_ROW, c) for c in CHEATS.values()], timeout_s=5.0, allow=True)
    assert [v.status for v in verdicts] == ["passed"] * len(CHEATS), verdicts


def test_humaneval_right_answer_passes_and_wrong_one_fails(cheat_scores) -> None:
    right, wrong = cheat_scores[:2]
    assert (right.verdict, right.correct) == ("passed", True), right.detail
    assert (wrong.verdict, wrong.correct) == ("failed", False), wrong.detail
    assert "assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True" in wrong.detail


@pytest.mark.parametrize("index, cheat", list(enumerate(CHEATS)))
def test_humaneval_cheat_fails(cheat_scores, index: int, cheat: str) -> None:
    score = cheat_scores[2 + index]
    assert (score.verdict, score.correct) == ("failed", False), f"{cheat}: {score.detail}"
    expected = "a class it defined itself" if cheat.startswith("always equal") else "before its last statement returned"
    assert expected in score.detail, score.detail
