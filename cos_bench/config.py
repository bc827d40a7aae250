"""Experiment configuration: one YAML file per experiment, parsed into frozen dataclasses.

Validation is strict on purpose: a typo'd key or a weight vector that does not sum to
one would otherwise silently run a different experiment than the file names (the
official CoS code's worst habit). Every rejection is a `CosBenchError` of the form
`<file>: <key>: <reason and fix>`.

The parsed config is fully resolved — default weights, γ per model, derived labels —
so the runner never re-applies defaults. `config_to_dict` gives the JSON/YAML form that
results files store; it parses back to an equal config.

Parse once: the file, the command-line options, `--set` items and a sweep cell's values are
merged as raw mappings (`merge_raw`) and `parse_config` builds the typed config a single time
from the result. A γ the user never wrote is simply absent from the raw mapping, so it is
defaulted against whichever proposer that config ends up with. Each config keeps the raw
mapping it was built from (`source`) so overrides and sweep cells merge into it, not into a
serialised copy.

Validation is hand-written rather than pydantic v2 (which typer pulls in, but cos-bench does
not depend on): every rejection here is one line naming the file, the key and the fix, and the
error messages are a tested contract; pydantic would need its ValidationError translated back
into that form for every field, and its coercions (`"5"` → 5, `1.0` → 1) are what this module
refuses on purpose. The checks are small functions, one per kind of value, so little is saved.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from cos_bench.core import DRAFT_POLICY_METHODS
from cos_bench.core.combine import COMBINATION_RULES, WEIGHT_TOLERANCE, CombinationRule, Contrastive, WeightedEnsemble
from cos_bench.core.drafting import DEFAULT_CONFIDENCE_THRESHOLD, DRAFT_POLICIES, AutoDraft, DraftPolicy, PassCost
from cos_bench.errors import CosBenchError
from cos_bench.methods import TWO_MODEL_WE_ONLY, method_names
from cos_bench.paper import PAPER_SETTINGS
from cos_bench.record import arm_method_name
from cos_bench.tasks import TASKS

# Package data, so an installed cos-bench has its configs; the repository's `configs/` links here.
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG_PATH = CONFIGS_DIR / "default.yaml"

# Method, task, rule and paper-setting names are looked up in their registries when a config is
# validated (cos_bench.methods, cos_bench.tasks.TASKS, core.combine.COMBINATION_RULES, paper.PAPER_SETTINGS):
# adding one never edits this file.
DTYPES = ("auto", "float32", "bfloat16", "float16")
# auto = compiled on CUDA, eager elsewhere (see cos_bench.engine.resolve_engine).
ENGINES = ("auto", "eager", "compiled")
# How `cos-bench sweep` runs its cells: in this process, or one Ray task per cell (cos_bench.executors).
EXECUTORS = ("local", "ray")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda|cuda:\d+|mps|multi-gpu")
# Model names appear in keys like `gamma.small` and in file names: no dots, no spaces.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
EXPERIMENT_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
DEFAULT_PROPOSER_GAMMA = 5  # paper: small model γ ∈ {1, 5}
DEFAULT_VERIFIER_GAMMA = 1  # paper: large model γ = 1
DEFAULT_MU = 0.1

TOP_LEVEL_KEYS = (
    "name", "paper_setting", "models", "combinations", "methods", "gamma", "proposer",
    "temperature", "tasks", "limit", "offset", "seed", "subjects", "max_new_tokens",
    "repeats", "warmup", "dtype", "device", "engine", "chat", "data_dir", "allow_code_eval", "sweep",
    "executor", "ray_address", "gpus_per_cell", "cpus_per_cell", "draft", "arms",
)  # fmt: skip
REQUIRED_KEYS = ("name", "models", "combinations")
MODEL_KEYS = ("name", "source")
SWEEP_KEYS = ("lambda", "mu", "gamma", "temperature", "proposer", "draft")
# `arms:` — more sd/cos variants in the same run, each its own γ and/or draft policy (see `Arm`).
ARM_KEYS = ("method", "gamma", "draft")
# `draft:` (a policy name, or a mapping): the policy, and the parameters of every policy (core.drafting).
DRAFT_KEYS = ("policy", *dict.fromkeys(p for cls in DRAFT_POLICIES.values() for p in cls.parameters))


class FrozenMap(Mapping):
    """A read-only, hashable mapping (keeps frozen configs frozen; unlike MappingProxyType it pickles)."""

    def __init__(self, items: Mapping | Sequence = ()) -> None:
        self._data = dict(items)

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the role name used everywhere else in the config (gamma, proposer, expert, ...)
    source: str  # hub id, local dir, .gguf path, or offline:<name>


class Combination(ABC):
    """One combination setting of a config: one frozen spec class per rule, listed in RULE_SPECS.

    `core` is the rule class it builds; its name (`rule`, as configs and records write it) is
    that class's key in the rule registry, core.combine.COMBINATION_RULES.
    """

    core: ClassVar[type[CombinationRule]]
    keys: ClassVar[tuple[str, ...]]  # the keys its config entry may have
    label: str

    @property
    def rule(self) -> str:
        return next(name for name, cls in COMBINATION_RULES.items() if cls is self.core)

    @classmethod
    @abstractmethod
    def parse(cls, origin: str, key: str, entry: Mapping, names: Sequence[str]) -> Combination:
        """Validate one raw `combinations[i]` entry (its keys already checked) against the model names."""

    @abstractmethod
    def build(self, model_names: Sequence[str]) -> CombinationRule:
        """The core rule, with roles resolved to positions in `model_names`."""

    @abstractmethod
    def to_dict(self) -> dict:
        """The entry as `config_to_dict` writes it (stored in manifests: keep it stable)."""


@dataclass(frozen=True)
class WeightedEnsembleSpec(Combination):
    """rule: we — the models' tempered distributions mixed with `weights`."""

    core: ClassVar[type[CombinationRule]] = WeightedEnsemble
    keys: ClassVar[tuple[str, ...]] = ("rule", "weights", "label")

    weights: tuple[float, ...]  # aligned with the models
    label: str

    @classmethod
    def parse(cls, origin: str, key: str, entry: Mapping, names: Sequence[str]) -> WeightedEnsembleSpec:
        n = len(names)
        raw = entry.get("weights")
        if raw is None:
            weights = tuple([1.0 / n] * n)  # paper default: uniform
        else:
            items = _list(origin, f"{key}.weights", raw)
            if len(items) != n:
                raise _fail(
                    origin,
                    f"{key}.weights",
                    f"needs one weight per model ({n}: {', '.join(names)}), got {len(items)}",
                )
            weights = tuple(_float(origin, f"{key}.weights[{i}]", w, minimum=0.0) for i, w in enumerate(items))
            total = math.fsum(weights)
            if abs(total - 1.0) > WEIGHT_TOLERANCE:
                raise _fail(origin, f"{key}.weights", f"must sum to 1 (got {total:.6g}); rescale them")
        return cls(weights, _label(origin, key, entry, _we_label(weights)))

    def build(self, model_names: Sequence[str]) -> CombinationRule:
        return WeightedEnsemble(self.weights)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "weights": list(self.weights), "label": self.label}


