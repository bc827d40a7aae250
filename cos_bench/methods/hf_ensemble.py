"""`hf-ensemble`: transformers' own assisted generation with static ensemble verification (the peer baseline).

`target.generate(assistant_model=drafter, assistant_ensemble_weight=w)` (transformers 5.x)
verifies the drafter's tokens against ν = w·target_probs + (1−w)·draft_probs, with
w = 1 − λ where λ is the drafter's weight. What it does, read from
`generation/utils.py` (`_speculative_sampling` and the greedy branch):

- a drafted token x is kept with probability min(1, ν(x)/q(x)) (greedy: iff x = argmax ν);
- at the first rejection the replacement is drawn from norm(max(0, target − draft)),
  which equals norm(max(0, ν − draft));
- when every draft passes, the extra token comes from the *target alone*, not from ν.

So its tokens are not distributed as the weighted ensemble: the all-accepted
token is a target sample (the gap CoS's alternate proposals close). It is a peer
to compare speed and quality against, not an exact baseline.

It runs two ways (`VARIANTS`, one registry entry each):

- `hf-ensemble` drafts as transformers does when nobody sets anything — what a user of the
  peer gets: up to `num_assistant_tokens` per round under its schedule, each draft cut short
  once the drafter's own probability of its token falls below `assistant_confidence_threshold`
  (transformers 5.24: 20, "constant", 0.4; read from the installed version, never written here).
  Where scikit-learn is installed, transformers also retunes that threshold from round to round
  within a call (`update_candidate_strategy`), so the variant's drafts depend on that too;
- `hf-ensemble-matched` drafts the run's γ every round with no cut-off: the algorithm
  comparison at the same γ as `sd` and `cos`.

This module only wraps `generate`: it fixes the knobs that would otherwise leak in
from the models' own generation configs (top-k 50, repetition penalties, a checkpoint's
draft lengths), and measures what the models did through forward hooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from cos_bench.core.combine import WeightedEnsemble
from cos_bench.core.records import DecodeResult, ModelAccounting
from cos_bench.core.runner import ForwardTimer
from cos_bench.core.settings import DecodeSettings
from cos_bench.core.stopping import StopRule
from cos_bench.errors import CosBenchError
from cos_bench.methods.context import DecodeContext
from cos_bench.timing import synchronize

SCHEDULES = ("constant", "heuristic", "heuristic_transient")  # GenerationConfig.num_assistant_tokens_schedule


@dataclass(frozen=True)
class Drafting:
    """How transformers' assistant drafts: `GenerationConfig`'s assisted-generation fields, named as there.

    Stored with every record of the peer (`RunRecord.hf_drafting`), so a report can tell the variants apart.
    """

    num_assistant_tokens: int  # tokens drafted in the first round; the "heuristic" schedules change it between rounds
    num_assistant_tokens_schedule: str  # one of SCHEDULES
    assistant_confidence_threshold: float  # a round ends early once the drafter's own token probability is below it; 0 = never

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def transformers_defaults() -> Drafting:
    """What `generate(assistant_model=…)` drafts with when nobody sets these fields, read from the installed transformers.

    A bare `GenerationConfig()` leaves them None; generation fills every field still None from
    `GenerationConfig._get_default_generation_params()` (so says GenerationConfig's docstring), which the
    assistant's candidate generator does too (`generation/candidate_generator.py`). Read there, not copied here,
    so the values follow the installed version.
    """
    from transformers import GenerationConfig

    defaults = GenerationConfig._get_default_generation_params()
    return Drafting(
        num_assistant_tokens=int(defaults["num_assistant_tokens"]),
        num_assistant_tokens_schedule=str(defaults["num_assistant_tokens_schedule"]),
        assistant_confidence_threshold=float(defaults["assistant_confidence_threshold"]),
    )


def matched_drafting(gamma: int) -> Drafting:
    """The run's γ in every round, no confidence cut-off: the peer at the same draft length as `sd` and `cos`."""
    return Drafting(num_assistant_tokens=gamma, num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0)


def hf_ensemble_decode(
    target: torch.nn.Module,
    assistant: torch.nn.Module,
    prompt_ids: torch.LongTensor,  # [P]
    drafter_weight: float,
    temperature: float,
    max_new_tokens: int,
    eos_token_ids: Sequence[int],
    drafting: Drafting,
    seed: int | None,
    *,
    method: str = "hf-ensemble",
    target_name: str = "target",
    drafter_name: str = "drafter",
    stop: Callable[[Sequence[int]], str | None] | None = None,
) -> DecodeResult:
    """Decode one prompt with `generate(assistant_model=..., assistant_ensemble_weight=1 - drafter_weight)`.

    `drafter_weight` = 0 runs plain (lossless) speculative decoding of the target. The drafter
    drafts as `drafting` says, starting afresh in every call: nothing of one call's adaptive
    schedule carries over to the next (see the swap of generation configs below).
    Greedy when `temperature` is 0, else sampling from the full distribution at that
    temperature, seeded with `torch.manual_seed(seed)`. Stops on eos, `max_new_tokens`,
    or where `stop` (the rule every method shares: generated ids -> a reason or None) first
    gives a reason: generate() ends after that step, and the ids and the step counts are
    cut at that exact token, as every other method stops. The time keeps the whole last
    step, as the core's methods keep the whole verification pass that crossed the stop.
    """
    from transformers import GenerationConfig, StoppingCriteriaList

    _validate(target, assistant, prompt_ids, drafter_weight, temperature, max_new_tokens, drafting)
    device = target.get_input_embeddings().weight.device
    input_ids = prompt_ids.to(device)[None]  # [1, P]
    eos = [int(i) for i in eos_token_ids]
    sampling = temperature > 0
    # Sampling from the full tempered distribution: top_k 0, not None (None is filled with the default 50).
    full_distribution = {"temperature": temperature, "top_k": 0, "top_p": 1.0, "typical_p": 1.0} if sampling else {}
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        do_sample=sampling,
        **full_distribution,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        eos_token_id=eos or None,
        pad_token_id=eos[0] if eos else 0,  # batch of one: never used for padding
        assistant_ensemble_weight=(1.0 - drafter_weight) if drafter_weight > 0 else None,
    )
    # Fields left None in `config` are filled from each model's own generation_config
    # (a Hub model's may carry top_k=20, repetition_penalty=1.1, ...), so both are
    # swapped for neutral ones for the duration of the call. The drafter's carries `drafting`, and is a
    # new object every call: under the "heuristic" schedule generate() writes the draft length it ended
    # with back into the assistant's generation_config (generation/utils.py, end of _assisted_decoding), so
    # reusing one would start the next prompt, or the other variant, from where this one stopped.
    drafter_config = GenerationConfig(**drafting.to_json())
    saved = (target.generation_config, assistant.generation_config)
    target_meter, drafter_meter = _ForwardMeter(target), _ForwardMeter(assistant)
    steps = _StepWatcher(input_ids.shape[1], target_meter, stop)
    try:
        target.generation_config = GenerationConfig()
        assistant.generation_config = drafter_config
        target_meter.attach()
        drafter_meter.attach()
        if seed is not None:
            torch.manual_seed(seed)
        synchronize(device)
        started = time.perf_counter()
        steps.started = started
        with torch.no_grad():
            output = target.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                assistant_model=assistant,
                stopping_criteria=StoppingCriteriaList([steps]),
            )
        synchronize(device)
        finished = time.perf_counter()
    finally:
        target_meter.detach()
        drafter_meter.detach()
        target.generation_config, assistant.generation_config = saved

    generated = tuple(int(t) for t in output[0, input_ids.shape[1] :].tolist())
    if generated != tuple(steps.committed):
        raise RuntimeError("hf-ensemble accounting lost track of generate()'s steps; the counts would be wrong")
    stop_reason = "eos" if generated and generated[-1] in eos else "max_new_tokens"
    cut = _first_stop(generated, stop)
    if cut is not None:
        stop_reason = stop(generated[:cut])
        generated = generated[:cut]
        steps.steps = _clip_steps(steps.steps, cut)
    drafter_accounting = ModelAccounting(
        name=drafter_name,
        forward_calls=drafter_meter.calls,
        tokens_fed=drafter_meter.tokens,
        forward_seconds=drafter_meter.seconds,
        drafted=sum(s.drafted for s in steps.steps),
        accepted=sum(s.accepted for s in steps.steps),
        bonus_drafted=0,
        bonus_accepted=0,
        # verified / alpha_sum stay 0, so expected_acceptance is None: α needs the target and
        # draft distributions at every verified position, which generate() keeps to itself.
        verified=0,
        alpha_sum=0.0,
        drafted_by_position=_by_position([s.drafted for s in steps.steps]),
        accepted_by_position=_by_position([s.accepted for s in steps.steps]),
    )
    target_accounting = ModelAccounting(
        name=target_name,
        forward_calls=target_meter.calls,
        tokens_fed=target_meter.tokens,
        forward_seconds=target_meter.seconds,
        drafted=0, accepted=0, bonus_drafted=0, bonus_accepted=0, verified=0, alpha_sum=0.0,
        drafted_by_position=(), accepted_by_position=(),
    )  # fmt: skip
    return DecodeResult(
        method=method,
        token_ids=generated,
        stop_reason=stop_reason,
        models=(drafter_accounting, target_accounting),
        corrections=sum(s.corrected for s in steps.steps),
        # The target's own token after a fully accepted draft (drawn from the target alone, not ν).
        direct_samples=sum(s.target_token for s in steps.steps),
        first_token_seconds=(steps.first_token_at or finished) - started,
        total_seconds=finished - started,
    )


