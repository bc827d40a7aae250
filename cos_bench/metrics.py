"""Aggregate per-decode records into one summary row per configuration.

Input is `load_records`'s flat frame, one row per stored `RunRecord`. A configuration is a run, task,
setting, temperature, method, proposer and γ values (plus sweep values for sweep
cells); every comparison with `vanilla` is within the same run, task, setting
and temperature. `COLUMN_DOCS` says how each column is computed; the report
prints it, so the definitions live in one place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cos_bench import theory
from cos_bench.core import DRAFT_POLICY_METHODS
from cos_bench.paper import paper_speedup
from cos_bench.record import RunRecord
from cos_bench.storage import read_runs

METHOD_ORDER = theory.KNOWN_METHODS  # report order = registry order (cos_bench.methods.METHOD_NAMES)
GROUP_KEYS = ("run", "task", "setting", "temperature", "method", "arm", "proposer", "gammas_label", "draft")
COMPARE_KEYS = ("run", "task", "setting", "temperature")  # where the vanilla reference is looked for
FORWARD_CALLS_PREFIX = "forward_calls."  # per-model record columns written by flatten_record
DRAFT_TOKENS_PREFIX, DRAFT_RUNS_PREFIX = "draft_tokens.", "draft_runs."  # per model too: drafts (bonus included), runs
SWEEP_PREFIX = "sweep_"  # one column per swept parameter, written by flatten_record

COLUMN_DOCS: dict[str, str] = {
    "n_examples": "measured: distinct prompts",
    "n_records": "measured: decodes (prompts × repeats)",
    "tokens": "measured: Σ generated tokens",
    "seconds": "measured: Σ end-to-end decode seconds (prefill included)",
    "tokens_per_s_pooled": "measured: Σ tokens / Σ seconds",
    "tokens_per_s_mean": "measured: mean over decodes of tokens/seconds (the paper's figure)",
    "tokens_per_s_std": "measured: standard deviation of the per-decode rates",
    "tokens_per_s_repeat_std": "measured: standard deviation over repeats of each repeat's mean rate (n/a with one repeat)",
    "decode_tokens_per_s_pooled": "measured: Σ (tokens − 1) / Σ decode-only seconds (first token excluded)",
    "first_token_s_mean": "measured: mean seconds to the first token (prefill + one step)",
    "speedup_pooled": "measured: tokens_per_s_pooled / the same of vanilla",
    "speedup_mean": "measured: tokens_per_s_mean / the same of vanilla",
    "speedup_repeat_std": "measured: standard deviation over repeats of the per-repeat speedup_mean",
    "speedup_prompt_se": (
        "measured: standard error over prompts of the per-prompt speedup (that prompt's mean rate / vanilla's on the "
        "same prompt); the scale of speedup_mean's sampling noise"
    ),
    "alpha_expected": "measured: α = Σ over verified drafts of Σ_x min(draft(x), combined(x)) / their number, all models pooled",
    "alpha_empirical": "measured: accepted drafts / drafted tokens, verifier bonus drafts included, all models pooled",
    "mean_accepted_length": (
        "measured: accepted drafts (bonus included) per rejection-or-end event, "
        "= Σ accepted / (Σ corrections + decodes); the mean length of an unbroken accepted streak"
    ),
    "acceptance_by_position": "measured: accepted / drafted at draft position 1, 2, … (position 1 opens a proposal run), all models pooled",
    "c": "measured: median over decodes of c = proposer step time / verifier step time (calibration)",
    "pass_cost": (
        "measured: median over decodes of ρ = the verifier's (γq+1)-token forward pass time / its single-step time "
        "(calibration; γq = the default proposer's γ); n/a with n > 2 models or records from before it was measured"
    ),
    "theoretical_speedup": (
        "computed from measured α (alpha_expected), c and γ: Thm 3.1 for sd, Thm 3.6 for 2-model cos, as the paper "
        "states them (a (γq+1)-token verification pass costs one step); n/a where the paper has no formula, "
        "and under an adaptive draft policy (the theorems assume every run is γ long)"
    ),
    "mean_draft_length": (
        "measured, per model: tokens it drafted (bonus included) / proposal runs it opened, i.e. the mean length of "
        "its drafting rounds; the configured γ under the fixed policy, except where the token budget cut a run"
    ),
    "draft": "the draft-length policy of sd and cos, with its parameters (fixed = γ every run; docs/design.md §9)",
    "arm": (
        "what an arm (config `arms:`) changes from the run's own γ and draft policy, e.g. gamma.small=3 or confidence-0.4; "
        "arms decode the same prompts right after the run's methods and compare with the same vanilla decodes"
    ),
    "theoretical_speedup_measured_pass": (
        "computed: the same expectation with the verification pass charged its measured cost ρ (pass_cost) instead of "
        "one step: E(1 + c)/(ρ + cγ) for sd, E(1 + c)/(ρ + cγq − α^γp·c) for 2-model cos, E = (1 − α^γq)/(1 − α); "
        "n/a where the paper has no formula or ρ was not measured"
    ),
    "speedup_decode": ("measured: decode-only rate (first token and prefill excluded) / the same of vanilla — what the theorems model"),
    "measured_over_theoretical": (
        "computed: speedup_decode / theoretical_speedup (the theorems model decoding steps, not the prefill every method pays alike)"
    ),
    "measured_over_theoretical_measured_pass": "computed: speedup_decode / theoretical_speedup_measured_pass",
    "framework_overhead": (
        "measured, vanilla only: decode seconds per token (first token excluded) / Σ the models' single-step "
        "forward times from calibration (each model alone, its cache cropped back to the prompt); 1.0 = no cost "
        "beyond the forward passes as calibrated. It also counts forwards that run slower in the decode than in "
        "calibration (models taking turns, a growing cache, the host's speed drifting): `loop overhead` isolates "
        "the loop, scripts/decode_step_probe.py times the rest"
    ),
    "loop_overhead": (
        "measured: Σ end-to-end seconds / Σ seconds inside the models' forward calls, same decodes, prefill "
        "included; what the decoding loop (combining, sampling, verifying, bookkeeping) adds, free of calibration noise"
    ),
    "quality": "measured: share of scored decodes judged correct (pass@1 for code)",
    "quality_vs_vanilla": (
        "measured: quality minus vanilla's on the same prompts and repeats (both scored), mean over prompts; "
        "0 in expectation for sd and cos, whose output is distributed exactly as vanilla's"
    ),
    "quality_vs_vanilla_se": "measured: standard error over prompts of quality_vs_vanilla (each prompt's difference averaged over repeats)",
    "max_new_tokens": "the token budget of these decodes (the config's max_new_tokens, else the task's own); n/a in records from before it was stored",
    "stopped_on_own": "measured: share of decodes that ended by end-of-sequence or a stop string rather than at max_new_tokens",
    "reached_answer": (
        "measured: share of decodes the token budget did not cut short of an answer: stopped on their own, or stated "
        "the task's answer before the budget (GSM8K an explicit final answer such as 'The answer is N', MMLU a letter); "
        "for HumanEval, and records from before answers were marked, the stopped share"
    ),
    "identical_to_vanilla": "measured, T=0 only: share of decodes whose token ids equal vanilla's for the same prompt and repeat",
    "paper_speedup": "from the paper (docs/design.md §5): CoS over vanilla, where the run names a paper setting",
}


# --- records as rows ----------------------------------------------------------------


def load_records(folders: Sequence[Path]) -> pd.DataFrame:
    """All records of the given results folders as one flat DataFrame, one row per record; `run` is the folder name."""
    return pd.DataFrame([flatten_record(stored.record, run=stored.run) for stored in read_runs(folders)])


def flatten_record(record: RunRecord, run: str) -> dict[str, Any]:
    """One record as flat columns.

    Per-model accounting is pooled over models (drafted, accepted, verified,
    alpha_sum, by-position lists, forward seconds as `forward_s`) except forward calls, kept per model as
    `forward_calls.<model>`; the sweep dict becomes `sweep_<param>` columns.
    """
    models = record.accounting.models
    calibration = record.calibration
    row: dict[str, Any] = {
        "run": run,
        "key": record.key,
        "run_label": record.run_label,
        "task": record.task,
        "example_id": str(record.example_id),
        "setting": record.setting,
        "rule": record.rule,
        "method": record.method,
        "arm": record.arm,
        "repeat": record.repeat,
        "seed": record.seed,
        "temperature": float(record.temperature),
        "n_models": record.n_models,
        "proposer": record.proposer,
        "draft": record.draft,
        "prompt_tokens": record.prompt_tokens,
        "new_tokens": record.new_tokens,
        "token_ids": list(record.token_ids),
        "text": record.text,
        "stop_reason": record.stop_reason,
        "max_new_tokens": math.nan if record.max_new_tokens is None else record.max_new_tokens,
        "paper_setting": record.paper_setting,
        "gammas": dict(record.gammas),
        # The peer's drafting is its γ: records that drafted differently (another transformers version's defaults) never pool.
        "gammas_label": gammas_label(record.gammas, record.proposer) if record.hf_drafting is None else drafting_label(record.hf_drafting),
        "total_s": float(record.timing.total_s),
        "first_token_s": float(record.timing.first_token_s),
        "decode_s": float(record.timing.decode_s),
        "correct": record.score.correct,
        "extracted": record.score.extracted,
        "verdict": record.score.verdict,
        "score_detail": record.score.detail,
        "reached_answer": record.reached_answer,
        "c": math.nan if calibration.c is None else float(calibration.c),
        "step_seconds": dict(calibration.step_seconds),
        "pass_cost": dict(calibration.pass_cost or {}),  # per model; {} in records from before it was measured
        "hf_drafting": None if record.hf_drafting is None else dict(record.hf_drafting),  # the hf-ensemble variants only
    }
    for field in ("drafted", "accepted", "bonus_drafted", "bonus_accepted", "verified", "alpha_sum"):
        row[field] = sum(getattr(model, field) for model in models)
    # Drafts of every kind (bonus included), as the core counts them: `alpha_empirical` is their ratio.
    row["drafted_tokens"] = record.accounting.drafted_tokens
    row["accepted_tokens"] = record.accounting.accepted_tokens
    row["drafted_by_position"] = sum_position_counts(model.drafted_by_position for model in models)
    row["accepted_by_position"] = sum_position_counts(model.accepted_by_position for model in models)
    row["forward_s"] = sum(float(model.forward_seconds) for model in models)
    row["corrections"] = record.accounting.corrections
    row["direct_samples"] = record.accounting.direct_samples
    for model in models:
        row[FORWARD_CALLS_PREFIX + model.name] = model.forward_calls
        row[DRAFT_TOKENS_PREFIX + model.name] = model.drafted + model.bonus_drafted
        row[DRAFT_RUNS_PREFIX + model.name] = model.draft_runs
    for param, value in record.sweep.items():
        # Lists (e.g. a γ pair) become JSON text so they can be grouped on.
        row[SWEEP_PREFIX + param] = value if value is None or isinstance(value, (str, int, float)) else json.dumps(value)
    return row


def gammas_label(gammas: Mapping[str, int], proposer: str) -> str:
    """γ values as "5,1": the proposer's first, then the others in their stored order."""
    return ",".join(str(g) for g in ordered_gammas(gammas, proposer))


