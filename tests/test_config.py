"""Experiment configs: shipped files validate, every rejection names file + key, overrides, round-trip, sweeps."""

import copy
import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from cos_bench.config import (
    CONFIGS_DIR,
    DEFAULT_CONFIG_PATH,
    PAPER_SETTINGS,
    ContrastiveSpec,
    ExperimentConfig,
    WeightedEnsembleSpec,
    apply_overrides,
    config_from_command_line,
    config_to_dict,
    load_config,
    parse_config,
    sweep_cells,
)
from cos_bench.core.combine import Contrastive, WeightedEnsemble
from cos_bench.errors import CosBenchError

SHIPPED = sorted(CONFIGS_DIR.glob("*.yaml"))

BASE = {
    "name": "t",
    "models": [{"name": "small", "source": "offline:a"}, {"name": "large", "source": "offline:b"}],
    "combinations": [
        {"rule": "we", "weights": [0.5, 0.5]},
        {"rule": "cd", "mu": 0.1, "expert": "large", "amateur": "small"},
    ],
}
THREE_MODELS = [{"name": n, "source": f"offline:{n}"} for n in ("a", "b", "c")]


def base(**changes) -> dict:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_validates_and_round_trips(path):
    cfg = load_config(path)
    assert parse_config(config_to_dict(cfg), "round trip") == cfg
    if cfg.sweep is not None:
        assert sweep_cells(cfg)


def test_every_paper_setting_has_a_shipped_config():
    shipped = {load_config(p).paper_setting for p in SHIPPED}
    assert set(PAPER_SETTINGS) <= shipped


def test_default_config_is_the_offline_coder_pair():
    cfg = load_config(DEFAULT_CONFIG_PATH)
    assert [m.source for m in cfg.models] == ["offline:qwen2.5-coder-0.5b-instruct", "offline:qwen2.5-coder-1.5b-instruct"]
    assert [c.label for c in cfg.combinations] == ["we-0.5", "cd-0.1"]
    assert (cfg.combinations[1].expert, cfg.combinations[1].amateur) == ("large", "small")
    assert cfg.methods == ("vanilla", "sd", "cos")
    assert dict(cfg.gamma) == {"small": 5, "large": 1} and cfg.proposer == "small"
    assert (cfg.temperature, cfg.tasks, cfg.chat, cfg.allow_code_eval) == (0.0, ("humaneval",), None, False)


# --------------------------------------------------------------------------- defaults


def test_defaults_are_resolved():
    cfg = parse_config(base(), "x")
    assert cfg.proposer == "small" and cfg.proposer_index == 0
    assert dict(cfg.gamma) == {"small": 5, "large": 1} and cfg.gammas == (5, 1)
    assert (cfg.temperature, cfg.limit, cfg.warmup, cfg.repeats, cfg.dtype, cfg.device) == (0.0, None, 1, 1, "auto", "auto")
    assert cfg.sweep is None


def test_uniform_weights_and_derived_labels():
    cfg = parse_config(base(models=THREE_MODELS, combinations=[{"rule": "we"}]), "x")
    assert cfg.combinations[0].weights == pytest.approx((1 / 3,) * 3)
    assert cfg.combinations[0].label == "we-uniform"
    cd = {"rule": "cd", "mu": 0.5, "expert": "large", "amateur": "small", "plausibility_alpha": 0.1}
    cfg = parse_config(base(combinations=[{"rule": "we", "weights": [0.3, 0.7]}, cd]), "x")
    assert [c.label for c in cfg.combinations] == ["we-0.3", "cd-0.5-pa0.1"]


def test_one_third_weights_within_tolerance():
    cfg = parse_config(base(models=THREE_MODELS, combinations=[{"rule": "we", "weights": [0.3333333, 0.3333333, 0.3333333]}]), "x")
    assert len(cfg.combinations[0].weights) == 3


