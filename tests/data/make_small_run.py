"""Writes tests/data/small_run/: a tiny hand-made results folder with known numbers.

Run `python tests/data/make_small_run.py` after changing it; the tests read the
written files and compare against numbers worked out by hand from the tables below.

Models "small" (proposer, γ=2) and "large" (γ=1); WE λ=0.5, T=0; c = 0.01/0.04 = 0.25.
Two tasks × vanilla/sd/cos × two prompts (e1: 100 tokens, e2: 60 tokens), repeat 0.

Seconds (total_s; first token always 0.1 s):
              gsm8k e1  gsm8k e2   humaneval e1  humaneval e2
    vanilla     2.0       2.0         4.0           2.0
    sd          1.0       1.5         2.0           1.2
    cos         0.8       1.0         1.25          1.0

Accounting (the same for both tasks except cos's α sums):
    sd  e1: small drafted 90 accepted 70 verified 90 alpha_sum 63, by position drafted [50,40] accepted [40,30];
            corrections 30; calls small 90, large 50
    sd  e2: small drafted 50 accepted 40 verified 50 alpha_sum 35, by position [30,20]/[25,15];
            corrections 20; calls small 50, large 30
    cos e1: small drafted 80 accepted 60 verified 80, by position [50,30]/[40,20];
            large bonus_drafted 20 bonus_accepted 15 verified 20, by position [20]/[15];
            corrections 25; calls small 60, large 45
    cos e2: small drafted 40 accepted 36 verified 40, by position [25,15]/[22,14];
            large bonus_drafted 10 bonus_accepted 8 verified 10, by position [10]/[8];
            corrections 16; calls small 30, large 25
    cos alpha_sum (small e1, large e1, small e2, large e2): gsm8k 64,14,34,8 (α=0.8); humaneval 56,12,30,7 (α=0.7)
    vanilla: every model one call per token, no drafts; direct_samples = tokens.

Forward seconds (time inside model calls): small 0.2 × total and large 0.6 × total for e1,
small 0.1 × total and large 0.4 × total for e2 (so loop overhead = Σ total / (0.8 t1 + 0.5 t2)).

Correct: gsm8k vanilla/sd e1 True e2 False, cos both True; humaneval e1 True, e2 None (unscored) for all.
Token ids: range(tokens); humaneval cos e2 differs from vanilla in its last token.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent / "small_run"
TOKENS = {"e1": 100, "e2": 60}
SECONDS = {
    ("gsm8k", "vanilla"): (2.0, 2.0),
    ("gsm8k", "sd"): (1.0, 1.5),
    ("gsm8k", "cos"): (0.8, 1.0),
    ("humaneval", "vanilla"): (4.0, 2.0),
    ("humaneval", "sd"): (2.0, 1.2),
    ("humaneval", "cos"): (1.25, 1.0),
}
FORWARD_SHARES = {"e1": (0.2, 0.6), "e2": (0.1, 0.4)}  # per model: forward seconds / total seconds
COS_ALPHA_SUMS = {"gsm8k": (64.0, 14.0, 34.0, 8.0), "humaneval": (56.0, 12.0, 30.0, 7.0)}


def model(
    name,
    calls,
    tokens_fed,
    drafted=0,
    accepted=0,
    bonus_drafted=0,
    bonus_accepted=0,
    verified=0,
    alpha_sum=0.0,
    drafted_at=(),
    accepted_at=(),
):
    return {
        "name": name,
        "forward_calls": calls,
        "tokens_fed": tokens_fed,
        "forward_seconds": 0.0,
        "drafted": drafted,
        "accepted": accepted,
        "bonus_drafted": bonus_drafted,
        "bonus_accepted": bonus_accepted,
        "verified": verified,
        "alpha_sum": alpha_sum,
        "drafted_by_position": list(drafted_at),
        "accepted_by_position": list(accepted_at),
    }


def accounting(task, method, example, tokens):
    """(models, corrections, direct_samples) as in the module docstring."""
    if method == "vanilla":
        return [model("small", tokens, tokens), model("large", tokens, tokens)], 0, tokens
    if method == "sd":
        if example == "e1":
            return [model("small", 90, 90, 90, 70, 0, 0, 90, 63.0, [50, 40], [40, 30]), model("large", 50, 140)], 30, 0
        return [model("small", 50, 50, 50, 40, 0, 0, 50, 35.0, [30, 20], [25, 15]), model("large", 30, 80)], 20, 0
    sums = COS_ALPHA_SUMS[task]
    if example == "e1":
        return (
            [
                model("small", 60, 100, 80, 60, 0, 0, 80, sums[0], [50, 30], [40, 20]),
                model("large", 45, 100, 0, 0, 20, 15, 20, sums[1], [20], [15]),
            ],
            25,
            0,
        )
    return (
        [
            model("small", 30, 50, 40, 36, 0, 0, 40, sums[2], [25, 15], [22, 14]),
            model("large", 25, 50, 0, 0, 10, 8, 10, sums[3], [10], [8]),
        ],
        16,
        0,
    )


def correct(task, method, example):
    if task == "humaneval":
        return True if example == "e1" else None
    return True if (method == "cos" or example == "e1") else False


def record(task, method, example):
    tokens = TOKENS[example]
    total = SECONDS[(task, method)][0 if example == "e1" else 1]
    token_ids = list(range(tokens))
    if (task, method, example) == ("humaneval", "cos", "e2"):
        token_ids[-1] = 999
    models, corrections, direct = accounting(task, method, example, tokens)
    for entry, share in zip(models, FORWARD_SHARES[example]):
        entry["forward_seconds"] = round(share * total, 6)
    is_correct = correct(task, method, example)
    return {
        "key": f"{task}|{example}|we-0.5|{method}|0",
        "run_label": "small",
        "task": task,
        "example_id": example,
        "setting": "we-0.5",
        "rule": "we",
        "method": method,
        "repeat": 0,
        "seed": 0,
        "temperature": 0.0,
        "n_models": 2,
        "gammas": {"small": 2, "large": 1},
        "proposer": "small",
        "paper_setting": "qwen-1.5b-we",
        "prompt_tokens": 20,
        "new_tokens": tokens,
        "token_ids": token_ids,
        "text": "…",
        "stop_reason": "eos",
        "timing": {"total_s": total, "first_token_s": 0.1, "decode_s": total - 0.1},
        "accounting": {
            "method": method,
            "token_ids": token_ids,
            "stop_reason": "eos",
            "models": models,
            "corrections": corrections,
            "direct_samples": direct,
            "first_token_seconds": 0.1,
            "total_seconds": total,
        },
        "score": {
            "correct": is_correct,
            "extracted": None,
            "verdict": "unscored" if is_correct is None else ("correct" if is_correct else "wrong"),
            "detail": "",
        },
        "calibration": {"step_seconds": {"small": 0.01, "large": 0.04}, "c": 0.25},
    }


def main() -> None:
    HERE.mkdir(exist_ok=True)
    lines = [
        json.dumps(record(task, method, example))
        for task in ("gsm8k", "humaneval")
        for method in ("vanilla", "sd", "cos")
        for example in ("e1", "e2")
    ]
    (HERE / "records.jsonl").write_text("\n".join(lines) + "\n")
    manifest = {
        "config": {"note": "hand-made test fixture"},
        "versions": {},
        "hardware": {},
        "git_revision": None,
        "models": [{"name": "small"}, {"name": "large"}],
        "prompt_format_version": "test",
        "created": "2026-01-01T00:00:00+00:00",
        "calibration": {"step_seconds": {"small": 0.01, "large": 0.04}, "c": 0.25, "c_how": "fixture", "proposer": "small"},
    }
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