def drafting_label(drafting: Mapping[str, Any]) -> str:
    """An hf-ensemble variant's drafting as "20, cut 0.4": the first round's length, the schedule unless
    constant, and the drafter confidence below which a round is cut short (none for 0)."""
    schedule, cut = drafting["num_assistant_tokens_schedule"], drafting["assistant_confidence_threshold"]
    return f"{drafting['num_assistant_tokens']}" + ("" if schedule == "constant" else f" {schedule}") + (f", cut {cut:g}" if cut else "")


def ordered_gammas(gammas: Mapping[str, int], proposer: str) -> list[int]:
    """γ values ordered [proposer's, others...] as the theory functions expect."""
    first = [int(gammas[proposer])] if proposer in gammas else []
    return first + [int(g) for name, g in gammas.items() if name != proposer]


def sum_position_counts(lists: Iterable[Sequence[int]]) -> list[int]:
    """Element-wise sum of per-position counts of different lengths (missing positions count 0)."""
    total: list[int] = []
    for values in lists:
        for index, value in enumerate(values):
            if index == len(total):
                total.append(0)
            total[index] += value
    return total


# --- the summary ------------------------------------------------------------------------


def forward_calls_column(model: str) -> str:
    """The summary column holding Σ forward calls of `model` per generated token."""
    return f"forward_calls_per_token_{model}"


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, task, setting, temperature, method, arm, proposer, γ[, sweep values]), in report order."""
    keys = list(GROUP_KEYS) + sweep_columns(df)
    models = [c[len(FORWARD_CALLS_PREFIX) :] for c in df.columns if c.startswith(FORWARD_CALLS_PREFIX)]
    rows = []
    for _, group in df.groupby(keys, sort=False, dropna=False):
        reference = _vanilla_reference(df, group.iloc[0], keys)
        row = {key: group.iloc[0][key] for key in keys}
        row.update(_descriptive_columns(group))
        row.update(_speed_columns(group))
        row.update(_comparison_columns(group, reference))
        row.update(_acceptance_columns(group))
        row.update(_cost_columns(group, models))
        row.update(_draft_length_columns(group, models))
        row.update(_theory_columns(row, group))
        row["quality"] = _quality(group["correct"]) if "correct" in group else math.nan
        row.update(_quality_difference(group, reference))
        row["max_new_tokens"] = group["max_new_tokens"].max() if group["max_new_tokens"].notna().any() else math.nan
        row["stopped_on_own"] = float((group["stop_reason"] != "max_new_tokens").mean())
        row["reached_answer"] = float(group["reached_answer"].mean())
        row["identical_to_vanilla"] = _identical_share(group, reference)
        row["paper_speedup"] = _paper_column(row)
        rows.append(row)
    return sort_summary(pd.DataFrame(rows))


def arm_rows(frame: pd.DataFrame) -> pd.Series:
    """Which rows are arms' (config `arms:`); all False for a frame from before arms (no `arm` column)."""
    return frame["arm"] != "" if "arm" in frame else pd.Series(False, index=frame.index)


