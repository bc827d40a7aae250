"""The result record: one finished decode, as `run.run_job` builds it and records.jsonl stores it.

Defined once here, beside `storage` (which only moves it to and from disk) and read by
`metrics` and the progress bar through its named fields. `to_json`/`from_json` keep the
file layout every earlier version wrote, so committed results still load unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cos_bench.core.records import DecodeResult, ModelAccounting
from cos_bench.tasks.base import Score


def arm_method_name(method: str, arm: str) -> str:
    """How keys, the progress line and plots name a method's decodes: "cos", or an arm's "cos[confidence-0.4]"."""
    return f"{method}[{arm}]" if arm else method


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of one decode, read on a synchronised device (`timing.timed`)."""

    total_s: float  # whole decode, prefill included
    first_token_s: float  # prefill + first committed token

    @classmethod
    def of(cls, total_s: float, first_token_s: float) -> Timing:
        # The first token is timed by the loop's own clock, the total by `timed`; clamp so that
        # decode_s is never negative when the two clocks disagree by a hair.
        return cls(total_s=total_s, first_token_s=min(first_token_s, total_s))

    @property
    def decode_s(self) -> float:
        """Decode-only seconds: everything after the first token."""
        return self.total_s - self.first_token_s


@dataclass(frozen=True)
class Calibration:
    """The run's calibration as it applied to this decode (`run.calibrate`)."""

    step_seconds: Mapping[str, float]  # per model: one single-token forward step
    c: float | None  # proposer step / verifier step
    # Per model: tokens of the verification pass and ρ, its cost in steps; None in records
    # written before they were measured.
    pass_tokens: Mapping[str, int] | None = None
    pass_cost: Mapping[str, float] | None = None


@dataclass(frozen=True)
class RunRecord:
    """One decode of one prompt by one method, with where it came from and what it scored.

    Generated ids, their count and the stop reason are the core's (`accounting`); they are
    written beside it as well only because the file layout has always had them there.
    """

    key: str  # storage.record_key
    run_label: str
    task: str
    example_id: str
    setting: str  # combination label, e.g. "we-0.5"
    rule: str
    method: str
    repeat: int
    seed: int
    temperature: float
    n_models: int
    gammas: Mapping[str, int]
    proposer: str
    paper_setting: str | None
    prompt_tokens: int
    text: str
    timing: Timing
    accounting: DecodeResult
    score: Score
    calibration: Calibration
    sweep: Mapping[str, Any] = field(default_factory=dict)  # swept parameter -> value, sweep cells only
    # The hf-ensemble variants only: how transformers' assistant drafted (methods.hf_ensemble.Drafting's fields).
    hf_drafting: Mapping[str, Any] | None = None
    max_new_tokens: int | None = None  # the token budget it ran under; None in records from before it was stored
    draft: str = "fixed"  # the draft-length policy's label (config.DraftSpec.label); records before policies: fixed
    arm: str = ""  # config.Arm.label for an arm's decodes ("gamma.small=3", "confidence-0.4"); "" for the run's own methods

    @property
    def new_tokens(self) -> int:
        return len(self.accounting.token_ids)

    @property
    def token_ids(self) -> tuple[int, ...]:
        return self.accounting.token_ids

    @property
    def stop_reason(self) -> str:
        return self.accounting.stop_reason

    @property
    def reached_answer(self) -> bool:
        """Stopped on its own (end of sequence, a stop string) or stated the task's answer before the
        budget (Score.answered): a decode whose quality the budget did not decide."""
        return self.stop_reason != "max_new_tokens" or self.score.answered is True

    def to_json(self) -> dict[str, Any]:
        """The JSON object of one records.jsonl line, keys in the order the file has always had."""
        row: dict[str, Any] = {
            "key": self.key,
            "run_label": self.run_label,
            "task": self.task,
            "example_id": self.example_id,
            "setting": self.setting,
            "rule": self.rule,
            "method": self.method,
            "repeat": self.repeat,
            "seed": self.seed,
            "temperature": self.temperature,
            "n_models": self.n_models,
            "gammas": dict(self.gammas),
            "proposer": self.proposer,
            "paper_setting": self.paper_setting,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "token_ids": list(self.token_ids),
            "text": self.text,
            "stop_reason": self.stop_reason,
            "timing": {"total_s": self.timing.total_s, "first_token_s": self.timing.first_token_s, "decode_s": self.timing.decode_s},
            "accounting": _accounting_json(self.accounting),
            # `answered` is left out where unknown, so records from before it existed write back unchanged.
            "score": {k: v for k, v in asdict(self.score).items() if not (k == "answered" and v is None)},
            "calibration": _calibration_json(self.calibration),
        }
        if self.sweep:
            row["sweep"] = dict(self.sweep)
        if self.hf_drafting is not None:
            row["hf_drafting"] = dict(self.hf_drafting)
        if self.max_new_tokens is not None:
            row["max_new_tokens"] = self.max_new_tokens
        if self.draft != "fixed":  # left out for fixed, as every line before draft policies was written
            row["draft"] = self.draft
        if self.arm:  # left out for the run's own methods, as every line before arms was written
            row["arm"] = self.arm
        return row

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> RunRecord:
        """A record from one parsed line; KeyError or TypeError names what a foreign record lacks."""
        return cls(
            key=row["key"],
            run_label=row["run_label"],
            task=row["task"],
            example_id=row["example_id"],
            setting=row["setting"],
            rule=row["rule"],
            method=row["method"],
            repeat=row["repeat"],
            seed=row["seed"],
            temperature=row["temperature"],
            n_models=row["n_models"],
            gammas=dict(row["gammas"] or {}),
            proposer=row["proposer"],
            paper_setting=row.get("paper_setting"),
            prompt_tokens=row["prompt_tokens"],
            text=row["text"],
            # decode_s is not read back: it is total − first token by definition.
            timing=Timing(total_s=row["timing"]["total_s"], first_token_s=row["timing"]["first_token_s"]),
            accounting=_accounting_from_json(row["accounting"]),
            score=Score(**row["score"]),
            calibration=_calibration_from_json(row["calibration"]),
            sweep=_sweep_from_json(row),
            hf_drafting=row.get("hf_drafting"),
            max_new_tokens=row.get("max_new_tokens"),
            draft=row.get("draft", "fixed"),
            arm=row.get("arm", ""),
        )