@dataclass(frozen=True)
class Peer:
    """One registry entry of the peer: `decode` under the registry's signature, drafting per `matched`."""

    name: str
    matched: bool  # True: the run's γ, no cut-off (matched_drafting); False: transformers' defaults

    def drafting(self, settings: DecodeSettings) -> Drafting:
        """How this variant drafts under `settings` (the proposer drafts)."""
        return matched_drafting(settings.gammas[settings.proposer]) if self.matched else transformers_defaults()

    def __call__(self, context: DecodeContext, prompt_ids: torch.Tensor, settings: DecodeSettings, stop: StopRule) -> DecodeResult:
        """The proposer drafts, the other model is the target, λ is the proposer's WE weight.

        Ends where every method ends (`stop.reason`), cut at that exact token.
        """
        if not isinstance(settings.rule, WeightedEnsemble) or settings.rule.n_models != 2:
            raise CosBenchError(f"{self.name} runs only 2-model we combinations: drop {self.name} from methods")
        drafter = settings.proposer
        (target,) = [i for i in range(len(context.models)) if i != drafter]
        return hf_ensemble_decode(
            context.models[target].model,
            context.models[drafter].model,
            prompt_ids,
            drafter_weight=settings.rule.weights[drafter],
            temperature=settings.temperature,
            max_new_tokens=stop.max_new_tokens,
            eos_token_ids=sorted(stop.eos_token_ids),
            drafting=self.drafting(settings),
            seed=context.seed,
            method=self.name,
            target_name=context.models[target].name,
            drafter_name=context.models[drafter].name,
            stop=stop.reason,
        )