def sweep_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(c for c in frame.columns if c.startswith(SWEEP_PREFIX))


def sort_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """Report order: task, setting, temperature, method (vanilla, sd, cos, hf-ensemble, then others), then the rest.

    Runs keep the order they first appear in (the order the folders were given).
    """
    order = ["task", "setting", "temperature", "method", "arm", "run", "proposer", "gammas_label", "draft"] + sweep_columns(summary)
    method_rank = {method: i for i, method in enumerate(METHOD_ORDER)}
    run_rank = {run: i for i, run in enumerate(pd.unique(summary["run"]))}

    def sort_key(column: pd.Series) -> pd.Series:
        if column.name == "method":
            return column.map(lambda m: f"{method_rank.get(m, len(method_rank)):02d}{m}")
        if column.name == "run":
            return column.map(run_rank)
        return column

    return summary.sort_values(order, key=sort_key, na_position="last", kind="stable").reset_index(drop=True)


# --- column groups ------------------------------------------------------------------


def _descriptive_columns(group: pd.DataFrame) -> dict:
    first = group.iloc[0]
    settings = group["paper_setting"].dropna()
    return {
        "rule": first["rule"],
        "n_models": int(first["n_models"]),
        "gammas": first["gammas"],
        "paper_setting": settings.iloc[0] if len(settings) else None,
    }


