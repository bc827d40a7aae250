"""The speculative engine shared by `sd` and `cos` (docs/design.md §2–3).

State: the committed transcript, a list of pending draft tokens beyond it,
and per model the logits it has computed for pending positions. A pending
position is verified as soon as every model has logits for it: the target is
the combination rule over all of them, the draft distribution is that of the
model that drafted it. Any rejection discards every pending draft and stored
logit, and each model's cache is cropped back to what was committed; a model's
cache may lag the committed sequence (a draft it produced but never fed back)
and catches up on its next call.

The methods differ only in what happens after a verifying pass:
  * `sd`  — nothing: the default proposer drafts again (Naive-CoS).
  * `cos` — the model that just scored turns its extra next-position
    distribution into a bonus draft and proposes γ_i − 1 more (the alternate
    proposal framework; with n models, Algorithm 2).

How long each run is — γ_i, or what an adaptive policy makes of it — is the settings' draft
policy's decision (`core/drafting.py`), bonus runs included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cos_bench.core.combine import model_probs
from cos_bench.core.drafting import DraftPlan
from cos_bench.core.records import DecodeResult
from cos_bench.core.runner import ModelRunner
from cos_bench.core.sampling import sample, verify_block
from cos_bench.core.settings import DecodeSettings
from cos_bench.core.stopping import StopRule
from cos_bench.core.transcript import DraftCounters, Transcript, finish


@dataclass(frozen=True)
class PendingDraft:
    drafter: int  # index of the model that drafted it
    draft_probs: torch.Tensor  # [V] the distribution it was drawn from
    bonus: bool  # drawn from a verifier's extra distribution (cos)
    run_position: int  # 1-based position within its proposal run
    run: int = 0  # which proposal run of the decode (counted from 1, in the order the plan was asked their lengths)
    closes_run: bool = False  # the last draft of its run: accepting it accepts the whole run


class SpeculativeEngine:
    def __init__(
        self,
        runners: Sequence[ModelRunner],
        prompt_ids: torch.Tensor,
        settings: DecodeSettings,
        stop: StopRule,
        generator: torch.Generator | None,
    ):
        for runner in runners:
            runner.reset()
        self.runners = runners
        self.settings = settings
        self.generator = generator
        self.transcript = Transcript(prompt_ids, stop)
        self.pending: list[PendingDraft] = []
        self.logits: list[dict[int, torch.Tensor]] = [{} for _ in runners]  # per model: position -> [V]
        self.counters = [DraftCounters() for _ in runners]
        self.corrections = 0
        self.runs = 0  # proposal runs so far: each `draft` asks the plan one run length
        self.plan = DraftPlan(settings.gammas)  # `run` starts the settings' policy, once it knows the method

    # -- feeding -----------------------------------------------------------------------------

    @property
    def frontier(self) -> int:
        """First position past the pending drafts."""
        return self.transcript.length + len(self.pending)

    def catch_up(self, index: int, end: int) -> None:
        """Feed model `index` everything up to position `end` (exclusive) in one pass,
        storing its logits for every position from the committed length to `end`."""
        runner = self.runners[index]
        start = runner.cache_len
        assert start < end, "a model is only fed when it lacks logits for a position"
        first_wanted = max(start + 1, self.transcript.length)
        logits = runner.feed(self.transcript.tokens[start:end], keep=end - first_wanted + 1)  # [keep, V]
        store = self.logits[index]
        for offset, position in enumerate(range(first_wanted, end + 1)):
            store[position] = logits[offset]

    def draft(self, index: int, bonus_first: bool) -> None:
        """Model `index` proposes one run: as long as the draft policy says, never past max_new_tokens."""
        self.runs += 1
        count = min(self.plan.run_length(index, self.counters), self.transcript.remaining - len(self.pending))
        for step in range(count):
            position = self.frontier
            if position not in self.logits[index]:
                self.catch_up(index, position)
            logits = self.logits[index][position]  # [V]
            draft_probs = model_probs(logits, self.settings.temperature)
            token = sample(draft_probs, self.generator)
            self.transcript.tokens[position] = token
            bonus = bonus_first and step == 0
            self.pending.append(PendingDraft(index, draft_probs, bonus, step + 1, run=self.runs))
            self.counters[index].count_draft(step + 1, bonus)
            if self.plan.stops_after(logits, draft_probs, token):
                break
        if count > 0:
            self.pending[-1] = dataclasses.replace(self.pending[-1], closes_run=True)

    def next_scorer(self, alternate: bool) -> int:
        """The model with the fewest stored distributions for the pending drafts (first index on ties).

        Without alternation (`sd`) only the other models score, as in the paper's Naive-CoS:
        the proposer never verifies, even where a verifier's stored next-position distribution
        would already let its first draft be checked without the verifier (γ = 1).
        """
        positions = range(self.transcript.length, self.frontier)
        candidates = range(len(self.runners)) if alternate else [i for i in range(len(self.runners)) if i != self.settings.proposer]
        held = {i: sum(p in self.logits[i] for p in positions) for i in candidates}
        return min(held, key=held.get)

    def score(self, index: int) -> None:
        """One forward pass over every pending draft the model has not seen (also yields its next-position logits)."""
        self.catch_up(index, self.frontier)

    # -- verification ------------------------------------------------------------------------

    def verifiable(self) -> int:
        """How many leading pending drafts every model has logits for."""
        start = self.transcript.length
        count = 0
        while count < len(self.pending) and all(start + count in store for store in self.logits):
            count += 1
        return count

    def verify(self) -> bool:
        """Verify the leading fully-scored drafts; commit what passes. True on a rejection."""
        k = self.verifiable()
        if k == 0:
            return False
        start = self.transcript.length
        positions = range(start, start + k)
        per_model = [torch.stack([store[p] for p in positions]) for store in self.logits]  # n × [k, V]
        target_probs = self.settings.rule.combine(per_model, self.settings.temperature)  # [k, V]
        drafts = self.pending[:k]
        draft_probs = torch.stack([d.draft_probs for d in drafts])  # [k, V]
        verdict = verify_block(self.transcript.tokens[start : start + k], draft_probs, target_probs, self.generator)
        for draft, token, overlap in zip(drafts, verdict.accepted_tokens, verdict.overlaps):
            self.count_verdict(draft, overlap)
            self.counters[draft.drafter].count_accept(draft.run_position, draft.bonus)
            self.plan.draft_verified(draft.drafter, draft.run, draft.run_position, accepted=True)
            if draft.closes_run:
                self.plan.run_verified(draft.drafter, fully_accepted=True)
            self.pending.pop(0)
            for store in self.logits:
                store.pop(self.transcript.length, None)
            if self.transcript.commit(token, write=False):
                # Drafts past the stop never reach the output: they count neither as verified nor towards α.
                return False
        if verdict.correction is None:
            return False
        rejected = drafts[verdict.n_accepted]
        self.count_verdict(rejected, verdict.overlaps[verdict.n_accepted])
        self.plan.draft_verified(rejected.drafter, rejected.run, rejected.run_position, accepted=False)
        self.plan.run_verified(rejected.drafter, fully_accepted=False)
        self.reject(verdict.correction)
        return True

    def count_verdict(self, draft: PendingDraft, overlap: float) -> None:
        self.counters[draft.drafter].verified += 1
        self.counters[draft.drafter].alpha_sum += overlap

    def reject(self, correction: int) -> None:
        """Drop every pending draft and stored logit, crop caches, commit the replacement."""
        rejected_at = self.transcript.length
        self.pending.clear()
        for runner, store in zip(self.runners, self.logits):
            store.clear()
            runner.crop(min(runner.cache_len, rejected_at))
        self.corrections += 1
        self.transcript.commit(correction)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, method: str, alternate: bool) -> DecodeResult:
        settings = self.settings
        self.plan = settings.draft.start(settings.gammas, settings.temperature, alternate)
        while self.transcript.stop_reason is None:
            if not self.pending:
                self.draft(settings.proposer, bonus_first=False)
                continue
            scorer = self.next_scorer(alternate)
            self.score(scorer)
            rejected = self.verify()
            if alternate and not rejected and self.transcript.stop_reason is None:
                self.draft(scorer, bonus_first=True)
        return finish(method, self.transcript, self.runners, self.counters, corrections=self.corrections)