# Both run where the peer can (2-model WE); their records carry `drafting` (RunRecord.hf_drafting).
# Records of `hf-ensemble` stored before it had two variants drafted as `hf-ensemble-matched` does
# and are read back as that (storage._current_layout).
DEFAULTS = Peer("hf-ensemble", matched=False)
MATCHED = Peer("hf-ensemble-matched", matched=True)
VARIANTS: tuple[Peer, ...] = (DEFAULTS, MATCHED)


def _validate(target, assistant, prompt_ids, drafter_weight, temperature, max_new_tokens, drafting: Drafting) -> None:
    if not 0.0 <= drafter_weight < 1.0:
        raise CosBenchError(
            f"hf-ensemble drafter weight must be in [0, 1), got {drafter_weight}; "
            "0 is plain speculative decoding, 1 would ignore the target"
        )
    if temperature < 0:
        raise CosBenchError(f"temperature must be >= 0, got {temperature}; use 0 for greedy")
    if drafting.num_assistant_tokens < 1:
        raise CosBenchError(f"hf-ensemble needs gamma >= 1 draft tokens per step, got {drafting.num_assistant_tokens}")
    if drafting.num_assistant_tokens_schedule not in SCHEDULES:
        raise CosBenchError(
            f"hf-ensemble: unknown draft schedule {drafting.num_assistant_tokens_schedule!r}; use one of {', '.join(SCHEDULES)}"
        )
    if not 0.0 <= drafting.assistant_confidence_threshold < 1.0:
        raise CosBenchError(
            f"hf-ensemble confidence threshold must be in [0, 1), got {drafting.assistant_confidence_threshold}; 0 never cuts a draft"
        )
    if max_new_tokens < 1:
        raise CosBenchError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt_ids.dim() != 1 or prompt_ids.numel() == 0:
        raise ValueError(f"prompt_ids must be a non-empty 1-D tensor of token ids, got shape {tuple(prompt_ids.shape)}")
    target_rows = target.get_output_embeddings().weight.shape[0]
    drafter_rows = assistant.get_output_embeddings().weight.shape[0]
    if target_rows != drafter_rows:
        raise CosBenchError(
            f"hf-ensemble needs equally wide logits, but the target scores {target_rows} tokens and the drafter "
            f"{drafter_rows} (padded embeddings); transformers mixes them position by position — pick another method"
        )


def _first_stop(generated: Sequence[int], stop: Callable[[Sequence[int]], str | None] | None) -> int | None:
    """Length of the shortest prefix at which `stop` gives a reason, or None."""
    if stop is None:
        return None
    return next((end for end in range(1, len(generated) + 1) if stop(generated[:end]) is not None), None)