def _speed_columns(group: pd.DataFrame) -> dict:
    rates = _rates(group)
    tokens = int(group["new_tokens"].sum())
    seconds = float(group["total_s"].sum())
    per_repeat = rates.groupby(group["repeat"]).mean()
    return {
        "n_examples": int(group["example_id"].nunique()),
        "n_records": len(group),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s_pooled": _ratio(tokens, seconds),
        "tokens_per_s_mean": float(rates.mean()),
        "tokens_per_s_std": _std(rates),
        "tokens_per_s_repeat_std": _std(per_repeat),
        "decode_tokens_per_s_pooled": _decode_rate(group),
        "first_token_s_mean": float(group["first_token_s"].mean()),
    }


def _comparison_columns(group: pd.DataFrame, reference: pd.DataFrame) -> dict:
    if reference.empty:
        return {
            "speedup_pooled": math.nan,
            "speedup_mean": math.nan,
            "speedup_repeat_std": math.nan,
            "speedup_prompt_se": math.nan,
            "speedup_decode": math.nan,
        }
    pooled = _ratio(group["new_tokens"].sum(), group["total_s"].sum())
    vanilla_pooled = _ratio(reference["new_tokens"].sum(), reference["total_s"].sum())
    rates, vanilla_rates = _rates(group), _rates(reference)
    return {
        "speedup_pooled": _ratio(pooled, vanilla_pooled),
        "speedup_mean": _ratio(rates.mean(), vanilla_rates.mean()),
        "speedup_repeat_std": _std(paired_speedups(group, reference, "repeat")),
        # Paired by prompt: prompts differ far more in length and difficulty than methods do, so pairing
        # takes that spread out of the noise estimate.
        "speedup_prompt_se": standard_error(paired_speedups(group, reference, "example_id")),
        "speedup_decode": _ratio(_decode_rate(group), _decode_rate(reference)),
    }


