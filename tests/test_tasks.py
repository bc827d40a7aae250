"""Tasks: the registry, loading (local files, subsets, errors), prompts and stop strings.

Never touches the Hub: local data comes from ../shared/data, and the unreachable-Hub
case replaces `datasets.load_dataset`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from cos_bench.errors import CosBenchError
from cos_bench.tasks import PROMPT_FORMAT_VERSION, TASK_NAMES, DataSource, get_task, resolve_data_source
from cos_bench.tasks.data import DATA_DIR_ENV

DATA_DIR = Path(__file__).parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"offline data copies not found at {DATA_DIR}")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(chat_template: str | None = CHAT_TEMPLATE):
    """A real transformers tokenizer built offline, with a Qwen-style chat template."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def local() -> DataSource:
    if not DATA_DIR.is_dir():
        pytest.skip(f"offline data copies not found at {DATA_DIR}")
    return resolve_data_source(DATA_DIR)


# ---------------------------------------------------------------------------------- registry


def test_get_task_by_name() -> None:
    assert TASK_NAMES == ("humaneval", "gsm8k", "mmlu")
    for name in TASK_NAMES:
        assert get_task(name).name == name
    assert get_task(" GSM8K ").name == "gsm8k"


def test_unknown_task_lists_the_valid_names() -> None:
    with pytest.raises(CosBenchError, match="unknown task 'mbpp': choose one of humaneval, gsm8k, mmlu"):
        get_task("mbpp")


# ---------------------------------------------------------------------------------- data source


def test_data_source_option_then_environment_then_hub(tmp_path: Path, monkeypatch) -> None:
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(other))
    assert resolve_data_source(tmp_path).data_dir == tmp_path.resolve()
    assert resolve_data_source(None).data_dir == other.resolve()
    monkeypatch.delenv(DATA_DIR_ENV)
    assert resolve_data_source(None) == DataSource(None)


def test_missing_data_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CosBenchError, match="does not exist: point it at a folder") as info:
        resolve_data_source(tmp_path / "nope")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------- loading


@needs_data
def test_load_is_deterministic_with_limit_offset_and_seed(local: DataSource) -> None:
    task = get_task("humaneval")
    assert [e.example_id for e in task.load(local, limit=3)] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert [e.example_id for e in task.load(local, limit=2, offset=5)] == ["HumanEval/5", "HumanEval/6"]
    first = [e.example_id for e in task.load(local, limit=10, seed=7)]
    assert first == [e.example_id for e in task.load(local, limit=10, seed=7)]
    assert first != [e.example_id for e in task.load(local, limit=10, seed=8)]
    # offset pages through the same shuffled order
    assert [e.example_id for e in task.load(local, limit=5, offset=5, seed=7)] == first[5:]
    assert len(task.load(local, limit=None)) == 164


@needs_data
def test_gsm8k_loads_with_training_shots(local: DataSource) -> None:
    examples = get_task("gsm8k").load(local, limit=4, seed=1)
    assert len(examples) == 4 and all(e.example_id.startswith("gsm8k/test/") for e in examples)
    assert len(examples[0].fewshot) == 5 and "####" in examples[0].fewshot[0]["answer"]


@needs_data
def test_mmlu_subject_filter_and_dev_shots(local: DataSource) -> None:
    examples = get_task("mmlu").load(local, limit=None, subjects=["anatomy"])
    assert len(examples) == 135  # the official anatomy test split
    assert {e.row["subject"] for e in examples} == {"anatomy"}
    assert len(examples[0].fewshot) == 5 and {s["subject"] for s in examples[0].fewshot} == {"anatomy"}


@needs_data
def test_unknown_mmlu_subject_lists_the_valid_ones(local: DataSource) -> None:
    with pytest.raises(CosBenchError, match="unknown MMLU subject.*anatomy") as info:
        get_task("mmlu").load(local, limit=1, subjects=["astrology"])
    assert "astrology" in str(info.value) and "\n" not in str(info.value)