def _clip_steps(steps: list[_Step], keep: int) -> list[_Step]:
    """The steps' counts for the first `keep` committed tokens only.

    A step commits its accepted drafts, then at most one more token (a correction or the
    target's own), so a step cut short keeps only accepted drafts. Drafts made stay drafted.
    """
    clipped, total = [], 0
    for step in steps:
        room = keep - total
        if room <= 0:
            break
        emitted = step.accepted + step.corrected + step.target_token
        clipped.append(step if emitted <= room else _Step(step.drafted, room, 0, 0))
        total += min(emitted, room)
    return clipped


def _by_position(lengths: list[int]) -> tuple[int, ...]:
    """counts[i] = how many steps reached draft position i + 1."""
    longest = max(lengths, default=0)
    return tuple(sum(1 for n in lengths if n > i) for i in range(longest))


class _ForwardMeter:
    """Counts one model's forward calls, tokens fed and forward time through hooks.

    Timed with the core's ForwardTimer (CUDA events read once at the end), never by
    synchronising around each forward: a sync per call inside the timed generate() would
    charge the peer for stalls that the core's methods do not pay.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.device = model.get_input_embeddings().weight.device
        self.calls = 0
        self.tokens = 0
        self.last_input: torch.Tensor | None = None  # [1, fed]
        self.last_cache_len: int | None = None
        self._handles: list = []
        self._timer = ForwardTimer(self.device)

    @property
    def seconds(self) -> float:
        return self._timer.seconds()

    def attach(self) -> None:
        self._handles = [
            self.model.register_forward_pre_hook(self._before, with_kwargs=True),
            self.model.register_forward_hook(self._after),
        ]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _before(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        self.last_input = ids
        self.last_cache_len = cache.get_seq_length() if cache is not None else None
        self.calls += 1
        self.tokens += ids.shape[-1] if ids is not None else kwargs["inputs_embeds"].shape[-2]
        self._timer.start()

    def _after(self, module, args, output):
        self._timer.stop()


@dataclass
class _Step:
    drafted: int  # candidates the target verified this step
    accepted: int  # of those, committed
    corrected: int  # 1 when a rejection was replaced by a residual sample
    target_token: int  # 1 when every draft passed and the target added its own token


@dataclass
class _StepWatcher:
    """A stopping criterion that stops only where `stop` (the rule every method shares) says so
    — generate() then ends after the step that crossed it, and the ids and counts are cut
    at the exact token afterwards. Called once per generate() step with the
    whole sequence, it pairs the newly committed tokens with the candidates the target
    was just shown (the tail of its last input beyond the committed length).

    "Accepted" = the committed tokens that agree with the candidates, as a prefix. A
    replacement token always differs from the draft it replaces (greedy: it is the
    argmax that the draft was not; sampling: the residual is zero at a rejected token),
    except in transformers' fallback to the target distribution when the residual
    underflows, where this count could be one too high.
    """

    prompt_len: int
    target: _ForwardMeter
    stop: Callable[[Sequence[int]], str | None] | None = None  # a reason once generation must end
    committed: list[int] = field(default_factory=list)
    steps: list[_Step] = field(default_factory=list)
    started: float = 0.0
    first_token_at: float | None = None
    _seen_calls: int = 0

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        committed_len = self.prompt_len + len(self.committed)
        new = input_ids[0, committed_len:].tolist()
        candidates = self._candidates(committed_len)
        accepted = 0
        while accepted < min(len(new), len(candidates)) and new[accepted] == candidates[accepted]:
            accepted += 1
        extra = len(new) - accepted  # 0 or 1
        rejected = accepted < len(candidates)
        self.steps.append(_Step(len(candidates), accepted, int(extra and rejected), int(extra and not rejected)))
        self.committed.extend(new)
        new_ends = range(committed_len - self.prompt_len + 1, len(self.committed) + 1)
        done = self.stop is not None and any(self.stop(self.committed[:end]) is not None for end in new_ends)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    def _candidates(self, committed_len: int) -> list[int]:
        """The drafts in the target's last forward: its input beyond the committed sequence."""
        if self.target.calls != self._seen_calls + 1 or self.target.last_input is None:
            raise RuntimeError("expected exactly one target forward per generate() step")
        self._seen_calls = self.target.calls
        fed = self.target.last_input[0]
        cache_len = self.target.last_cache_len
        if cache_len is None:  # no cache object passed: the first call feeds the whole prompt
            cache_len = 0 if self.target.calls == 1 else committed_len - 1
        n_candidates = cache_len + fed.shape[0] - committed_len
        return fed[fed.shape[0] - n_candidates :].tolist() if n_candidates > 0 else []