def paired_speedups(group: pd.DataFrame, reference: pd.DataFrame, by: str) -> pd.Series:
    """Tokens/s of `group`'s records ÷ the same of `reference`'s (vanilla's), each averaged per `by`
    (a prompt's example_id, or a repeat); keys missing on either side drop out."""
    return (_rates(group).groupby(group[by]).mean() / _rates(reference).groupby(reference[by]).mean()).dropna()


def _decode_rate(group: pd.DataFrame) -> float:
    """Σ (tokens − 1) / Σ decode-only seconds: the rate after the first token."""
    return _ratio(float((group["new_tokens"] - 1).clip(lower=0).sum()), float(group["decode_s"].sum()))


def _acceptance_columns(group: pd.DataFrame) -> dict:
    drafted = group["drafted_tokens"].sum()
    accepted = group["accepted_tokens"].sum()
    streak_ends = group["corrections"].sum() + len(group)  # every rejection, plus the end of each decode
    drafted_at = sum_position_counts(group["drafted_by_position"])
    accepted_at = sum_position_counts(group["accepted_by_position"])
    accepted_at += [0] * (len(drafted_at) - len(accepted_at))
    return {
        "alpha_expected": _ratio(group["alpha_sum"].sum(), group["verified"].sum()),
        "alpha_empirical": _ratio(accepted, drafted),
        "mean_accepted_length": _ratio(accepted, streak_ends) if drafted else math.nan,
        "acceptance_by_position": [_ratio(a, d) for a, d in zip(accepted_at, drafted_at)],
    }


def mean_draft_length_column(model: str) -> str:
    """The summary column holding `model`'s mean drafted tokens per proposal run."""
    return f"mean_draft_length_{model}"