@dataclass(frozen=True)
class ContrastiveSpec(Combination):
    """rule: cd — the expert's logits minus μ times the amateur's (2 models, roles named)."""

    core: ClassVar[type[CombinationRule]] = Contrastive
    keys: ClassVar[tuple[str, ...]] = ("rule", "mu", "expert", "amateur", "plausibility_alpha", "label")

    mu: float
    expert: str
    amateur: str
    plausibility_alpha: float | None  # CD plausibility mask (off = None, as in the paper)
    label: str

    @classmethod
    def parse(cls, origin: str, key: str, entry: Mapping, names: Sequence[str]) -> ContrastiveSpec:
        if len(names) != 2:
            raise _fail(
                origin,
                f"{key}.rule",
                f"cd needs exactly 2 models (this config has {len(names)}); use rule: we or list two models",
            )
        mu = _float(origin, f"{key}.mu", entry.get("mu", DEFAULT_MU), minimum=0.0)
        # Roles are required, never guessed from model order: swapping them inverts the formula.
        roles = {}
        for role in ("expert", "amateur"):
            if entry.get(role) is None:
                raise _fail(origin, f"{key}.{role}", f"required for cd; name the {role} model ({' or '.join(names)})")
            roles[role] = _model_name(origin, f"{key}.{role}", entry[role], names)
        if roles["expert"] == roles["amateur"]:
            raise _fail(origin, f"{key}.amateur", "must differ from the expert; name the other model")
        alpha = entry.get("plausibility_alpha")
        if alpha is not None:
            alpha = _float(origin, f"{key}.plausibility_alpha", alpha, minimum=0.0, inclusive=False)
            if alpha >= 1:
                raise _fail(origin, f"{key}.plausibility_alpha", f"must be in (0, 1) or null (got {alpha:g})")
        label = f"cd-{_fmt(mu)}" + (f"-pa{_fmt(alpha)}" if alpha is not None else "")
        return cls(mu, roles["expert"], roles["amateur"], alpha, _label(origin, key, entry, label))

    def build(self, model_names: Sequence[str]) -> CombinationRule:
        return Contrastive(
            self.mu,
            expert_index=model_names.index(self.expert),
            amateur_index=model_names.index(self.amateur),
            plausibility_alpha=self.plausibility_alpha,
        )

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "mu": self.mu,
            "expert": self.expert,
            "amateur": self.amateur,
            "plausibility_alpha": self.plausibility_alpha,
            "label": self.label,
        }


# One spec per core rule class; the rule's name comes from core.combine.COMBINATION_RULES.
# A new rule: its class registered there, and its spec class listed here.
RULE_SPECS: tuple[type[Combination], ...] = (WeightedEnsembleSpec, ContrastiveSpec)


def _spec_for(rule: str) -> type[Combination]:
    return next(spec for spec in RULE_SPECS if spec.core is COMBINATION_RULES[rule])


@dataclass(frozen=True)
class DraftSpec:
    """`draft:` — how long `sd` and `cos` proposal runs are (core/drafting.py), with its parameters."""

    policy: str = "fixed"  # a name in core.drafting.DRAFT_POLICIES
    threshold: float | None = None  # confidence only: its draft probability below which a run ends
    gamma_max: int | None = None  # heuristic and auto only: the longest run (None = 2 × each model's γ)

    @property
    def label(self) -> str:
        """'fixed', 'confidence-0.4', 'heuristic', 'auto-max8': names sweep cells (folders) and report rows."""
        if self.threshold is not None:
            return f"{self.policy}-{_fmt(self.threshold)}"
        return self.policy + ("" if self.gamma_max is None else f"-max{self.gamma_max}")

    def build(self, step_costs: Sequence[float] | None = None, pass_costs: Sequence[PassCost] | None = None) -> DraftPolicy:
        """The core policy; `step_costs` (seconds per single-token step) and `pass_costs`, in model order, where measured."""
        cls = DRAFT_POLICIES[self.policy]
        policy = cls(**{key: getattr(self, key) for key in cls.parameters if getattr(self, key) is not None})
        return policy if step_costs is None else policy.calibrated(step_costs, pass_costs)

    def to_dict(self) -> dict:
        return {"policy": self.policy, **{key: getattr(self, key) for key in DRAFT_POLICIES[self.policy].parameters}}


@dataclass(frozen=True)
class Arm:
    """One more variant of `sd` or `cos` in the same run: its own γ and/or draft policy, decoded on the
    same prompts right after the run's methods, so every arm is timed against the same vanilla decodes
    (a sweep cell per variant would time a vanilla decode per cell, and hours apart)."""

    method: str  # one of core.DRAFT_POLICY_METHODS
    gamma: Mapping[str, int]  # every model: the run's γ with the arm's own laid over it
    draft: DraftSpec
    label: str  # what the arm changes, e.g. "gamma.small=3" or "confidence-0.4": names its records and report rows

    @property
    def key(self) -> str:
        """The method part of the arm's record keys, e.g. "cos[confidence-0.4]" (the base method's is "cos")."""
        return arm_method_name(self.method, self.label)

    def to_dict(self) -> dict:
        return {"method": self.method, "gamma": dict(self.gamma), "draft": self.draft.to_dict()}


@dataclass(frozen=True)
class SweepSpec:
    lambdas: tuple[float, ...]  # weight of the first model in 2-model WE
    mus: tuple[float, ...]
    gammas: Mapping[str, tuple[int, ...]]  # per model name
    temperatures: tuple[float, ...]
    proposers: tuple[str, ...]
    drafts: tuple[DraftSpec, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.lambdas or self.mus or self.gammas or self.temperatures or self.proposers or self.drafts)


