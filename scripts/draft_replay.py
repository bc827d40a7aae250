"""Replay recorded greedy decodes through the real speculative engine, charging measured costs.

Usage: python scripts/draft_replay.py RECORDS_DIR CALIBRATION_MANIFEST [--config CONFIG] [--task humaneval]
       [--limit 20] [--max-new-tokens 256] [--data-dir ../shared/data] [--out FILE] [--arms "fixed γ5,marginal"]

Each recorded vanilla greedy decode (RECORDS_DIR/records.jsonl, T = 0) is teacher-forced through
both models once; runners that replay those logits then drive `cos` under each draft policy, so
every policy takes its real decisions on the real models' distributions. Time is not measured: each
forward is charged its model's calibrated cost (step seconds × the pass-cost curve at its length,
from CALIBRATION_MANIFEST's `calibration`), so policies are compared without timing noise. Drafts
past a rejection get the vanilla context's logits (they are discarded at that rejection either way).
Prints each setting's mean predicted decode-only speedup per arm (vanilla's charged seconds / the
arm's, per prompt); the `oracle` arm, which peeks at the target, bounds what a stopping rule can gain.

With --temperature T > 0 the recorded vanilla decodes at T are replayed with --seeds draws per arm
(no oracle: there is no single right token to peek at). This is a position-wise proxy, not an exact
replay: sampled drafts and corrections part from the recorded text, and every token at position i is
drafted and judged on the two models' distributions at position i of the recorded sample, whatever
was drawn before it. Acceptance then follows the real distributions' overlaps and the drafter's
real probabilities of what it draws, which is what a stopping rule reads; every arm decodes exactly
the recorded length (no EOS), so each is charged for the same number of tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import ClassVar

import pandas as pd
import torch
from rich.console import Console

from cos_bench.config import apply_overrides, load_config
from cos_bench.core.drafting import DraftPlan, DraftPolicy
from cos_bench.core.records import DecodeResult
from cos_bench.core.runner import ForwardStats
from cos_bench.core.speculative import SpeculativeEngine
from cos_bench.core.stopping import StopRule
from cos_bench.core.vanilla import decode as vanilla_decode
from cos_bench.engine import build_prompts, load_engine, stop_for, use_chat
from cos_bench.metrics import standard_error
from cos_bench.run import job_settings, measured_pass_cost
from cos_bench.tasks import get_task
from cos_bench.tasks.data import resolve_data_source

ARMS = {
    "fixed γ1": {"gamma": {"small": 1}},
    "fixed γ3": {"gamma": {"small": 3}},
    "fixed γ5": {},
    "fixed γ7": {"gamma": {"small": 7}},
    "confidence 0.4": {"draft": "confidence"},
    "heuristic": {"draft": "heuristic"},
    "auto": {"draft": "auto"},
    "marginal": {"draft": "marginal"},
    "oracle ≤16": {"oracle": 16},
}


class _OraclePlan(DraftPlan):
    """Peeks at the replayed target: ends the proposer's run right after the draft the target rejects
    (drafting it costs one step and makes the correction free), or at `cap`."""

    def __init__(self, gammas, eng, tables, rule, cap):
        super().__init__([cap if i == 0 else g for i, g in enumerate(gammas)])
        self.eng, self.tables, self.rule = eng, tables, rule

    def stops_after(self, logits, draft_probs, token):
        row = min(self.eng.frontier - 2, self.tables[0].shape[0] - 1)  # the row that predicted `token`
        target = int(self.rule.combine([t[row] for t in self.tables], 0.0).argmax())
        return int(token) != target


@dataclasses.dataclass(frozen=True)
class OracleDraft(DraftPolicy):
    """Not exact, not a policy (it reads the verifier's answer): how much any stopping rule could gain (headroom)."""

    name: ClassVar[str] = "oracle"
    eng: object = None
    tables: object = None
    rule: object = None
    cap: int = 16

    def start(self, gammas, temperature, alternate):
        return _OraclePlan(gammas, self.eng, self.tables, self.rule, self.cap)


class ReplayRunner:
    """A runner whose logits are a teacher-forced table; it logs every feed's length."""

    def __init__(self, name: str, table: torch.Tensor):
        self.name = name
        self.table = table  # [N, V]: row i predicts the token after position i
        self.reset()

    def reset(self) -> None:
        self.cache_len = 0
        self.feeds: list[int] = []

    def feed(self, tokens: torch.Tensor, keep: int) -> torch.Tensor:
        self.cache_len += int(tokens.shape[0])
        self.feeds.append(int(tokens.shape[0]))
        rows = torch.arange(self.cache_len - keep, self.cache_len).clamp(max=self.table.shape[0] - 1)
        return self.table[rows]

    def crop(self, length: int) -> None:
        self.cache_len = min(self.cache_len, length)

    def stats(self) -> ForwardStats:
        return ForwardStats(len(self.feeds), sum(self.feeds), 0.0)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def charged_seconds(runners, step: dict, curve: dict) -> float:
    """Decode seconds as calibration charges them: every feed after the prefill."""
    return sum(step[r.name] * curve[r.name].at(k) for r in runners for k in r.feeds[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records_dir", type=Path)
    parser.add_argument("calibration", type=Path)
    parser.add_argument("--config", default="configs/cpu-draft-grid.yaml")
    parser.add_argument("--task", default="humaneval")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--arms", help="comma-separated arm names (default: all; at T > 0 all but the oracle)")
    parser.add_argument("--temperature", type=float, default=0.0, help="replay the vanilla decodes recorded at this T")
    parser.add_argument("--seeds", type=int, default=8, help="draws per arm and prompt at T > 0")
    parser.add_argument("--dtype", help="of the teacher-forced forwards (default: the config's); float32 where a CPU emulates bf16")
    args = parser.parse_args(argv)
    sampled = args.temperature > 0
    arms = {name: ARMS[name] for name in args.arms.split(",")} if args.arms else ARMS
    if sampled:
        arms = {name: overrides for name, overrides in arms.items() if "oracle" not in overrides}
    console = Console(stderr=True)
    overrides = {"limit": args.limit, "max_new_tokens": args.max_new_tokens, "data_dir": args.data_dir, "temperature": args.temperature}
    if args.dtype:
        overrides["dtype"] = args.dtype
    cfg = apply_overrides(load_config(args.config), overrides)
    calibration = json.loads(args.calibration.read_text())["calibration"]
    step = calibration["step_seconds"]
    curve = {name: measured_pass_cost(calibration, name) for name in cfg.model_names}
    vanilla_ids = {}
    for line in (args.records_dir / "records.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["method"] == "vanilla" and rec["task"] == args.task and rec["temperature"] == args.temperature:
            vanilla_ids[(rec["example_id"], rec["setting"])] = rec["token_ids"]
    engine = load_engine(cfg, console)
    chat = use_chat(cfg, engine.tokenizer)
    task = get_task(args.task)
    prompts = build_prompts(task, task.load(resolve_data_source(cfg.data_dir), cfg.limit, cfg.offset, cfg.seed, cfg.subjects), engine, chat)
    task_stop = stop_for(task, engine, chat, args.max_new_tokens)
    rows = []
    for prompt in prompts:
        for combination in cfg.combinations:
            ids = vanilla_ids.get((str(prompt.example.example_id), combination.label))
            if ids is None:
                continue
            full = torch.cat([prompt.ids, torch.tensor(ids, dtype=prompt.ids.dtype)])
            with torch.inference_mode():
                tables = [m.model(full[None]).logits[0].float() for m in engine.models]
            runners = [ReplayRunner(name, table) for name, table in zip(cfg.model_names, tables)]
            base = job_settings(cfg, combination, calibration)
            stop = StopRule(len(ids)) if sampled else task_stop
            seeds = range(args.seeds) if sampled else [None]
            result: DecodeResult = vanilla_decode(runners, prompt.ids, base, stop, generator(0) if sampled else None)
            vanilla_s = charged_seconds(runners, step, curve)
            row = {
                "example_id": str(prompt.example.example_id),
                "setting": combination.label,
                "tokens": len(ids),
                "vanilla_identical": list(result.token_ids) == ids,
                "speedup": {},
                "mean_draft": {},
                "identical": {},
            }
            for arm, overrides in arms.items():
                settings = job_settings(
                    apply_overrides(cfg, {"arms": [], **{k: v for k, v in overrides.items() if k != "oracle"}}), combination, calibration
                )
                speedups, drafts = [], []
                for seed in seeds:
                    eng = SpeculativeEngine(runners, prompt.ids, settings, stop, None if seed is None else generator(seed))
                    if "oracle" in overrides:
                        settings = dataclasses.replace(settings, draft=OracleDraft(eng, tables, base.rule, overrides["oracle"]))
                        eng.settings = settings
                    result = eng.run("cos", alternate=True)
                    speedups.append(vanilla_s / charged_seconds(runners, step, curve) * len(result.token_ids) / len(ids))
                    drafts.append(result.models[0].mean_draft_length)
                row["speedup"][arm] = statistics.fmean(speedups)  # the mean over draws at T > 0
                row["mean_draft"][arm] = statistics.fmean(drafts)
                row["identical"][arm] = None if sampled else list(result.token_ids) == ids
            rows.append(row)
            console.print(row["example_id"], row["setting"], {k: round(v, 3) for k, v in row["speedup"].items()})
    for setting in sorted({r["setting"] for r in rows}):
        group = [r for r in rows if r["setting"] == setting]
        cells = []
        for arm in arms:
            values = pd.Series([r["speedup"][arm] for r in group])
            cells.append(f"{arm}: {values.mean():.3f} ± {standard_error(values):.3f}")
        print(f"T = {args.temperature}", setting, len(group), " ".join(cells))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