def _draft_length_columns(group: pd.DataFrame, models: Iterable[str]) -> dict:
    # A model that opened no run (vanilla, a verifier under sd, absent from these decodes) has n/a, not 0.
    return {
        mean_draft_length_column(model): _ratio(group[DRAFT_TOKENS_PREFIX + model].sum(), group[DRAFT_RUNS_PREFIX + model].sum())
        for model in models
    }


def _cost_columns(group: pd.DataFrame, models: Iterable[str]) -> dict:
    tokens = group["new_tokens"].sum()
    columns = {}
    for model in models:
        calls = group[FORWARD_CALLS_PREFIX + model]
        # A model absent from this configuration's decodes has NaN calls: report n/a, not 0.
        columns[forward_calls_column(model)] = _ratio(calls.sum(), tokens) if calls.notna().any() else math.nan
    c_values = group["c"].dropna()
    columns["c"] = float(c_values.median()) if len(c_values) else math.nan
    columns["pass_cost"] = _verifier_pass_cost(group)
    columns["framework_overhead"] = _framework_overhead(group)
    columns["loop_overhead"] = _ratio(group["total_s"].sum(), group["forward_s"].sum())
    return columns


def _framework_overhead(group: pd.DataFrame) -> float:
    """Vanilla's decode time per token over the sum of bare step times (how much the loop adds)."""
    if group.iloc[0]["method"] != "vanilla":
        return math.nan
    steps = group["new_tokens"] - 1
    bare = group["step_seconds"].map(lambda s: sum(s.values()) if isinstance(s, dict) and s else math.nan)
    usable = (steps > 0) & bare.notna()
    if not usable.any():
        return math.nan
    return float((group["decode_s"][usable] / steps[usable] / bare[usable]).mean())


def _verifier_pass_cost(group: pd.DataFrame) -> float:
    """Median over decodes of ρ of the model verifying the default proposer's drafts (two models only)."""
    if "pass_cost" not in group:
        return math.nan
    values = []
    for costs, proposer in zip(group["pass_cost"], group["proposer"]):
        if isinstance(costs, dict) and len(costs) == 2 and proposer in costs:
            (verifier,) = [name for name in costs if name != proposer]
            values.append(float(costs[verifier]))
    return float(np.median(values)) if values else math.nan


def _theory_columns(row: dict, group: pd.DataFrame) -> dict:
    predicted = _theoretical(row, group.iloc[0])
    with_pass = _theoretical(row, group.iloc[0], measured_pass=True)
    return {
        "theoretical_speedup": predicted,
        "measured_over_theoretical": _ratio(row["speedup_decode"], predicted),
        "theoretical_speedup_measured_pass": with_pass,
        "measured_over_theoretical_measured_pass": _ratio(row["speedup_decode"], with_pass),
    }


def _theoretical(row: dict, first: pd.Series, measured_pass: bool = False) -> float:
    """Thm 3.1/3.6 for the row, as the paper states them or (measured_pass) with the measured pass cost ρ."""
    if row["method"] not in theory.KNOWN_METHODS:
        return math.nan  # a method newer than the theory module: nothing to compare against
    if row["draft"] != "fixed" and row["method"] in DRAFT_POLICY_METHODS:
        return math.nan  # the theorems assume every run is γ long; an adaptive policy's runs are not
    pass_cost = _none_if_nan(row["pass_cost"]) if measured_pass else None
    if measured_pass and pass_cost is None:
        return math.nan  # ρ not measured (older records, n > 2 models): no number, not the paper's
    alpha = _none_if_nan(row["alpha_expected"])
    if alpha is not None:
        alpha = min(alpha, 1.0)  # Σ min(draft, combined) summed in low precision can exceed 1 by rounding
    gammas = ordered_gammas(first["gammas"], first["proposer"])
    if row["method"] == "sd":
        # Only the drafter's γ enters Thm 3.1; a record may list just that one.
        gammas += [1] * (int(row["n_models"]) - len(gammas))
    value = theory.theoretical_speedup(row["method"], int(row["n_models"]), alpha, _none_if_nan(row["c"]), gammas, pass_cost=pass_cost)
    return math.nan if value is None else float(value)