@dataclass(frozen=True)
class ExecutorSpec:
    """How `cos-bench sweep` runs its cells (cos_bench.executors); `run` ignores it. The four
    top-level keys `executor`, `ray_address`, `gpus_per_cell` and `cpus_per_cell`."""

    kind: str  # local | ray
    ray_address: str | None  # None: $RAY_ADDRESS, else the latest cluster on this machine, else a new local one
    gpus_per_cell: int | None  # None: from `device` (executors.cell_resources)
    cpus_per_cell: int  # Ray sets a CPU cell's torch threads to this


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    paper_setting: str | None
    models: tuple[ModelSpec, ...]
    combinations: tuple[Combination, ...]
    methods: tuple[str, ...]
    gamma: Mapping[str, int]  # every model, in model order; defaults already applied
    proposer: str  # the default proposer's model name
    temperature: float
    tasks: tuple[str, ...]
    limit: int | None  # None = every example
    offset: int
    seed: int
    subjects: tuple[str, ...] | None
    max_new_tokens: Mapping[str, int]  # token budget per task, every registered task: see `budget`
    repeats: int
    warmup: int
    dtype: str
    device: str
    engine: str  # auto | eager | compiled
    chat: bool | None  # None = auto: use the chat template when the tokenizer has one
    data_dir: str | None
    allow_code_eval: bool
    sweep: SweepSpec | None
    executor: ExecutorSpec
    draft: DraftSpec = DraftSpec()
    arms: tuple[Arm, ...] = ()
    # The raw mapping this config was parsed from: overrides and sweep cells merge into it and
    # parse once (a γ the user did not write stays absent and follows the proposer). Not part
    # of equality: it is provenance, not configuration.
    source: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def budget(self, task: str) -> int:
        """The token budget of `task`'s decodes: the config's `max_new_tokens`, else the task's own."""
        return self.max_new_tokens[task]

    @property
    def longest_budget(self) -> int:
        """The largest budget among this config's tasks (what a static cache must hold)."""
        return max(self.budget(task) for task in self.tasks)

    @property
    def proposer_index(self) -> int:
        return self.model_names.index(self.proposer)

    @property
    def gammas(self) -> tuple[int, ...]:
        """γ per model, aligned with `models` (the form `theory.theoretical_speedup` takes)."""
        return tuple(self.gamma[name] for name in self.model_names)

    @property
    def longest_drafts(self) -> tuple[int, ...]:
        """The longest run each model may draft under the draft policy or any arm's (the compiled engine sizes blocks by it)."""
        return tuple(max(column) for column in zip(*self._caps()))

    @property
    def longest_auto_drafts(self) -> tuple[int, ...] | None:
        """As `longest_drafts`, over the policies that charge measured pass costs only (`auto` and its
        subclass `marginal`, the run's and its arms'); None where no decode drafts by one: calibration
        times every pass length up to these for them."""
        caps = self._caps(AutoDraft)
        return tuple(max(column) for column in zip(*caps)) if caps else None

    def _caps(self, kind: type[DraftPolicy] = DraftPolicy) -> list[tuple[int, ...]]:
        """Per draft spec (the run's, then each arm's; only policies of `kind` where given), the longest run it lets each model draft."""
        specs = [(self.draft, self.gammas), *((arm.draft, tuple(arm.gamma[name] for name in self.model_names)) for arm in self.arms)]
        return [spec.build().caps(gammas) for spec, gammas in specs if issubclass(DRAFT_POLICIES[spec.policy], kind)]


# --------------------------------------------------------------------------- errors and readers


class _KeyedOrigin(str):
    """The file's name, plus the keys a merge took from elsewhere (`gamma`, `gamma.small` -> "command line")."""

    def __new__(cls, default: str, by_key: Mapping[str, str]) -> _KeyedOrigin:
        origin = super().__new__(cls, default)
        origin.by_key = dict(by_key)
        return origin

    def of(self, key: str) -> str:
        path = key.split("[")[0]
        for candidate in (path, path.split(".")[0]):
            if candidate in self.by_key:
                return self.by_key[candidate]
        return str(self)


def _fail(origin: str, key: str, reason: str) -> CosBenchError:
    where = origin.of(key) if isinstance(origin, _KeyedOrigin) else origin
    return CosBenchError(f"{where}: {key}: {reason}")


