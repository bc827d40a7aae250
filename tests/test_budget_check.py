"""scripts/budget_check.py sorts budget-cut decodes into loops and the rest, from hand-made token ids."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from script_loader import load_script

from cos_bench.record import RunRecord
from cos_bench.storage import RECORDS_NAME

SMALL_RUN = Path(__file__).parent / "data" / "small_run"


script = load_script("budget_check")


@pytest.mark.parametrize(
    ("ids", "span", "loop"),
    [
        ([1, 2, 3] * 20, 32, True),  # a 3-token cycle: the last 32 tokens occur one cycle earlier
        (list(range(100)) + list(range(60, 100)), 32, True),  # a 40-token block written twice
        (list(range(100)), 32, False),  # no repeat
        (list(range(40)) + [7] * 3, 32, False),  # too short a repeat for the span
        ([5] * 32, 32, False),  # exactly one span: nothing earlier to match
        ([5] * 33, 32, True),
    ],
)
def test_a_loop_is_a_final_span_seen_before(ids, span, loop):
    assert script.ends_in_a_loop(ids, span) is loop


def _record(stop_reason: str, answered: bool | None, ids: list[int]) -> RunRecord:
    row = json.loads((SMALL_RUN / RECORDS_NAME).read_text().splitlines()[0])
    record = RunRecord.from_json(row)
    accounting = dataclasses.replace(record.accounting, stop_reason=stop_reason, token_ids=tuple(ids))
    return dataclasses.replace(record, accounting=accounting, score=dataclasses.replace(record.score, answered=answered))


def test_outcomes_name_why_a_decode_ended():
    looping, straight = [1, 2, 3] * 20, list(range(60))
    assert script.outcome(_record("eos", False, straight), 32) == "stopped"
    assert script.outcome(_record("max_new_tokens", True, looping), 32) == "answered before the budget"
    assert script.outcome(_record("max_new_tokens", False, looping), 32) == "cut, looping"
    assert script.outcome(_record("max_new_tokens", False, straight), 32) == "cut, other"
    assert script.outcome(_record("max_new_tokens", None, straight), 32) == "cut, unmarked"