def _paper_column(row: dict) -> float:
    if row["method"] != "cos" or not row["paper_setting"]:
        return math.nan
    value = paper_speedup(row["paper_setting"], row["temperature"], row["task"])
    return math.nan if value is None else value


# --- comparisons with vanilla ------------------------------------------------------------


def _vanilla_reference(df: pd.DataFrame, first: pd.Series, keys: list[str]) -> pd.DataFrame:
    """The vanilla records this configuration is compared with.

    Same run, task, setting and temperature; for sweep values, vanilla must match or
    not be swept at all (vanilla does not depend on, e.g., γ). Proposer and γ are
    ignored: they do not change what vanilla computes.
    """
    mask = df["method"] == "vanilla"
    for key in COMPARE_KEYS:
        mask &= df[key] == first[key]
    for key in keys:
        if key.startswith(SWEEP_PREFIX):
            mask &= df[key].isna() | (df[key] == first[key])
    return df[mask]


def _identical_share(group: pd.DataFrame, reference: pd.DataFrame) -> float:
    """Share of decodes token-identical to vanilla's; greedy (T=0) only, n/a for vanilla itself."""
    if group.iloc[0]["temperature"] != 0 or group.iloc[0]["method"] == "vanilla" or reference.empty:
        return math.nan
    by_repeat = {(r.example_id, r.repeat): list(r.token_ids) for r in reference.itertuples()}
    by_example: dict[str, list[int]] = {}
    for r in reference.sort_values("repeat").itertuples():
        by_example.setdefault(r.example_id, list(r.token_ids))  # greedy: any repeat is the same prompt's answer
    matches = []
    for r in group.itertuples():
        expected = by_repeat.get((r.example_id, r.repeat), by_example.get(r.example_id))
        if expected is not None:
            matches.append(list(r.token_ids) == expected)
    return float(np.mean(matches)) if matches else math.nan


# --- small helpers ------------------------------------------------------------------------


def _rates(group: pd.DataFrame) -> pd.Series:
    return group["new_tokens"] / group["total_s"]


def _quality_difference(group: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """Quality minus vanilla's, paired by prompt and repeat, ± its standard error over prompts; n/a for vanilla."""
    missing = {"quality_vs_vanilla": math.nan, "quality_vs_vanilla_se": math.nan}
    if group.iloc[0]["method"] == "vanilla" or reference.empty:
        return missing
    scored = reference[reference["correct"].map(_is_scored)]
    vanilla = {(r.example_id, r.repeat): bool(r.correct) for r in scored.itertuples()}
    pairs = [
        (r.example_id, float(bool(r.correct)) - vanilla[(r.example_id, r.repeat)])
        for r in group.itertuples()
        if _is_scored(r.correct) and (r.example_id, r.repeat) in vanilla
    ]
    if not pairs:
        return missing
    # Repeats of one prompt are not independent: average them, then take the spread over prompts.
    per_prompt = pd.DataFrame(pairs, columns=["example_id", "difference"]).groupby("example_id")["difference"].mean()
    return {"quality_vs_vanilla": float(per_prompt.mean()), "quality_vs_vanilla_se": standard_error(per_prompt)}


def _is_scored(correct: Any) -> bool:
    return correct is not None and not (isinstance(correct, float) and math.isnan(correct))


def _quality(correct: pd.Series) -> float:
    scored = [bool(v) for v in correct if _is_scored(v)]
    return float(np.mean(scored)) if scored else math.nan


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def standard_error(values: pd.Series) -> float:
    """The standard error of the mean (NaN below two values): what every `± se` the project prints is."""
    return _std(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan


def _ratio(numerator: float, denominator: float) -> float:
    if denominator is None or numerator is None:
        return math.nan
    numerator, denominator = float(numerator), float(denominator)
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return math.nan
    return numerator / denominator


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