def _accounting_json(result: DecodeResult) -> dict[str, Any]:
    # JSON has no tuples: the lists are built here so the object equals a parsed line, not just its text.
    row = asdict(result)
    row["token_ids"] = list(result.token_ids)
    row["models"] = [
        {**model, "drafted_by_position": list(model["drafted_by_position"]), "accepted_by_position": list(model["accepted_by_position"])}
        for model in row["models"]
    ]
    return row


def _accounting_from_json(row: Mapping[str, Any]) -> DecodeResult:
    models = tuple(
        ModelAccounting(
            **{
                **model,
                "drafted_by_position": tuple(model["drafted_by_position"]),
                "accepted_by_position": tuple(model["accepted_by_position"]),
            }
        )
        for model in row["models"]
    )
    return DecodeResult(**{**row, "token_ids": tuple(row["token_ids"]), "models": models})


def _calibration_json(calibration: Calibration) -> dict[str, Any]:
    # Unmeasured fields are left out, as the versions before them wrote the line.
    row: dict[str, Any] = {"step_seconds": dict(calibration.step_seconds), "c": calibration.c}
    if calibration.pass_tokens is not None:
        row["pass_tokens"] = dict(calibration.pass_tokens)
    if calibration.pass_cost is not None:
        row["pass_cost"] = dict(calibration.pass_cost)
    return row


def _calibration_from_json(row: Mapping[str, Any]) -> Calibration:
    return Calibration(
        step_seconds=dict(row.get("step_seconds") or {}),
        c=row.get("c"),
        pass_tokens=row.get("pass_tokens"),
        pass_cost=row.get("pass_cost"),
    )


def _sweep_from_json(row: Mapping[str, Any]) -> dict[str, Any]:
    # Sweep cells carry `sweep: {param: value}`; early ones wrote a flat sweep_param/sweep_value pair.
    sweep = dict(row.get("sweep") or {})
    if row.get("sweep_param") is not None:
        sweep.setdefault(row["sweep_param"], row.get("sweep_value"))
    return sweep