def _check_keys(origin: str, prefix: str, data: Mapping, allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise _fail(origin, f"{prefix}{key}", f"unknown key; {hint}valid keys: {', '.join(allowed)}")


def _mapping(origin: str, key: str, value: Any) -> Mapping:
    if not isinstance(value, Mapping):
        raise _fail(origin, key, f"must be a mapping of key: value (got {_show(value)})")
    return value


def _list(origin: str, key: str, value: Any, *, min_len: int = 1) -> list:
    # tuples come from command-line overrides and from config_to_dict callers
    if not isinstance(value, (list, tuple)):
        raise _fail(origin, key, f"must be a list, e.g. [a, b] (got {_show(value)})")
    if len(value) < min_len:
        raise _fail(
            origin,
            key,
            f"must list at least {min_len} entr{'y' if min_len == 1 else 'ies'} (got {len(value)})",
        )
    return list(value)


def _str(origin: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(origin, key, f"must be a non-empty string (got {_show(value)})")
    return value


def _choice(origin: str, key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices or not isinstance(value, str):
        raise _fail(origin, key, f"must be one of {', '.join(choices)} (got {_show(value)})")
    return value


def _int(origin: str, key: str, value: Any, *, minimum: int) -> int:
    # bool is an int subclass in Python; `repeats: true` is a typo, not 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(origin, key, f"must be an integer ≥ {minimum} (got {_show(value)})")
    if value < minimum:
        raise _fail(origin, key, f"must be ≥ {minimum} (got {value})")
    return value


def _float(origin: str, key: str, value: Any, *, minimum: float, inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(origin, key, f"must be a finite number (got {_show(value)}); write decimals as 0.5 or 1.0e-3")
    if value < minimum or (not inclusive and value == minimum):
        raise _fail(origin, key, f"must be {'≥' if inclusive else '>'} {minimum:g} (got {value:g})")
    return float(value)


def _model_name(origin: str, key: str, value: Any, names: Sequence[str]) -> str:
    if value not in names or not isinstance(value, str):
        raise _fail(origin, key, f"unknown model {value!r}; use one of the model names: {', '.join(names)}")
    return value


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if value is not None else "null"


def _fmt(x: float) -> str:
    return f"{x:g}"  # 0.5 → "0.5", 0.0 → "0": labels stay short and stable


def _fmt_value(value: Any) -> str:
    return value if isinstance(value, str) else _fmt(value)


# --------------------------------------------------------------------------- section parsers


def _parse_models(origin: str, value: Any) -> tuple[ModelSpec, ...]:
    entries = _list(origin, "models", value, min_len=2)  # collaboration needs two models at least
    models: list[ModelSpec] = []
    for i, entry in enumerate(entries):
        key = f"models[{i}]"
        entry = _mapping(origin, key, entry)
        _check_keys(origin, f"{key}.", entry, MODEL_KEYS)
        for required in MODEL_KEYS:
            if required not in entry:
                raise _fail(origin, f"{key}.{required}", "required; give each model a name and a source")
        name = _str(origin, f"{key}.name", entry["name"])
        if not MODEL_NAME_PATTERN.fullmatch(name):
            raise _fail(
                origin,
                f"{key}.name",
                f"{name!r} must be letters, digits, '_' or '-' (it is used in keys like gamma.{name})",
            )
        if name in (m.name for m in models):
            raise _fail(origin, f"{key}.name", f"duplicate model name {name!r}; give each model its own name")
        source = _str(origin, f"{key}.source", entry["source"])
        if source.startswith("offline:") and not source[len("offline:") :].strip():
            raise _fail(
                origin,
                f"{key}.source",
                "offline: needs a model name after the colon, e.g. offline:qwen2.5-coder-0.5b-instruct",
            )
        models.append(ModelSpec(name=name, source=source))
    return tuple(models)


def _parse_combination(origin: str, key: str, value: Any, names: Sequence[str]) -> Combination:
    entry = _mapping(origin, key, value)
    if "rule" not in entry:
        raise _fail(origin, f"{key}.rule", f"required; use one of {', '.join(COMBINATION_RULES)}")
    spec = _spec_for(_choice(origin, f"{key}.rule", entry["rule"], tuple(COMBINATION_RULES)))
    _check_keys(origin, f"{key}.", entry, spec.keys)
    return spec.parse(origin, key, entry, names)


def _label(origin: str, key: str, entry: Mapping, derived: str) -> str:
    return derived if entry.get("label") is None else _str(origin, f"{key}.label", entry["label"])


def _we_label(weights: Sequence[float]) -> str:
    if len(weights) == 2:
        return f"we-{_fmt(weights[0])}"  # λ, the first model's weight
    if max(weights) - min(weights) < WEIGHT_TOLERANCE:
        return "we-uniform"
    return "we-" + "-".join(_fmt(w) for w in weights)


def _parse_combinations(origin: str, value: Any, names: Sequence[str]) -> tuple[Combination, ...]:
    entries = _list(origin, "combinations", value)
    combinations = tuple(_parse_combination(origin, f"combinations[{i}]", e, names) for i, e in enumerate(entries))
    labels = [c.label for c in combinations]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise _fail(
                origin,
                f"combinations[{i}].label",
                f"duplicate label {label!r}; set a distinct label for each combination",
            )
    return combinations


def _parse_choices(origin: str, key: str, value: Any, choices: Sequence[str]) -> tuple[str, ...]:
    items = _list(origin, key, value)
    out = tuple(_choice(origin, f"{key}[{i}]", item, choices) for i, item in enumerate(items))
    for i, item in enumerate(out):
        if item in out[:i]:
            raise _fail(origin, f"{key}[{i}]", f"{item!r} is listed twice; list it once")
    return out


def _gamma(origin: str, key: str, value: Any, max_new_tokens: int) -> int:
    """A draft length: an integer ≥ 1 and at most the token budget (the default γ is always allowed)."""
    gamma = _int(origin, key, value, minimum=1)
    limit = max(max_new_tokens, DEFAULT_PROPOSER_GAMMA)
    if gamma > limit:
        raise _fail(
            origin,
            key,
            f"must be ≤ {limit} (got {gamma}): a draft never runs past the token budget "
            f"(max_new_tokens = {max_new_tokens}, the smallest of this config's task budgets); lower it, or raise max_new_tokens",
        )
    return gamma


def _parse_gamma(origin: str, value: Any, names: Sequence[str], proposer: str, max_new_tokens: int, key: str = "gamma") -> FrozenMap:
    """γ per model: as written, else the default for this config's proposer (5) or a verifier (1)."""
    given = _mapping(origin, key, value if value is not None else {})
    written = {}
    for name, g in given.items():
        _model_name(origin, f"{key}.{name}", name, names)
        written[name] = _gamma(origin, f"{key}.{name}", g, max_new_tokens)
    return FrozenMap({name: written.get(name, DEFAULT_PROPOSER_GAMMA if name == proposer else DEFAULT_VERIFIER_GAMMA) for name in names})


def _parse_max_new_tokens(origin: str, value: Any) -> FrozenMap:
    """Budget per registered task: absent, null or `task` = each task's own (`Task.default_max_new_tokens`);
    a number = that for every task; a mapping {task: number} = those, the task's own for the rest."""
    budgets = {name: task.default_max_new_tokens for name, task in TASKS.items()}
    if value is None or value == "task":
        return FrozenMap(budgets)
    if isinstance(value, Mapping):
        for name, tokens in value.items():
            if name not in TASKS:
                raise _fail(origin, f"max_new_tokens.{name}", f"unknown task; use one of {', '.join(TASKS)}")
            budgets[name] = _int(origin, f"max_new_tokens.{name}", tokens, minimum=1)
        return FrozenMap(budgets)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(
            origin,
            "max_new_tokens",
            f"must be a whole number ≥ 1, `task` (each task's own budget) or a mapping such as {{gsm8k: 256}} (got {_show(value)})",
        )
    tokens = _int(origin, "max_new_tokens", value, minimum=1)
    return FrozenMap({name: tokens for name in budgets})


def _max_new_tokens_to_dict(budgets: Mapping[str, int]) -> int | dict[str, int]:
    # The resolved numbers, never `task`: a stored config must not change meaning when a task's
    # own budget does. One number when every task has the same (what configs before per-task budgets wrote).
    values = set(budgets.values())
    return values.pop() if len(values) == 1 else dict(budgets)


def _parse_methods(origin: str, value: Any, names: Sequence[str], combinations: Sequence[Combination]) -> tuple[str, ...]:
    methods = _parse_choices(origin, "methods", value, method_names())
    pair_only = [m for m in methods if m in TWO_MODEL_WE_ONLY]
    if pair_only:
        # The peer baseline exists for 2-model WE only; the runner skips it for cd combinations.
        has_we = any(isinstance(c, WeightedEnsembleSpec) for c in combinations)
        if len(names) != 2 or not has_we:
            found = f"{len(names)} models" if len(names) != 2 else "no we combination"
            listed = ", ".join(pair_only)
            raise _fail(
                origin,
                "methods",
                f"{listed} runs on 2-model we combinations only (found {found}); drop {listed} from methods",
            )
    return methods


def _parse_arms(
    origin: str,
    value: Any,
    data: Mapping,
    names: Sequence[str],
    proposer: str,
    gamma: Mapping[str, int],
    draft: DraftSpec,
    max_new_tokens: int,
) -> tuple[Arm, ...]:
    """`arms:` — each {method: sd|cos, gamma: {model: γ}, draft: policy}: γ merges per model over the run's,
    draft as `merge_raw` lays a draft over the run's; at least one must differ from the run's own."""
    if value is None:
        return ()
    arms: list[Arm] = []
    for i, entry in enumerate(_list(origin, "arms", value, min_len=0)):
        key = f"arms[{i}]"
        arm = _parse_arm(origin, key, entry, data, names, proposer, gamma, draft, max_new_tokens)
        if arm is None:
            raise _fail(origin, key, "changes nothing: give it a gamma or a draft policy that differs from the run's own, or drop it")
        if any(other.key == arm.key for other in arms):
            raise _fail(origin, key, f"{arm.key} is listed twice; list it once")
        arms.append(arm)
    return tuple(arms)


def _parse_arm(
    origin: str,
    key: str,
    entry: Any,
    data: Mapping,
    names: Sequence[str],
    proposer: str,
    gamma: Mapping[str, int],
    draft: DraftSpec,
    max_new_tokens: int,
) -> Arm | None:
    """One `arms:` entry; None when its γ and draft are the run's own (it would repeat the run's decodes)."""
    entry = _mapping(origin, key, entry)
    _check_keys(origin, f"{key}.", entry, ARM_KEYS)
    method = _choice(origin, f"{key}.method", entry.get("method"), DRAFT_POLICY_METHODS)
    merged = merge_raw(
        {"gamma": data.get("gamma") or {}, "draft": data.get("draft")}, {k: entry[k] for k in ("gamma", "draft") if k in entry}
    )
    arm_gamma = _parse_gamma(origin, merged["gamma"], names, proposer, max_new_tokens, f"{key}.gamma") if "gamma" in entry else gamma
    arm_draft = _parse_draft(origin, f"{key}.draft", merged["draft"], arm_gamma, max_new_tokens) if "draft" in entry else draft
    changed = [f"gamma.{n}={arm_gamma[n]}" for n in names if arm_gamma[n] != gamma[n]]
    if arm_draft != draft:
        changed.append(arm_draft.label)
    return Arm(method, arm_gamma, arm_draft, ",".join(changed)) if changed else None


def _parse_subjects(origin: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = _list(origin, "subjects", value)  # an empty list would silently select nothing
    return tuple(_str(origin, f"subjects[{i}]", s) for i, s in enumerate(items))


def _parse_chat(origin: str, value: Any) -> bool | None:
    if value is None or value == "auto":
        return None
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):  # command-line strings
        return value == "true"
    raise _fail(origin, "chat", f"must be auto, true or false (got {_show(value)})")


def _parse_device(origin: str, value: Any) -> str:
    if not isinstance(value, str) or not DEVICE_PATTERN.fullmatch(value):
        raise _fail(origin, "device", f"must be auto, cpu, cuda, cuda:N, mps or multi-gpu (got {_show(value)})")
    return value


def _parse_data_dir(origin: str, value: Any) -> str | None:
    if value is None:
        return None
    return _str(origin, "data_dir", str(value) if isinstance(value, Path) else value)


def _parse_bool(origin: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(origin, key, f"must be true or false (got {_show(value)})")
    return value


def _parse_executor(origin: str, data: Mapping) -> ExecutorSpec:
    address, gpus = data.get("ray_address"), data.get("gpus_per_cell")
    return ExecutorSpec(
        kind=_choice(origin, "executor", data.get("executor", "local"), EXECUTORS),
        ray_address=None if address is None else _str(origin, "ray_address", address),
        gpus_per_cell=None if gpus is None else _int(origin, "gpus_per_cell", gpus, minimum=0),
        cpus_per_cell=_int(origin, "cpus_per_cell", data.get("cpus_per_cell", 1), minimum=1),
    )


def _parse_sweep(
    origin: str, value: Any, names: Sequence[str], combinations: Sequence[Combination], max_new_tokens: int
) -> SweepSpec | None:
    if value is None:
        return None
    data = _mapping(origin, "sweep", value)
    _check_keys(origin, "sweep.", data, SWEEP_KEYS)

    def grid(key: str, read: Callable[[str, Any], Any]) -> tuple:
        if data.get(key) is None:
            return ()
        return tuple(read(f"sweep.{key}[{i}]", v) for i, v in enumerate(_list(origin, f"sweep.{key}", data[key])))

    lambdas = grid("lambda", lambda k, v: _lambda(origin, k, v))
    mus = grid("mu", lambda k, v: _float(origin, k, v, minimum=0.0))
    temperatures = grid("temperature", lambda k, v: _float(origin, k, v, minimum=0.0))
    proposers = grid("proposer", lambda k, v: _model_name(origin, k, v, names))
    # gamma_max is checked against γ by each cell, whose γ a gamma grid may change.
    drafts = grid("draft", lambda k, v: _parse_draft(origin, k, v, None, max_new_tokens))
    gammas = {}
    for name, values in _mapping(origin, "sweep.gamma", data.get("gamma") or {}).items():
        _model_name(origin, f"sweep.gamma.{name}", name, names)
        items = _list(origin, f"sweep.gamma.{name}", values)
        gammas[name] = tuple(_gamma(origin, f"sweep.gamma.{name}[{i}]", g, max_new_tokens) for i, g in enumerate(items))
    if lambdas and (len(names) != 2 or not any(isinstance(c, WeightedEnsembleSpec) for c in combinations)):
        raise _fail(
            origin,
            "sweep.lambda",
            "applies only to 2-model we combinations and this config has none; remove it or add a we combination",
        )
    if mus and not any(isinstance(c, ContrastiveSpec) for c in combinations):
        raise _fail(
            origin,
            "sweep.mu",
            "applies only to cd combinations and this config has none; remove it or add a cd combination",
        )
    spec = SweepSpec(lambdas, mus, FrozenMap({n: gammas[n] for n in names if n in gammas}), temperatures, proposers, drafts)
    return None if spec.is_empty else spec


def _parse_draft(origin: str, key: str, value: Any, gamma: Mapping[str, int] | None, max_new_tokens: int) -> DraftSpec:
    """A policy name or {policy, its parameters}; parameters of another policy are refused, not ignored."""
    if value is None:
        return DraftSpec()
    if not isinstance(value, (str, Mapping)):
        raise _fail(
            origin,
            key,
            f"must be a policy name ({', '.join(DRAFT_POLICIES)}) or a mapping such as {{policy: confidence, threshold: 0.4}} (got {_show(value)})",
        )
    entry = {"policy": value} if isinstance(value, str) else value
    _check_keys(origin, f"{key}.", entry, DRAFT_KEYS)
    policy = _choice(origin, key if isinstance(value, str) else f"{key}.policy", entry.get("policy", "fixed"), tuple(DRAFT_POLICIES))
    takes = DRAFT_POLICIES[policy].parameters
    for name in entry:
        if name != "policy" and name not in takes:
            owners = ", ".join(p for p, cls in DRAFT_POLICIES.items() if name in cls.parameters)
            raise _fail(
                origin, f"{key}.{name}", f"does not apply to the {policy} policy (only to {owners}); remove it or change the policy"
            )
    threshold = None
    if "threshold" in takes:  # resolved, never left unset: the label and the manifest name the number used
        given = entry.get("threshold")
        threshold = _float(
            origin, f"{key}.threshold", DEFAULT_CONFIDENCE_THRESHOLD if given is None else given, minimum=0.0, inclusive=False
        )
        if threshold >= 1:
            raise _fail(origin, f"{key}.threshold", f"must be in (0, 1): a probability (got {threshold:g}); e.g. 0.4")
    gamma_max = entry.get("gamma_max")
    if gamma_max is not None:
        gamma_max = _gamma(origin, f"{key}.gamma_max", gamma_max, max_new_tokens)
        if gamma is not None and gamma_max < max(gamma.values()):
            largest = max(gamma, key=gamma.get)
            raise _fail(
                origin,
                f"{key}.gamma_max",
                f"must be ≥ every model's gamma, runs start there (got {gamma_max}, gamma.{largest} = {gamma[largest]}); raise it",
            )
    return DraftSpec(policy, threshold, gamma_max)


def _lambda(origin: str, key: str, value: Any) -> float:
    lam = _float(origin, key, value, minimum=0.0)
    if lam > 1:
        raise _fail(origin, key, f"must be in [0, 1]: it is the first model's weight (got {lam:g})")
    return lam


# --------------------------------------------------------------------------- public API


def parse_config(data: Mapping, origin: str) -> ExperimentConfig:
    """Validate a raw config mapping (parsed YAML, merged overrides, or config_to_dict output) into
    the typed config, once; `origin` names it in errors."""
    data = _mapping(origin, "top level", data)
    _check_keys(origin, "", data, TOP_LEVEL_KEYS)
    for key in REQUIRED_KEYS:
        if data.get(key) is None:
            raise _fail(origin, key, f"required; see {DEFAULT_CONFIG_PATH} for an example")
    name = _str(origin, "name", data["name"])
    if not EXPERIMENT_NAME_PATTERN.fullmatch(name):
        raise _fail(origin, "name", f"{name!r} must be letters, digits, '.', '_' or '-' (it names result folders)")
    models = _parse_models(origin, data["models"])
    names = tuple(m.name for m in models)
    combinations = _parse_combinations(origin, data["combinations"], names)
    proposer = names[0] if data.get("proposer") is None else _model_name(origin, "proposer", data["proposer"], names)
    tasks = _parse_choices(origin, "tasks", data.get("tasks", ["humaneval"]), tuple(TASKS))
    max_new_tokens = _parse_max_new_tokens(origin, data.get("max_new_tokens"))
    shortest = min(max_new_tokens[task] for task in tasks)  # bounds γ: no draft runs past any task's budget
    gamma = _parse_gamma(origin, data.get("gamma"), names, proposer, shortest)
    paper_setting = data.get("paper_setting")
    if paper_setting is not None:
        paper_setting = _choice(origin, "paper_setting", paper_setting, tuple(PAPER_SETTINGS))
    limit = data.get("limit")
    draft = _parse_draft(origin, "draft", data.get("draft"), gamma, shortest)
    return ExperimentConfig(
        name=name,
        paper_setting=paper_setting,
        models=models,
        combinations=combinations,
        methods=_parse_methods(origin, data.get("methods", ["vanilla", "sd", "cos"]), names, combinations),
        gamma=gamma,
        proposer=proposer,
        temperature=_float(origin, "temperature", data.get("temperature", 0.0), minimum=0.0),
        tasks=tasks,
        limit=None if limit is None else _int(origin, "limit", limit, minimum=1),
        offset=_int(origin, "offset", data.get("offset", 0), minimum=0),
        seed=_int(origin, "seed", data.get("seed", 0), minimum=0),
        subjects=_parse_subjects(origin, data.get("subjects")),
        max_new_tokens=max_new_tokens,
        repeats=_int(origin, "repeats", data.get("repeats", 1), minimum=1),
        warmup=_int(origin, "warmup", data.get("warmup", 1), minimum=0),
        dtype=_choice(origin, "dtype", data.get("dtype", "auto"), DTYPES),
        device=_parse_device(origin, data.get("device", "auto")),
        engine=_choice(origin, "engine", data.get("engine", "auto"), ENGINES),
        chat=_parse_chat(origin, data.get("chat", "auto")),
        data_dir=_parse_data_dir(origin, data.get("data_dir")),
        allow_code_eval=_parse_bool(origin, "allow_code_eval", data.get("allow_code_eval", False)),
        sweep=_parse_sweep(origin, data.get("sweep"), names, combinations, shortest),
        executor=_parse_executor(origin, data),
        draft=draft,
        arms=_parse_arms(origin, data.get("arms"), data, names, proposer, gamma, draft, shortest),
        source=copy.deepcopy(dict(data)),
    )


def read_config_file(path: str | Path) -> dict:
    """One experiment YAML file as its raw top-level mapping (not yet validated)."""
    origin = str(path)
    path = Path(path)
    if not path.is_file():
        shipped = ", ".join(p.name for p in sorted(CONFIGS_DIR.glob("*.yaml"))) or "none found"
        raise CosBenchError(
            f"{origin}: config file not found; pass --config with an existing YAML file (shipped in {CONFIGS_DIR}: {shipped})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CosBenchError(
            f"{origin}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"
        ) from None
    except OSError as exc:
        raise CosBenchError(f"{origin}: cannot read it ({exc.strerror or exc}); check its permissions") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 — SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CosBenchError(f"{origin}: not valid YAML ({_yaml_problem(exc)}); fix the syntax there") from exc
    if data is None:
        raise CosBenchError(f"{origin}: the file is empty; see {DEFAULT_CONFIG_PATH} for an example")
    return dict(_mapping(origin, "top level", data))


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate one experiment YAML file."""
    return parse_config(read_config_file(path), str(path))


def config_to_dict(cfg: ExperimentConfig) -> dict:
    """The effective config as plain JSON/YAML types; `parse_config` turns it back into an equal config."""
    return {
        "name": cfg.name,
        "paper_setting": cfg.paper_setting,
        "models": [{"name": m.name, "source": m.source} for m in cfg.models],
        "combinations": [c.to_dict() for c in cfg.combinations],
        "methods": list(cfg.methods),
        "gamma": dict(cfg.gamma),
        "proposer": cfg.proposer,
        "draft": cfg.draft.to_dict(),
        "arms": [arm.to_dict() for arm in cfg.arms],
        "temperature": cfg.temperature,
        "tasks": list(cfg.tasks),
        "limit": cfg.limit,
        "offset": cfg.offset,
        "seed": cfg.seed,
        "subjects": None if cfg.subjects is None else list(cfg.subjects),
        "max_new_tokens": _max_new_tokens_to_dict(cfg.max_new_tokens),
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "dtype": cfg.dtype,
        "device": cfg.device,
        "engine": cfg.engine,
        "chat": "auto" if cfg.chat is None else cfg.chat,
        "data_dir": cfg.data_dir,
        "allow_code_eval": cfg.allow_code_eval,
        "sweep": _sweep_to_dict(cfg.sweep),
        "executor": cfg.executor.kind,
        "ray_address": cfg.executor.ray_address,
        "gpus_per_cell": cfg.executor.gpus_per_cell,
        "cpus_per_cell": cfg.executor.cpus_per_cell,
    }


def merge_raw(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """`overrides` laid over a raw config mapping: `gamma` merges per model, `draft` per parameter while
    its policy stays (`_merge_draft`), every other key replaces."""
    merged = copy.deepcopy(dict(data))
    for key, value in overrides.items():
        if key == "gamma" and isinstance(value, Mapping) and isinstance(merged.get("gamma"), Mapping):
            merged["gamma"] = {**merged["gamma"], **value}
        elif key == "draft":
            merged["draft"] = _merge_draft(merged.get("draft"), copy.deepcopy(value))
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_draft(base: Any, override: Any) -> Any:
    """`--draft-threshold 0.3` over `draft: confidence` keeps the policy; a new policy starts from its own defaults."""
    base = {"policy": base} if isinstance(base, str) else base
    override = {"policy": override} if isinstance(override, str) else override
    if not isinstance(base, Mapping) or not isinstance(override, Mapping):
        return override  # nothing to merge with (or not a mapping: parse_config says so)
    if override.get("policy", base.get("policy", "fixed")) != base.get("policy", "fixed"):
        return override
    return {**base, **override}


def apply_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any], origin: str = "command line") -> ExperimentConfig:
    """`cfg`'s raw mapping with `overrides` merged in (`merge_raw`), parsed once.

    γ values the file did not set stay unset, so overriding `proposer` gives the new proposer γ=5.
    `cfg` was valid, so any error is the overrides' and names `origin`.
    """
    return parse_config(merge_raw(cfg.source, overrides), origin)


def config_from_command_line(
    path: str | Path | None,
    options: Mapping[str, Any],
    sets: Sequence[str] | None = None,
    grids: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """The config file (default: the shipped default.yaml) with the command line merged in, validated once.

    `options` maps config keys to the options' raw values (None = not given); `sets` are
    `--set KEY=YAML` items, applied after them; `grids` maps sweep axes to the raw grid
    options (`--lambda 0.2,0.8`, `--gamma-grid small=1,3`) and becomes the config's `sweep`.
    """
    path = path or DEFAULT_CONFIG_PATH
    raw = read_config_file(path)
    given = {key: _OPTION_READERS.get(key, _as_given)(value) for key, value in options.items() if value is not None}
    given = {key: value for key, value in given.items() if value is not None}
    given = merge_raw(given, parse_sets(sets))
    grid = {axis: _GRID_READERS[axis](text) for axis, text in (grids or {}).items() if text}
    grid = {axis: values for axis, values in grid.items() if values}
    if grid:
        given["sweep"] = grid
    return parse_config(merge_raw(raw, given), _merged_origin(str(path), given, "command line"))


def _merged_origin(default: str, overrides: Mapping[str, Any], origin: str) -> str:
    """Errors name `origin` for an overridden key (per model for `gamma`), `default` for the rest."""
    by_key = {key: origin for key in overrides}
    if isinstance(overrides.get("gamma"), Mapping):  # merged per model: the file's own entries keep its name
        del by_key["gamma"]
        by_key.update({f"gamma.{name}": origin for name in overrides["gamma"]})
    return _KeyedOrigin(default, by_key) if by_key else default


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """`--set KEY=VALUE` for any config field; VALUE is YAML (`--set 'subjects=[anatomy]'`)."""
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CosBenchError(f"--set {item!r}: write KEY=VALUE with a config field name (e.g. --set offset=10)")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise CosBenchError(f"--set {item!r}: the value is not valid YAML; quote it, e.g. --set 'subjects=[anatomy]'") from None
    return values


def parse_gamma_option(values: Sequence[str] | None, *, grid: bool = False) -> dict[str, Any] | None:
    """`--gamma small=5` (one per model) or `--gamma-grid small=1,3,5` -> {model: value(s)}."""
    if not values:
        return None
    option, example = ("--gamma-grid", "--gamma-grid small=1,3,5") if grid else ("--gamma", "--gamma small=5")
    gammas: dict[str, Any] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep or not raw.strip():
            raise CosBenchError(f"{option} {item!r}: write MODEL=N (e.g. {example})")
        numbers = [_whole_number(x, f"{option} {name.strip()}", example) for x in raw.split(",")]
        if not grid and len(numbers) > 1:
            raise CosBenchError(f"{option} {item!r}: one draft length per model; grids belong to `sweep --gamma-grid`")
        gammas[name.strip()] = numbers if grid else numbers[0]
    return gammas


def _as_given(value: Any) -> Any:
    return value


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CosBenchError(f"{what}: {text!r} is not a number; write e.g. 0.5") from None


def _whole_number(text: str, what: str, example: str) -> int:
    """An integer as written: "2.7", "nan", "inf" and "1e3" are refused, never truncated."""
    try:
        return int(text.strip())
    except ValueError:
        raise CosBenchError(f"{what}: {text.strip()!r} is not a whole number; write e.g. {example}") from None


def _numbers(option: str) -> Callable[[str], list[float]]:
    return lambda text: [_number(x, option) for x in _comma_list(text)]


def _given_draft(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """`--draft NAME`, `--draft-threshold X`, `--draft-gamma-max N` -> the `draft` override; None when none is given."""
    given = {key: value for key, value in options.items() if value is not None}
    return given or None


def _draft_grid(options: tuple[str | None, Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """`sweep --draft fixed,confidence --draft-threshold 0.3` -> one entry per policy, each with the given
    parameters it takes (a parameter no listed policy takes is refused, not dropped)."""
    names, parameters = options
    if not names:
        return None
    given = _given_draft(parameters) or {}
    takes = {name: DRAFT_POLICIES[name].parameters if name in DRAFT_POLICIES else () for name in _comma_list(names)}
    for key in given:
        if not any(key in parameters for parameters in takes.values()):
            owners = ", ".join(name for name, cls in DRAFT_POLICIES.items() if key in cls.parameters)
            raise CosBenchError(
                f"--draft-{key.replace('_', '-')}: no policy in --draft {names} takes it (only {owners}); add one to --draft or drop the option"
            )
    return [{"policy": name, **{key: value for key, value in given.items() if key in takes[name]}} for name in takes]


# How a command-line option's raw value becomes a config value; options not listed arrive typed.
_OPTION_READERS: dict[str, Callable[[Any], Any]] = {
    "tasks": _comma_list,
    "methods": _comma_list,
    "gamma": parse_gamma_option,
    "allow_code_eval": lambda flag: True if flag else None,  # a flag left off keeps the file's value
    "draft": _given_draft,
}
# The same for the sweep's grid options, keyed by SWEEP_KEYS.
_GRID_READERS: dict[str, Callable[[Any], Any]] = {
    "lambda": _numbers("--lambda"),
    "mu": _numbers("--mu"),
    "gamma": lambda values: parse_gamma_option(values, grid=True),
    "temperature": _numbers("--temperatures"),
    "proposer": _comma_list,
    "draft": _draft_grid,
}


@dataclass(frozen=True)
class SweepCell:
    """One point of a sweep grid: its swept values, the label naming its folder, and its config."""

    values: Mapping[str, Any]  # swept key ("lambda", "gamma.small", ...) -> value, in label order
    config: ExperimentConfig

    @property
    def label(self) -> str:
        return _cell_label(self.values)


def sweep_cells(cfg: ExperimentConfig) -> list[SweepCell]:
    """Expand the sweep grid: one cell (values, config without a sweep) per point of the Cartesian product.

    Each cell's values are merged into the config's raw mapping and parsed once: λ sets
    [λ, 1−λ] on every we combination, μ sets every cd combination's μ (their labels are
    derived again); gamma, temperature, proposer and draft set the top-level values. A draft
    policy appears in the cell's values (and records) by its label, e.g. "confidence-0.4". An arm
    that a cell's own γ or draft equals is dropped from that cell: the cell's own method is it.
    """
    if cfg.sweep is None or cfg.sweep.is_empty:
        raise CosBenchError(
            f"{cfg.name}: sweep: nothing to sweep; add a `sweep:` section to the config "
            "(e.g. sweep: {lambda: [0.2, 0.5, 0.8]}) or pass grids on the command line"
        )
    axes = _sweep_axes(cfg.sweep)
    cells = []
    for point in itertools.product(*(values for _, values in axes)):
        data = merge_raw(cfg.source, {"sweep": None})
        for (key, _), value in zip(axes, point):
            _apply_cell_value(data, key, value)
        values = FrozenMap({key: value.label if isinstance(value, DraftSpec) else value for (key, _), value in zip(axes, point)})
        data["combinations"] = _dedupe(data["combinations"])  # several we combos collapse under one λ
        origin = f"{cfg.name} sweep cell {_cell_label(values)}"
        _drop_own_arms(data, origin)
        cells.append(SweepCell(values, parse_config(data, origin)))
    return cells


def _drop_own_arms(data: dict, origin: str) -> None:
    """Drop the arms a sweep cell makes its own: in a γ or draft cell at an arm's value, that arm is the
    cell's own `sd`/`cos`, whose decodes the cell already has (outside a sweep such an arm is an error)."""
    entries = data.get("arms")
    if not isinstance(entries, list) or not entries:
        return  # nothing to drop; parse_config reports a malformed value
    own = parse_config({**data, "arms": None}, origin)
    shortest = min(own.budget(task) for task in own.tasks)
    data["arms"] = [
        entry
        for i, entry in enumerate(entries)
        if not isinstance(entry, Mapping)
        or entry.get("method") not in own.methods
        or _parse_arm(origin, f"arms[{i}]", entry, data, own.model_names, own.proposer, own.gamma, own.draft, shortest) is not None
    ]


# --------------------------------------------------------------------------- internals


def _cell_label(values: Mapping[str, Any]) -> str:
    """'lambda=0.5,gamma.small=3': names a cell's folder; stored records keep the values themselves."""
    return ",".join(f"{key}={_fmt_value(value)}" for key, value in values.items())


def _sweep_axes(sweep: SweepSpec) -> list[tuple[str, tuple]]:
    """(swept key, values) for each non-empty axis, in label order."""
    axes = [("lambda", sweep.lambdas), ("mu", sweep.mus)]
    axes += [(f"gamma.{name}", values) for name, values in sweep.gammas.items()]
    axes += [("temperature", sweep.temperatures), ("proposer", sweep.proposers), ("draft", sweep.drafts)]
    return [(key, values) for key, values in axes if values]


def _apply_cell_value(data: dict, key: str, value: Any) -> None:
    """One swept value laid over a raw config mapping."""
    if key == "lambda":
        _set_rule(data, WeightedEnsemble, weights=[value, 1.0 - value])
    elif key == "mu":
        _set_rule(data, Contrastive, mu=value)
    elif key.startswith("gamma."):
        data["gamma"] = {**(data.get("gamma") or {}), key[len("gamma.") :]: value}
    elif key == "draft":
        data["draft"] = value.to_dict()  # a whole policy: nothing of the config's own draft carries over
    else:
        data[key] = value


def _set_rule(data: dict, core: type[CombinationRule], **values: Any) -> None:
    combinations = [dict(c) for c in data["combinations"]]
    for combination in combinations:
        if COMBINATION_RULES[combination["rule"]] is core:
            combination.update(values)
            combination.pop("label", None)  # a hand-written label would now lie; derive it again
    data["combinations"] = combinations


def _dedupe(items: list) -> list:
    # Entries that differ only in keys written as null are the same combination.
    items = [{k: v for k, v in item.items() if v is not None} if isinstance(item, Mapping) else item for item in items]
    return [item for i, item in enumerate(items) if item not in items[:i]]


def _sweep_to_dict(s: SweepSpec | None) -> dict | None:
    if s is None:
        return None
    out = {
        "lambda": list(s.lambdas),
        "mu": list(s.mus),
        "gamma": {name: list(values) for name, values in s.gammas.items()},
        "temperature": list(s.temperatures),
        "proposer": list(s.proposers),
        "draft": [d.to_dict() for d in s.drafts],
    }
    return {key: value for key, value in out.items() if value}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what PyYAML found and where (its own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}; keep one", key_node.start_mark)
        if isinstance(key, (str, int, float, bool)):
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