@needs_data
def test_bad_subset_arguments(local: DataSource) -> None:
    task = get_task("humaneval")
    with pytest.raises(CosBenchError, match="past the end of the 164 examples"):
        task.load(local, limit=1, offset=164)
    with pytest.raises(CosBenchError, match="limit must be at least 1"):
        task.load(local, limit=0)
    # Only MMLU has subjects; the others ignore the filter, so a run can mix tasks.
    assert [e.example_id for e in task.load(local, limit=1, subjects=["anatomy"])] == ["HumanEval/0"]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_malformed_file_is_one_clear_error(tmp_path: Path) -> None:
    write_lines(tmp_path / "gsm8k_test.jsonl", ['{"question": "q", "answer": "#### 1"}', '{"question": oops'])
    with pytest.raises(CosBenchError, match=r"gsm8k_test.jsonl is not valid JSON Lines .*replace it") as info:
        get_task("gsm8k").load(resolve_data_source(tmp_path), limit=1)
    assert "\n" not in str(info.value)


def test_corrupt_gzip_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "humaneval_test.jsonl.gz").write_bytes(b"this is not gzip")
    with pytest.raises(CosBenchError, match="is not valid JSON Lines"):
        get_task("humaneval").load(resolve_data_source(tmp_path), limit=1)


@pytest.mark.parametrize("name, content", [
    ("gsm8k_test.jsonl", b""),
    ("gsm8k_test.jsonl", b"\n \n"),
    ("gsm8k_test.jsonl.gz", gzip.compress(b"", mtime=0)),
], ids=["no bytes", "blank lines", "gzip of nothing"])  # fmt: skip
def test_empty_file_says_it_is_empty(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CosBenchError) as info:
        get_task("gsm8k").load(resolve_data_source(tmp_path), limit=1)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / name} is empty: replace it with the rows of openai/gsm8k (split test)")
    assert "StopIteration" not in message and "\n" not in message


def test_missing_file_names_file_and_fix(tmp_path: Path) -> None:
    with pytest.raises(CosBenchError, match=r"no gsm8k_test.jsonl.gz \(or .jsonl\) in .*: add it"):
        get_task("gsm8k").load(resolve_data_source(tmp_path), limit=1)


