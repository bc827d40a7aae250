"""Every list of names derives from its registry: registering a method, task or rule is enough for configs."""

from __future__ import annotations

import copy
import dataclasses
from typing import ClassVar

import pytest

from cos_bench import config, metrics, paper, theory
from cos_bench.config import parse_config
from cos_bench.core import CORE_METHODS
from cos_bench.core.combine import COMBINATION_RULES, WEIGHT_TOLERANCE, WeightedEnsemble
from cos_bench.errors import CosBenchError
from cos_bench.methods import METHOD_NAMES, METHODS, method_names
from cos_bench.tasks import TASK_NAMES, TASKS
from cos_bench.tasks.gsm8k import GSM8K

BASE = {
    "name": "t",
    "models": [{"name": "small", "source": "offline:a"}, {"name": "large", "source": "offline:b"}],
    "combinations": [{"rule": "we", "weights": [0.5, 0.5]}],
}


def parse(**changes):
    return parse_config({**copy.deepcopy(BASE), **changes}, "test")


def test_method_names_are_the_core_registry_plus_the_wrapped_peer():
    # The peer both ways: transformers' own drafting defaults, and matched to the run's γ.
    assert METHOD_NAMES == (*CORE_METHODS, "hf-ensemble", "hf-ensemble-matched") == method_names()
    assert metrics.METHOD_ORDER == METHOD_NAMES
    assert theory.KNOWN_METHODS == METHOD_NAMES


def test_task_names_are_the_task_registry():
    assert TASK_NAMES == tuple(TASKS)


def test_config_keeps_no_list_of_its_own():
    for name in ("METHODS", "RULES", "WEIGHT_SUM_TOLERANCE"):
        assert not hasattr(config, name), name
    assert config.TASKS is TASKS and config.PAPER_SETTINGS is paper.PAPER_SETTINGS


def test_a_registered_method_is_accepted_by_config(monkeypatch):
    with pytest.raises(CosBenchError, match=r"methods\[0\]: must be one of vanilla, sd, cos, hf-ensemble, hf-ensemble-matched"):
        parse(methods=["toy"])
    monkeypatch.setitem(METHODS, "toy", lambda *args: None)
    assert parse(methods=["vanilla", "toy"]).methods == ("vanilla", "toy")


def test_a_registered_task_is_accepted_by_config(monkeypatch):
    with pytest.raises(CosBenchError, match="tasks"):
        parse(tasks=["toy"])
    monkeypatch.setitem(TASKS, "toy", GSM8K)
    assert parse(tasks=["toy", "mmlu"]).tasks == ("toy", "mmlu")


def test_rule_choices_come_from_the_rule_registry(monkeypatch):
    monkeypatch.setitem(COMBINATION_RULES, "toy", WeightedEnsemble)
    with pytest.raises(CosBenchError, match="must be one of we, cd, toy"):
        parse(combinations=[{"rule": "nope"}])


@pytest.mark.parametrize("setting", list(paper.PAPER_SETTINGS))
def test_every_paper_setting_is_accepted(setting):
    assert parse(paper_setting=setting).paper_setting == setting


def test_an_unknown_paper_setting_lists_the_papers_settings():
    with pytest.raises(CosBenchError, match="must be one of " + ", ".join(paper.PAPER_SETTINGS)):
        parse(paper_setting="gpt-5-we")


@pytest.mark.parametrize(("excess", "accepted"), [(0.5, True), (2.0, False)])
def test_config_and_core_share_one_weight_tolerance(excess, accepted):
    weights = [0.5, 0.5 + excess * WEIGHT_TOLERANCE]
    if accepted:
        assert parse(combinations=[{"rule": "we", "weights": weights}]).combinations[0].weights == tuple(weights)
        assert WeightedEnsemble(weights).weights == tuple(weights)
        return
    with pytest.raises(CosBenchError, match="must sum to 1"):
        parse(combinations=[{"rule": "we", "weights": weights}])
    with pytest.raises(CosBenchError, match="must sum to 1"):
        WeightedEnsemble(weights)


def test_a_new_rule_is_one_spec_class_and_one_registration(monkeypatch):
    class Toy(WeightedEnsemble):
        pass

    @dataclasses.dataclass(frozen=True)
    class ToySpec(config.Combination):
        core: ClassVar[type] = Toy
        keys: ClassVar[tuple[str, ...]] = ("rule", "label")
        label: str

        @classmethod
        def parse(cls, origin, key, entry, names):
            return cls(entry.get("label") or "toy")

        def build(self, model_names):
            return Toy([1 / len(model_names)] * len(model_names))

        def to_dict(self):
            return {"rule": self.rule, "label": self.label}

    monkeypatch.setitem(COMBINATION_RULES, "toy", Toy)
    monkeypatch.setattr(config, "RULE_SPECS", (*config.RULE_SPECS, ToySpec))
    cfg = parse(combinations=[{"rule": "toy"}, {"rule": "we"}])
    toy = cfg.combinations[0]
    assert (toy.rule, toy.label, config.config_to_dict(cfg)["combinations"][0]) == ("toy", "toy", {"rule": "toy", "label": "toy"})
    assert isinstance(toy.build(cfg.model_names), Toy)