def test_config_is_frozen():
    cfg = parse_config(base(), "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.limit = 3
    with pytest.raises(TypeError):
        cfg.gamma["small"] = 2


# --------------------------------------------------------------------------- rejections


def cd2():
    return [{"rule": "cd", "mu": 0.1, "expert": BASE["models"][1]["name"], "amateur": BASE["models"][0]["name"]}]


def cd3():
    return [{"rule": "cd", "mu": 0.1, "expert": "a", "amateur": "b"}]


REJECTIONS = {
    "unknown top-level key": (base(temprature=0.5), "temprature"),
    "unknown model key": (base(models=[{"name": "small", "source": "x", "revision": "main"}, BASE["models"][1]]), "models[0].revision"),
    "unknown combination key": (base(combinations=[{"rule": "we", "mu": 0.1}]), "combinations[0].mu"),
    "unknown sweep key": (base(sweep={"lambdas": [0.5]}), "sweep.lambdas"),
    "missing name": ({k: v for k, v in BASE.items() if k != "name"}, "name"),
    "missing combinations": ({k: v for k, v in BASE.items() if k != "combinations"}, "combinations"),
    "one model": (base(models=BASE["models"][:1], combinations=[{"rule": "we"}]), "models"),
    "duplicate model name": (base(models=[BASE["models"][0], BASE["models"][0]]), "models[1].name"),
    "model name with dot": (base(models=[{"name": "a.b", "source": "x"}, BASE["models"][1]]), "models[0].name"),
    "limit is a string": (base(limit="5"), "limit"),
    "limit zero": (base(limit=0), "limit"),
    "temperature a string": (base(temperature="hot"), "temperature"),
    "repeats a bool": (base(repeats=True), "repeats"),
    "max_new_tokens a float": (base(max_new_tokens=5.0), "max_new_tokens"),
    "warmup negative": (base(warmup=-1), "warmup"),
    "methods not a list": (base(methods="cos"), "methods"),
    "models not a list": (base(models={"small": "x"}), "models"),
    "weights sum 0.9": (base(combinations=[{"rule": "we", "weights": [0.4, 0.5]}]), "combinations[0].weights: must sum to 1 (got 0.9)"),
    "negative weight": (base(combinations=[{"rule": "we", "weights": [1.5, -0.5]}]), "combinations[0].weights[1]"),
    "wrong weight count": (base(combinations=[{"rule": "we", "weights": [1.0]}]), "combinations[0].weights"),
    "mu negative": (base(combinations=[{"rule": "cd", "mu": -0.1, "expert": "large", "amateur": "small"}]), "combinations[0].mu"),
    "plausibility alpha 1": (
        base(combinations=[{"rule": "cd", "expert": "large", "amateur": "small", "plausibility_alpha": 1.0}]),
        "combinations[0].plausibility_alpha",
    ),
    "cd roles missing": (base(combinations=[{"rule": "cd", "mu": 0.1}]), "combinations[0].expert"),
    "cd same roles": (base(combinations=[{"rule": "cd", "expert": "large", "amateur": "large"}]), "combinations[0].amateur"),
    "cd unknown expert": (base(combinations=[{"rule": "cd", "expert": "huge", "amateur": "small"}]), "combinations[0].expert"),
    "cd with 3 models": (base(models=THREE_MODELS, combinations=cd3()), "combinations[0].rule"),
    "unknown rule": (base(combinations=[{"rule": "product"}]), "combinations[0].rule"),
    "duplicate labels": (base(combinations=[{"rule": "we"}, {"rule": "we", "weights": [0.5, 0.5]}]), "combinations[1].label"),
    "gamma zero": (base(gamma={"small": 0}), "gamma.small"),
    "gamma a float": (base(gamma={"small": 2.7}), "gamma.small"),
    "gamma a string": (base(gamma={"small": "3"}), "gamma.small"),
    "gamma a bool": (base(gamma={"small": True}), "gamma.small"),
    "gamma past the token budget": (base(gamma={"small": 10**20}), "gamma.small: must be ≤ 384"),  # humaneval's own budget
    "sweep gamma past the token budget": (base(max_new_tokens=16, sweep={"gamma": {"small": [1, 17]}}), "sweep.gamma.small[1]"),
    "gamma unknown model": (base(gamma={"huge": 3}), "gamma.huge"),
    "proposer unknown model": (base(proposer="huge"), "proposer"),
    "negative temperature": (base(temperature=-0.5), "temperature"),
    "unknown method": (base(methods=["vanilla", "medusa"]), "methods[1]"),
    "duplicate method": (base(methods=["cos", "cos"]), "methods[1]"),
    "unknown task": (base(tasks=["humaneval", "cnndm"]), "tasks[1]"),
    "hf-ensemble with cd only": (base(combinations=cd2(), methods=["vanilla", "hf-ensemble"]), "methods"),
    "hf-ensemble with 3 models": (base(models=THREE_MODELS, combinations=[{"rule": "we"}], methods=["hf-ensemble"]), "methods"),
    "hf-ensemble-matched with cd only": (
        base(combinations=cd2(), methods=["vanilla", "hf-ensemble-matched"]),
        "hf-ensemble-matched runs on 2-model we combinations only (found no we combination)",
    ),
    "bad paper setting": (base(paper_setting="gpt4-we"), "paper_setting"),
    "bad dtype": (base(dtype="int8"), "dtype"),
    "bad device": (base(device="tpu"), "device"),
    "bad chat": (base(chat="maybe"), "chat"),
    "code eval not bool": (base(allow_code_eval="yes please"), "allow_code_eval"),
    "empty subjects": (base(subjects=[]), "subjects"),
    "sweep lambda above 1": (base(sweep={"lambda": [0.5, 1.5]}), "sweep.lambda[1]"),
    "sweep lambda without we": (base(combinations=BASE["combinations"][1:], sweep={"lambda": [0.5]}), "sweep.lambda"),
    "sweep mu without cd": (base(combinations=BASE["combinations"][:1], sweep={"mu": [0.5]}), "sweep.mu"),
    "sweep gamma unknown model": (base(sweep={"gamma": {"huge": [1]}}), "sweep.gamma.huge"),
    "sweep empty grid": (base(sweep={"temperature": []}), "sweep.temperature"),
    "sweep proposer unknown": (base(sweep={"proposer": ["small", "huge"]}), "sweep.proposer[1]"),
}


@pytest.mark.parametrize("data, key", REJECTIONS.values(), ids=REJECTIONS.keys())
def test_rejection_names_file_and_key(tmp_path, data, key):
    path = write(tmp_path, data)
    with pytest.raises(CosBenchError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert key in message
    assert "\n" not in message


def test_unknown_key_suggests_the_right_one(tmp_path):
    with pytest.raises(CosBenchError, match="did you mean 'temperature'"):
        load_config(write(tmp_path, base(temprature=0.5)))


def test_duplicate_yaml_key_rejected(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(base(limit=3), sort_keys=False) + "limit: 5\n")
    with pytest.raises(CosBenchError, match=r"duplicate key 'limit'"):
        load_config(path)


@pytest.mark.parametrize("text, match", [("name: [unclosed\n", "not valid YAML"), ("", "empty"), ("- a\n- b\n", "top level")])
def test_unreadable_files(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CosBenchError, match=match) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_gamma_is_bounded_by_the_token_budget():
    assert parse_config(base(max_new_tokens=16, gamma={"small": 16}), "x").gamma["small"] == 16
    with pytest.raises(CosBenchError, match=r"gamma.small: must be ≤ 16 \(got 17\): a draft never runs past the token budget"):
        parse_config(base(max_new_tokens=16, gamma={"small": 17}), "x")
    # The default γ = 5 stays valid under a tiny budget (a quick smoke run), anything longer does not.
    assert parse_config(base(max_new_tokens=2, gamma={"small": 5}), "x").gamma["small"] == 5
    with pytest.raises(CosBenchError, match=r"must be ≤ 5 \(got 6\).*max_new_tokens = 2"):
        apply_overrides(parse_config(base(gamma={"small": 6}), "x"), {"max_new_tokens": 2})


def test_config_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(CosBenchError, match=r"not UTF-8 text \(byte 0xe9 at offset 9\); save the file as UTF-8") as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ")


def test_configs_ship_inside_the_package():
    # A non-editable install has no repository around it: the default config must be package data.
    import cos_bench

    assert CONFIGS_DIR == Path(cos_bench.__file__).resolve().parent / "configs"
    assert DEFAULT_CONFIG_PATH.is_file() and len(SHIPPED) >= len(PAPER_SETTINGS)
    # The README's `-c configs/<name>.yaml` from the repository root still finds the same files.
    repo_configs = Path(__file__).parents[1] / "configs"
    assert (repo_configs / "default.yaml").resolve() == DEFAULT_CONFIG_PATH


def test_pyproject_ships_every_config_as_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["cos_bench"]
    assert all(any(p.relative_to(CONFIGS_DIR.parent).match(pattern) for pattern in patterns) for p in SHIPPED)


def test_missing_file_says_to_pass_config(tmp_path):
    with pytest.raises(CosBenchError, match="--config"):
        load_config(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- overrides


def test_overrides_replace_and_revalidate():
    cfg = parse_config(base(), "x")
    new = apply_overrides(cfg, {"limit": 7, "methods": ("vanilla", "cos"), "temperature": 1, "tasks": ["gsm8k"], "device": "cpu"})
    assert (new.limit, new.methods, new.temperature, new.tasks, new.device) == (7, ("vanilla", "cos"), 1.0, ("gsm8k",), "cpu")
    assert cfg.limit is None  # the original is untouched
    assert apply_overrides(new, {"limit": None}).limit is None


def test_gamma_override_merges():
    cfg = parse_config(base(gamma={"small": 5, "large": 2}), "x")
    assert dict(apply_overrides(cfg, {"gamma": {"small": 3}}).gamma) == {"small": 3, "large": 2}


def test_proposer_override_rederives_default_gammas_only():
    cfg = parse_config(base(), "x")  # γ not written: follows the proposer
    assert dict(apply_overrides(cfg, {"proposer": "large"}).gamma) == {"small": 1, "large": 5}
    explicit = parse_config(base(gamma={"small": 5, "large": 1}), "x")  # γ written: it belongs to the model
    assert dict(apply_overrides(explicit, {"proposer": "large"}).gamma) == {"small": 5, "large": 1}


def test_combinations_override():
    cfg = apply_overrides(parse_config(base(), "x"), {"combinations": [{"rule": "we", "weights": [0.8, 0.2]}]})
    assert [c.label for c in cfg.combinations] == ["we-0.8"]


@pytest.mark.parametrize(
    "overrides, key",
    [({"limt": 3}, "limt"), ({"limit": 0}, "limit"), ({"methods": ["warp"]}, "methods[0]"), ({"gamma": {"huge": 2}}, "gamma.huge")],
)
def test_bad_override_names_the_key(overrides, key):
    with pytest.raises(CosBenchError) as err:
        apply_overrides(parse_config(base(), "x"), overrides)
    assert str(err.value).startswith("command line: ") and key in str(err.value)


# --------------------------------------------------------------------------- round trip


def test_round_trip_through_json_and_yaml():
    full = base(
        paper_setting="qwen-1.5b-we", gamma={"small": 3}, subjects=["astronomy"], chat=True, data_dir="/data",
        allow_code_eval=True, sweep={"lambda": [0.2, 0.8], "gamma": {"small": [1, 5]}, "temperature": [0, 1]},
    )  # fmt: skip
    cfg = parse_config(full, "x")
    as_dict = config_to_dict(cfg)
    assert parse_config(json.loads(json.dumps(as_dict)), "json") == cfg
    assert parse_config(yaml.safe_load(yaml.safe_dump(as_dict)), "yaml") == cfg
    assert isinstance(cfg, ExperimentConfig) and cfg.sweep.temperatures == (0.0, 1.0)


# --------------------------------------------------------------------------- sweeps


def test_sweep_cells_full_grid():
    sweep = {
        "lambda": [0.2, 0.5, 0.8],
        "mu": [0.1, 0.5],
        "gamma": {"small": [1, 3, 5]},
        "temperature": [0.0, 1.0],
        "proposer": ["small", "large"],
    }
    cells = sweep_cells(parse_config(base(sweep=sweep), "x"))
    assert len(cells) == 3 * 2 * 3 * 2 * 2
    labels = [cell.label for cell in cells]
    assert len(set(labels)) == len(labels)
    by_label = {cell.label: cell for cell in cells}
    values = by_label["lambda=0.2,mu=0.5,gamma.small=3,temperature=1,proposer=large"].values
    assert dict(values) == {"lambda": 0.2, "mu": 0.5, "gamma.small": 3, "temperature": 1.0, "proposer": "large"}
    cell = by_label["lambda=0.2,mu=0.5,gamma.small=3,temperature=1,proposer=large"].config
    assert cell.combinations[0].weights == pytest.approx((0.2, 0.8)) and cell.combinations[0].label == "we-0.2"
    assert cell.combinations[1].mu == 0.5 and cell.combinations[1].label == "cd-0.5"
    assert (cell.gamma["small"], cell.temperature, cell.proposer, cell.sweep) == (3, 1.0, "large", None)
    assert cell.gamma["large"] == 5  # not written: follows the proposer


def test_sweep_relabels_and_collapses_we_combinations():
    data = base(combinations=[{"rule": "we", "weights": [0.3, 0.7], "label": "mine"}, {"rule": "we", "weights": [0.6, 0.4]}])
    cells = sweep_cells(parse_config(dict(data, sweep={"lambda": [0.5]}), "x"))
    assert [(label, [c.label for c in cfg.combinations]) for label, cfg in [(c.label, c.config) for c in cells]] == [
        ("lambda=0.5", ["we-0.5"])
    ]


def test_sweep_keeps_untouched_labels():
    data = base(combinations=[{"rule": "we", "label": "mine"}, BASE["combinations"][1]], sweep={"mu": [0.2, 0.3]})
    assert [[c.label for c in cfg.combinations] for cfg in [c.config for c in sweep_cells(parse_config(data, "x"))]] == [
        ["mine", "cd-0.2"],
        ["mine", "cd-0.3"],
    ]


def test_empty_sweep_says_how_to_add_one():
    for data in (base(), base(sweep={})):
        with pytest.raises(CosBenchError, match="add a `sweep:` section"):
            sweep_cells(parse_config(data, "x"))


# --------------------------------------------------------------------------- parse once, committed results


RESULTS = Path(__file__).resolve().parents[1] / "results"
COMMITTED_MANIFESTS = sorted(RESULTS.glob("**/manifest.json"))


@pytest.mark.parametrize("path", COMMITTED_MANIFESTS, ids=lambda p: str(p.parent.relative_to(RESULTS)))
def test_committed_results_still_resume(path):
    """open_results compares config_to_dict with the stored config: a committed folder must still match
    (on the fields a resumption may not change; these folders predate the `engine` key)."""
    from cos_bench.manifest import comparable

    stored = json.loads(path.read_text())["config"]
    cfg = parse_config(stored, str(path))
    assert comparable(config_to_dict(cfg)) == comparable(stored)


def test_committed_sweep_cells_are_rebuilt_from_the_sweep_config():
    from cos_bench.manifest import comparable
    from cos_bench.sweep import cell_folder_name

    folder = RESULTS / "cpu-benchmark"
    written = json.loads((folder / "sweep.json").read_text())
    cells = sweep_cells(parse_config(written["config"], "sweep.json"))
    assert [cell.label for cell in cells] == written["cells"]
    for cell in cells:
        stored = json.loads((folder / cell_folder_name(cell.label) / "manifest.json").read_text())["config"]
        assert comparable(config_to_dict(cell.config)) == comparable(stored)


def test_a_sweep_cell_is_the_raw_config_plus_its_values_parsed_once():
    cfg = parse_config(base(sweep={"proposer": ["small", "large"], "mu": [0.3]}), "x")
    for cell in sweep_cells(cfg):
        expected = parse_config(
            dict(base(proposer=cell.values["proposer"]), combinations=[BASE["combinations"][0], {**BASE["combinations"][1], "mu": 0.3}]),
            "y",
        )
        assert cell.config == expected  # γ not written: the cell's own proposer gets 5
    assert cfg.source == base(sweep={"proposer": ["small", "large"], "mu": [0.3]})  # the raw mapping, untouched


def test_errors_name_where_the_bad_value_came_from(tmp_path):
    path = write(tmp_path, base(limit=0))
    with pytest.raises(CosBenchError, match=rf"^{re.escape(str(path))}: limit: must be ≥ 1"):
        config_from_command_line(path, {"seed": 3})
    good = write(tmp_path, base(gamma={"small": 4}))
    with pytest.raises(CosBenchError, match=r"^command line: gamma.large: must be an integer"):
        config_from_command_line(good, {}, sets=["gamma={large: x}"])
    cfg = config_from_command_line(good, {"gamma": ["large=2"]})
    assert dict(cfg.gamma) == {"small": 4, "large": 2}


def test_each_rule_spec_builds_its_core_rule():
    cfg = parse_config(base(), "x")
    we, cd = cfg.combinations
    assert isinstance(we, WeightedEnsembleSpec) and isinstance(cd, ContrastiveSpec)
    assert (we.rule, we.label, cd.rule, cd.label) == ("we", "we-0.5", "cd", "cd-0.1")
    assert isinstance(we.build(cfg.model_names), WeightedEnsemble) and we.build(cfg.model_names).weights == (0.5, 0.5)
    rule = cd.build(cfg.model_names)
    assert isinstance(rule, Contrastive) and (rule.mu, rule.expert_index, rule.amateur_index) == (0.1, 1, 0)
    assert not hasattr(cfg, "explicit_gamma") and not hasattr(we, "mu")


def test_a_scalar_gamma_on_the_command_line_is_refused_in_one_line(tmp_path):
    with pytest.raises(CosBenchError, match=r"^command line: gamma: must be a mapping"):
        config_from_command_line(write(tmp_path, base()), {}, sets=["gamma=5"])