def test_missing_field_is_reported(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "humaneval_test.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"task_id": "HumanEval/0", "prompt": "def f():\n"}) + "\n")
    with pytest.raises(CosBenchError, match="lacks the field"):
        get_task("humaneval").load(resolve_data_source(tmp_path), limit=1)


def test_unreachable_hub_says_what_to_do(monkeypatch) -> None:
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(CosBenchError, match=r"cannot load openai/gsm8k from the Hugging Face Hub") as info:
        get_task("gsm8k").load(DataSource(None), limit=1)
    assert "--data-dir" in str(info.value) and DATA_DIR_ENV in str(info.value)


# ---------------------------------------------------------------------------------- prompts


@needs_data
def test_base_prompts(local: DataSource) -> None:
    humaneval = get_task("humaneval").load(local, limit=1)[0]
    assert get_task("humaneval").build_prompt(humaneval, None, chat=False) == humaneval.row["prompt"]

    gsm8k = get_task("gsm8k").load(local, limit=1)[0]
    prompt = get_task("gsm8k").build_prompt(gsm8k, None, chat=False)
    assert prompt.count("Question: ") == 6 and prompt.endswith(f"Question: {gsm8k.row['question']}\nAnswer:")
    assert "<<" not in prompt and prompt.count("#### ") == 5

    mmlu = get_task("mmlu").load(local, limit=1)[0]
    prompt = get_task("mmlu").build_prompt(mmlu, None, chat=False)
    assert prompt.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    last_choice = mmlu.row["choices"][3]
    assert prompt.count("\nAnswer: ") == 5 and prompt.endswith(f"\nD. {last_choice}\nAnswer:")


@needs_data
@pytest.mark.parametrize("name", TASK_NAMES)
def test_chat_prompts_use_the_template(local: DataSource, tokenizer, name: str) -> None:
    task = get_task(name)
    example = task.load(local, limit=1)[0]
    prompt = task.build_prompt(example, tokenizer, chat=True)
    assert prompt.startswith("<|im_start|>user\n")
    if name == "humaneval":  # the reply is opened with the fenced stub: the model writes the body
        assert prompt.endswith("<|im_start|>assistant\n```python\n" + example.row["prompt"])
    elif name == "mmlu":  # the reply is opened so that the letter comes first
        assert prompt.endswith("<|im_start|>assistant\nThe correct answer is")
    else:
        assert prompt.endswith("<|im_start|>assistant\n")
    key = "prompt" if name == "humaneval" else "question"
    assert example.row[key].strip() in prompt
    assert "Answer: " not in prompt  # no few-shot exemplars in chat prompts


def test_chat_prompt_needs_a_chat_template() -> None:
    row = {"question": "1+1?", "answer": "#### 2"}
    from cos_bench.tasks.base import Example

    with pytest.raises(CosBenchError, match="no chat template: turn chat prompts off"):
        get_task("gsm8k").build_prompt(Example("gsm8k", "x", row), make_tokenizer(None), chat=True)


def test_stop_strings_per_task_and_prompt_kind() -> None:
    humaneval = get_task("humaneval")
    assert humaneval.stop_strings_for(chat=False) == ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
    assert not any("def" in s for s in humaneval.stop_strings_for(chat=True))  # would cut the code block
    assert humaneval.stop_strings_for(chat=True) == ("\n```",)  # the end of the prefilled block
    assert "Question:" in get_task("gsm8k").stop_strings_for(chat=False)
    assert get_task("mmlu").stop_strings_for(chat=False) == ("\n",)


def test_prompt_format_names_the_version() -> None:
    assert get_task("mmlu").prompt_format(chat=True) == f"{PROMPT_FORMAT_VERSION}/mmlu/chat"
    assert get_task("gsm8k").prompt_format(chat=False) == f"{PROMPT_FORMAT_VERSION}/gsm8k/base"


# If this fails, a prompt changed: bump PROMPT_FORMAT_VERSION in tasks/base.py and record the
# new digest here, so results made with the old prompts are never mixed with new ones.
PROMPT_DIGESTS = {"2026.11-1": "138fc871d6646f08", "2026.11-2": "c6e8ca81c43d9c84", "2026.12-1": "943c458dd320886c"}


@needs_data
def test_prompt_text_is_pinned_to_the_version(local: DataSource, tokenizer) -> None:
    digest = hashlib.sha256()
    for name in TASK_NAMES:
        task = get_task(name)
        example = task.load(local, limit=1)[0]
        for chat in (False, True):
            digest.update(task.build_prompt(example, tokenizer, chat=chat).encode())
        digest.update(repr((task.stop_strings, task.chat_stop_strings)).encode())
    assert PROMPT_DIGESTS.get(PROMPT_FORMAT_VERSION) == digest.hexdigest()[:16], (
        f"prompts changed: bump PROMPT_FORMAT_VERSION and pin {digest.hexdigest()[:16]}"
    )


# ---------------------------------------------------------------------------------- completions


def test_completion_for_scoring_humaneval_variants() -> None:
    from cos_bench.tasks.base import Example

    row = {"prompt": "def f(x):\n    '''Double.'''\n", "entry_point": "f"}
    example = Example("humaneval", "Toy/0", row)
    task = get_task("humaneval")
    assert task.completion_for_scoring(example, "    return 2 * x\n\n\ndef g():\n    pass") == "    return 2 * x\n\n"
    fenced = "Sure!\n```python\ndef f(x):\n    return 2 * x\n\nif __name__ == '__main__':\n    print(f(2))\n```\nDone."
    assert task.completion_for_scoring(example, fenced) == "def f(x):\n    return 2 * x\n"
    prose = "Here is the code:\nimport math\ndef f(x):\n    return 2 * x\n"
    assert task.completion_for_scoring(example, prose) == "import math\ndef f(x):\n    return 2 * x\n"


# ---------------------------------------------------------------------------------- token budgets


def budget_config(**changes):
    from cos_bench.config import parse_config

    data = {
        "name": "budgets",
        "models": [{"name": "small", "source": "a"}, {"name": "large", "source": "b"}],
        "combinations": [{"rule": "we"}],
        "tasks": list(TASK_NAMES),
    }
    return parse_config({**data, **changes}, "exp.yaml")


def test_each_task_declares_its_own_budget() -> None:
    budgets = {name: get_task(name).default_max_new_tokens for name in TASK_NAMES}
    assert budgets == {"humaneval": 384, "gsm8k": 512, "mmlu": 64}


@pytest.mark.parametrize("written", [{}, {"max_new_tokens": None}, {"max_new_tokens": "task"}])
def test_without_a_number_every_task_gets_its_own_budget(written: dict) -> None:
    cfg = budget_config(**written)
    assert {name: cfg.budget(name) for name in TASK_NAMES} == {"humaneval": 384, "gsm8k": 512, "mmlu": 64}
    assert cfg.longest_budget == 512
    assert budget_config(tasks=["mmlu"], **written).longest_budget == 64  # only the config's own tasks size a cache


def test_a_number_overrides_every_task_and_a_mapping_the_tasks_it_names() -> None:
    from cos_bench.config import config_to_dict, parse_config

    every = budget_config(max_new_tokens=48)
    assert {name: every.budget(name) for name in TASK_NAMES} == dict.fromkeys(TASK_NAMES, 48)
    assert config_to_dict(every)["max_new_tokens"] == 48  # as configs wrote it before per-task budgets
    some = budget_config(max_new_tokens={"gsm8k": 256})
    assert {name: some.budget(name) for name in TASK_NAMES} == {"humaneval": 384, "gsm8k": 256, "mmlu": 64}
    # Stored as resolved numbers, never `task`: a stored config keeps its meaning if a task's own budget changes.
    assert config_to_dict(budget_config())["max_new_tokens"] == {"humaneval": 384, "gsm8k": 512, "mmlu": 64}
    for cfg in (every, some, budget_config()):
        assert parse_config(config_to_dict(cfg), "stored") == cfg


@pytest.mark.parametrize(
    "value, message",
    [
        (0, "max_new_tokens: must be ≥ 1 (got 0)"),
        (2.5, "max_new_tokens: must be a whole number ≥ 1, `task` (each task's own budget) or a mapping such as {gsm8k: 256}"),
        ("all", "max_new_tokens: must be a whole number ≥ 1"),
        (True, "max_new_tokens: must be a whole number ≥ 1"),
        ({"gsm9k": 5}, "max_new_tokens.gsm9k: unknown task; use one of humaneval, gsm8k, mmlu"),
        ({"gsm8k": 0}, "max_new_tokens.gsm8k: must be ≥ 1 (got 0)"),
        ({"gsm8k": "many"}, "max_new_tokens.gsm8k: must be an integer ≥ 1"),
    ],
)
def test_a_bad_budget_is_one_line_naming_the_key(value, message: str) -> None:
    with pytest.raises(CosBenchError) as info:
        budget_config(max_new_tokens=value)
    assert str(info.value).startswith(f"exp.yaml: {message}") and "\n" not in str(info.value)


def test_gamma_is_bounded_by_the_smallest_budget_of_the_configs_tasks() -> None:
    assert budget_config(max_new_tokens={"mmlu": 8}, gamma={"small": 8}).gamma["small"] == 8
    with pytest.raises(CosBenchError, match=r"gamma.small: must be ≤ 8 \(got 9\).*max_new_tokens = 8, the smallest"):
        budget_config(max_new_tokens={"mmlu": 8}, gamma={"small": 9})
    # A task the config does not run bounds nothing.
    assert budget_config(tasks=["gsm8k"], max_new_tokens={"mmlu": 8}, gamma={"small": 9}).gamma["small"] == 9


def _offline_tokenizer_dir() -> Path:
    from cos_bench.offline import default_cache_dir

    return default_cache_dir() / "models" / "qwen2.5-coder-1.5b-instruct"


@needs_data
@pytest.mark.skipif(not (_offline_tokenizer_dir() / "tokenizer.json").is_file(), reason="the offline Qwen2.5 tokenizer is not cached")
def test_budgets_leave_room_past_every_reference_answer(local: DataSource) -> None:
    """The measurement behind the budgets, with the offline pair's tokenizer: 1.5× the longest reference
    solution fits (chat models write more than the references; see each task's module)."""
    import re

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_offline_tokenizer_dir())

    def longest(texts) -> int:
        return max(len(tokenizer(text).input_ids) for text in texts)

    humaneval = get_task("humaneval").load(local, limit=None)
    assert 1.5 * longest(e.row["canonical_solution"] + "\n```" for e in humaneval) <= get_task("humaneval").default_max_new_tokens
    gsm8k = get_task("gsm8k").load(local, limit=None)
    assert 1.5 * longest(re.sub(r"<<[^>]*>>", "", e.row["answer"]) for e in gsm8k) <= get_task("gsm8k").default_max_new_tokens
    assert longest(" D. Some option." for _ in range(1)) <= get_task("mmlu").default_max_new_tokens  # the letter first


