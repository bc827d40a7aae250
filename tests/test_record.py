"""The result record: one definition, written and read through `to_json`/`from_json` in the file's layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cos_bench.core.records import DecodeResult, ModelAccounting
from cos_bench.record import Calibration, RunRecord, Timing
from cos_bench.storage import RECORDS_NAME
from cos_bench.tasks.base import Score

ROOT = Path(__file__).parent.parent
# Every records.jsonl committed with the repository: written by earlier versions, read by this one.
COMMITTED = sorted((ROOT / "results").glob(f"**/{RECORDS_NAME}")) + sorted((ROOT / "tests" / "data").glob(f"**/{RECORDS_NAME}"))


def _record(**changes) -> RunRecord:
    small = ModelAccounting(
        name="small",
        forward_calls=7,
        tokens_fed=30,
        forward_seconds=0.25,
        drafted=6,
        accepted=4,
        bonus_drafted=0,
        bonus_accepted=0,
        verified=6,
        alpha_sum=4.5,
        drafted_by_position=(4, 2),
        accepted_by_position=(3, 1),
    )
    large = dataclasses.replace(
        small, name="large", forward_calls=4, drafted=0, accepted=0, bonus_drafted=2, bonus_accepted=1, verified=2, alpha_sum=1.5,
        drafted_by_position=(2,), accepted_by_position=(1,),
    )  # fmt: skip
    record = RunRecord(
        key="gsm8k|e1|we-0.5|cos|0",
        run_label="demo",
        task="gsm8k",
        example_id="e1",
        setting="we-0.5",
        rule="we",
        method="cos",
        repeat=0,
        seed=1234,
        temperature=0.0,
        n_models=2,
        gammas={"small": 2, "large": 1},
        proposer="small",
        paper_setting=None,
        prompt_tokens=20,
        text="The answer is 4.",
        timing=Timing.of(total_s=1.5, first_token_s=0.25),
        accounting=DecodeResult(
            method="cos",
            token_ids=(5, 6, 7, 8, 9, 2),
            stop_reason="eos",
            models=(small, large),
            corrections=1,
            direct_samples=0,
            first_token_seconds=0.25,
            total_seconds=1.5,
        ),
        score=Score(correct=True, extracted="4", verdict="correct", detail=""),
        calibration=Calibration(step_seconds={"small": 0.01, "large": 0.04}, c=0.25, pass_tokens={"small": 2, "large": 3}, pass_cost={"small": 1.5, "large": 2.0}),
    )  # fmt: skip
    return dataclasses.replace(record, **changes)


@pytest.mark.parametrize("sweep", [{}, {"gamma.small": 3, "pair": [3, 1]}])
def test_a_record_round_trips_through_json(sweep):
    record = _record(sweep=sweep)
    line = json.dumps(record.to_json(), ensure_ascii=False, allow_nan=True)
    assert RunRecord.from_json(json.loads(line)) == record


def test_the_json_keeps_the_layout_earlier_versions_wrote():
    row = _record().to_json()
    assert list(row) == [
        "key", "run_label", "task", "example_id", "setting", "rule", "method", "repeat", "seed", "temperature",
        "n_models", "gammas", "proposer", "paper_setting", "prompt_tokens", "new_tokens", "token_ids", "text",
        "stop_reason", "timing", "accounting", "score", "calibration",
    ]  # fmt: skip
    assert row["new_tokens"] == 6 and row["token_ids"] == [5, 6, 7, 8, 9, 2] and row["stop_reason"] == "eos"
    assert row["timing"] == {"total_s": 1.5, "first_token_s": 0.25, "decode_s": 1.25}
    assert "sweep" not in row and _record(sweep={"gamma": 3}).to_json()["sweep"] == {"gamma": 3}


def test_the_first_token_never_outlasts_the_decode():
    assert Timing.of(total_s=1.0, first_token_s=1.0000001) == Timing(total_s=1.0, first_token_s=1.0)
    assert Timing.of(total_s=1.0, first_token_s=1.0000001).decode_s == 0.0


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_records_load_and_write_back_unchanged(path):
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines
    for line in lines:
        written = RunRecord.from_json(line).to_json()
        assert written == line and list(written) == list(line), line["key"]


def test_records_without_pass_cost_keep_their_calibration_as_written():
    row = _record(calibration=Calibration(step_seconds={"small": 0.01, "large": 0.04}, c=0.25)).to_json()
    assert row["calibration"] == {"step_seconds": {"small": 0.01, "large": 0.04}, "c": 0.25}