# ---------------------------------------------------------------------------------- MMLU's opened reply


@pytest.mark.parametrize(
    "reply, verdict",
    [
        (" C. Berlin.\n\nBerlin is the capital of Germany.", "correct"),
        (" C.\n\nExplanation: the answer is A, says a confused aside.", "correct"),  # the opening answer counts
        (" B. London.\n\nOn reflection the answer is C.", "wrong"),
        (" (C) Berlin\nBecause it is the capital.", "correct"),
        (":\n\nC. Berlin", "no answer"),  # the letter is not where the opened reply puts it
    ],
)
def test_mmlu_scores_the_first_paragraph_of_the_opened_reply(reply: str, verdict: str) -> None:
    from cos_bench.tasks.base import Example

    row = {"question": "Capital of Germany?", "subject": "geography", "choices": ["Paris", "London", "Berlin", "Rome"], "answer": 2}
    example = Example("mmlu", "mmlu/geography/0", row)
    task = get_task("mmlu")
    (score,) = task.score_many([example], [task.completion_for_scoring(example, reply)])
    assert score.verdict == verdict, score.detail


# ---------------------------------------------------------------------------------- evaluate


def test_evaluate_ships_no_metric_to_load_offline(tmp_path: Path, monkeypatch) -> None:
    """Why GSM8K and MMLU accuracy do not go through `evaluate` (README, "Quality"): its wheel holds the
    loader only, so `evaluate.load("exact_match")` or ("accuracy") needs the Hub's script. If a release
    bundles them, this fails: then reconsider."""
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.chdir(tmp_path)  # a folder named like the metric must not be found instead
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    for metric in ("exact_match", "accuracy"):
        with pytest.raises(FileNotFoundError, match=f"Couldn't find a module script at .*{metric}"):
            evaluate.load(metric)


def test_a_run_decodes_each_task_to_its_budget_and_stores_it(tmp_path: Path) -> None:
    import yaml
    from tiny import tiny_pair_config
    from typer.testing import CliRunner

    from cos_bench.cli import app

    data = tiny_pair_config(
        tmp_path,
        name="budgets",
        methods=["vanilla", "cos"],
        gamma={"small": 2},
        tasks=["humaneval", "gsm8k"],
        max_new_tokens={"gsm8k": 3, "humaneval": 5},
    )
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {(r["task"], r["max_new_tokens"]) for r in records} == {("humaneval", 5), ("gsm8k", 3)}
    assert all(r["new_tokens"] <= r["max_new_tokens"] for r in records)
    assert all(r["stop_reason"] == "max_new_tokens" for r in records if r["new_tokens"] == r["max_new_tokens"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["max_new_tokens"] == {"humaneval": 5, "gsm8k": 3, "mmlu": 64}
