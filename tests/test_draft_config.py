"""The draft-length policy outside the core: `draft:` in configs, `--draft` on the command line, sweeps
over policies, what records and manifests keep of it, and how the summary reports it; and arms (config
`arms:`), sd/cos variants with their own γ or policy in one run, timed against the same vanilla decodes."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cos_bench.cli import app
from cos_bench.config import DraftSpec, config_from_command_line, config_to_dict, parse_config, sweep_cells
from cos_bench.core import AutoDraft, ConfidenceDraft, FixedDraft, HeuristicDraft
from cos_bench.errors import CosBenchError
from cos_bench.manifest import comparable
from cos_bench.metrics import flatten_record, load_records, summarize
from cos_bench.record import RunRecord
from cos_bench.report import headline, summary_markdown
from cos_bench.storage import RECORDS_NAME
from cos_bench.sweep import cell_folder_name

BASE = {
    "name": "t",
    "models": [{"name": "small", "source": "offline:a"}, {"name": "large", "source": "offline:b"}],
    "combinations": [{"rule": "we", "weights": [0.5, 0.5]}],
    "tasks": ["gsm8k"],
    "max_new_tokens": 64,
}
SMALL_RUN = Path(__file__).parent / "data" / "small_run"


def config(**changes):
    return parse_config({**copy.deepcopy(BASE), **changes}, "exp.yaml")


# --- the config key -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, spec, label, core",
    [
        (None, DraftSpec("fixed"), "fixed", FixedDraft()),
        ("confidence", DraftSpec("confidence", threshold=0.4), "confidence-0.4", ConfidenceDraft(0.4)),
        ({"policy": "confidence", "threshold": None}, DraftSpec("confidence", threshold=0.4), "confidence-0.4", ConfidenceDraft(0.4)),
        ({"policy": "confidence", "threshold": 0.25}, DraftSpec("confidence", threshold=0.25), "confidence-0.25", ConfidenceDraft(0.25)),
        ("heuristic", DraftSpec("heuristic"), "heuristic", HeuristicDraft()),
        ({"policy": "auto", "gamma_max": 8}, DraftSpec("auto", gamma_max=8), "auto-max8", AutoDraft(gamma_max=8)),
    ],
)
def test_draft_is_a_name_or_a_mapping_and_round_trips(value, spec, label, core):
    cfg = config(draft=value)
    assert cfg.draft == spec and cfg.draft.label == label and cfg.draft.build() == core
    assert parse_config(config_to_dict(cfg), "round trip") == cfg
    assert re.fullmatch(r"[a-z0-9.-]+", label)  # names folders and report rows


def test_longest_drafts_follow_the_policy():
    assert config().longest_drafts == (5, 1)
    assert config(draft="confidence").longest_drafts == (5, 1)  # confidence only shortens runs
    assert config(draft="heuristic").longest_drafts == (10, 2)  # 2 × γ per model
    assert config(draft={"policy": "auto", "gamma_max": 7}).longest_drafts == (7, 7)


@pytest.mark.parametrize(
    "value, message",
    [
        ("greedy", "exp.yaml: draft: must be one of fixed, confidence, heuristic, auto, marginal (got str 'greedy')"),
        ({"policy": "best"}, "exp.yaml: draft.policy: must be one of fixed, confidence, heuristic, auto"),
        ({"policy": "confidence", "threshold": 0}, "exp.yaml: draft.threshold: must be > 0"),
        ({"policy": "confidence", "threshold": 1.0}, "exp.yaml: draft.threshold: must be in (0, 1)"),
        ({"policy": "confidence", "threshold": "high"}, "exp.yaml: draft.threshold: must be a finite number"),
        ({"policy": "fixed", "threshold": 0.3}, "exp.yaml: draft.threshold: does not apply to the fixed policy (only to confidence)"),
        (
            {"policy": "confidence", "gamma_max": 8},
            "exp.yaml: draft.gamma_max: does not apply to the confidence policy (only to heuristic, auto, marginal)",
        ),
        (
            {"policy": "heuristic", "gamma_max": 4},
            "exp.yaml: draft.gamma_max: must be ≥ every model's gamma, runs start there (got 4, gamma.small = 5)",
        ),
        ({"policy": "auto", "gamma_max": 500}, "exp.yaml: draft.gamma_max: must be ≤ 64"),
        ({"policy": "heuristic", "gamma-max": 8}, "exp.yaml: draft.gamma-max: unknown key; did you mean 'gamma_max'?"),
        (3, "exp.yaml: draft: must be a policy name (fixed, confidence, heuristic, auto, marginal) or a mapping"),
    ],
)
def test_bad_draft_values_give_one_line_errors(value, message):
    with pytest.raises(CosBenchError) as caught:
        config(draft=value)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**BASE, "draft": {"policy": "confidence", "threshold": 0.3}}))
    return path


def test_command_line_parameters_keep_the_files_policy_and_a_new_policy_starts_afresh(config_file):
    assert config_from_command_line(config_file, {"draft": {"threshold": 0.2}}).draft == DraftSpec("confidence", threshold=0.2)
    assert config_from_command_line(config_file, {"draft": {"policy": "heuristic"}}).draft == DraftSpec("heuristic")
    assert config_from_command_line(config_file, {}, ["draft=auto"]).draft == DraftSpec("auto")
    with pytest.raises(CosBenchError, match=r"command line: draft.threshold: does not apply to the fixed policy"):
        config_from_command_line(config_file, {"draft": {"policy": "fixed", "threshold": 0.5}})


def test_run_command_line_sets_the_policy(config_file, monkeypatch):
    import cos_bench.run

    seen = []
    monkeypatch.setattr(cos_bench.run, "run_experiment", lambda cfg, out, console: seen.append(cfg))
    args = ["run", "-c", str(config_file), "--out", str(config_file.parent / "out")]
    result = CliRunner().invoke(app, [*args, "--draft", "auto", "--draft-gamma-max", "9"])
    assert result.exit_code == 0, result.output
    assert seen[0].draft == DraftSpec("auto", gamma_max=9)
    result = CliRunner().invoke(app, [*args, "--draft", "sometimes"])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == "error: command line: draft.policy: must be one of fixed, confidence, heuristic, auto, marginal (got str 'sometimes')"
    )


# --- sweeps -------------------------------------------------------------------------------------


def test_a_sweep_over_policies_gives_one_cell_each_with_folder_safe_labels():
    cfg = config(sweep={"draft": ["fixed", {"policy": "confidence", "threshold": 0.3}, "heuristic", {"policy": "auto", "gamma_max": 8}]})
    cells = sweep_cells(cfg)
    assert [cell.label for cell in cells] == ["draft=fixed", "draft=confidence-0.3", "draft=heuristic", "draft=auto-max8"]
    assert [cell.config.draft for cell in cells] == [
        DraftSpec("fixed"),
        DraftSpec("confidence", threshold=0.3),
        DraftSpec("heuristic"),
        DraftSpec("auto", gamma_max=8),
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", cell_folder_name(cell.label)) for cell in cells)
    assert json.loads(json.dumps(dict(cells[1].values))) == {"draft": "confidence-0.3"}  # what records store
    assert parse_config(config_to_dict(cfg), "round trip") == cfg


def test_sweep_command_line_grid_gives_each_policy_the_parameters_it_takes(config_file):
    grids = {"draft": ("fixed,confidence,auto", {"threshold": 0.35, "gamma_max": 8})}
    cells = sweep_cells(config_from_command_line(config_file, {}, None, grids))
    assert [cell.config.draft.label for cell in cells] == ["fixed", "confidence-0.35", "auto-max8"]
    with pytest.raises(CosBenchError, match=r"^--draft-threshold: no policy in --draft fixed,heuristic takes it \(only confidence\)"):
        config_from_command_line(config_file, {}, None, {"draft": ("fixed,heuristic", {"threshold": 0.3, "gamma_max": None})})


def test_a_sweep_draft_entry_is_checked_against_each_cells_gamma():
    cfg = config(gamma={"small": 3}, sweep={"draft": [{"policy": "heuristic", "gamma_max": 4}], "gamma": {"small": [3, 5]}})
    with pytest.raises(CosBenchError, match=r"sweep cell gamma.small=5,draft=heuristic-max4: draft.gamma_max: must be ≥"):
        sweep_cells(cfg)


def test_jobs_give_auto_the_calibrated_step_times():
    from cos_bench.run import job_settings

    cfg = config(draft="auto")
    settings = job_settings(cfg, cfg.combinations[0], {"step_seconds": {"large": 0.5, "small": 0.1}})
    assert settings.draft == AutoDraft(step_costs=(0.1, 0.5))  # in model order
    fixed = config()
    assert job_settings(fixed, fixed.combinations[0], {"step_seconds": {"large": 0.5, "small": 0.1}}).draft == FixedDraft()


# --- manifests and records ----------------------------------------------------------------------


def test_folders_written_before_draft_policies_resume_as_fixed_and_only_as_fixed():
    written = config_to_dict(config())
    del written["draft"]  # how every manifest before draft policies stored its config
    assert comparable(written) == comparable(config_to_dict(config()))
    assert comparable(written) != comparable(config_to_dict(config(draft="heuristic")))


def records() -> list[dict]:
    return [json.loads(line) for line in (SMALL_RUN / RECORDS_NAME).read_text().splitlines()]


def test_records_keep_the_policy_and_old_records_read_as_fixed():
    old = records()[0]
    assert "draft" not in old and RunRecord.from_json(old).draft == "fixed"
    assert "draft" not in RunRecord.from_json(old).to_json()  # fixed lines are written as they always were
    adapted = RunRecord.from_json({**old, "draft": "confidence-0.4"})
    assert adapted.to_json()["draft"] == "confidence-0.4"
    assert RunRecord.from_json(adapted.to_json()) == adapted


# --- the summary --------------------------------------------------------------------------------


def test_the_summary_splits_rows_by_policy_and_reports_mean_draft_length():
    rows = []
    for record in records():
        if record["task"] != "gsm8k":
            continue
        rows.append(flatten_record(RunRecord.from_json(record), run="fixed-run"))
        adapted = {**copy.deepcopy(record), "draft": "heuristic"}  # the same decodes, as a second run's
        if record["method"] != "vanilla":
            small = adapted["accounting"]["models"][0]
            small["drafted_by_position"] = [10, 10, 10, 5]  # 10 runs, 35 drafts in all
            small["drafted"], small["bonus_drafted"] = 30, 5
        rows.append(flatten_record(RunRecord.from_json(adapted), run="heuristic-run"))
    summary = summarize(pd.DataFrame(rows))
    cos = summary[summary["method"] == "cos"].set_index("draft")
    assert sorted(cos.index) == ["fixed", "heuristic"]
    assert cos.loc["heuristic", "mean_draft_length_small"] == pytest.approx(3.5)  # both prompts alike: 35 drafts / 10 runs
    assert cos.loc["fixed", "mean_draft_length_small"] == pytest.approx(1.6)
    assert not math.isnan(cos.loc["fixed", "theoretical_speedup"])
    assert math.isnan(cos.loc["heuristic", "theoretical_speedup"])  # the theorems assume runs of γ
    assert (summary[summary["method"] == "vanilla"]["theoretical_speedup"] == 1.0).all()
    assert cos.loc["heuristic", "speedup_mean"] == pytest.approx(cos.loc["fixed", "speedup_mean"])  # same vanilla reference
    table = summary_markdown(summary)
    assert "| draft |" in table and "| mean draft length (small) | mean draft length (large) |" in table


# --- end to end ---------------------------------------------------------------------------------


def test_sweep_over_every_policy_end_to_end(tmp_path):
    from tiny import tiny_pair_config

    data = tiny_pair_config(tmp_path, tasks=["gsm8k"], methods=["vanilla", "sd", "cos"], gamma={"small": 2, "large": 1}, max_new_tokens=8)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "sweep"
    result = CliRunner().invoke(app, ["sweep", "-c", str(path), "--out", str(out), "--draft", "fixed,confidence,heuristic,auto"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for cell in sorted(out.glob("draft-*")) for line in (cell / RECORDS_NAME).read_text().splitlines()]
    assert {r.get("draft", "fixed") for r in lines} == {"fixed", "confidence-0.4", "heuristic", "auto"}
    vanilla = {tuple(r["token_ids"]) for r in lines if r["method"] == "vanilla"}
    assert len(vanilla) == 1 and all(tuple(r["token_ids"]) in vanilla for r in lines)  # greedy: every policy, same ids
    manifest = json.loads((out / "draft-auto" / "manifest.json").read_text())
    assert manifest["config"]["draft"] == {"policy": "auto", "gamma_max": None}
    summary = (out / "report" / "summary.md").read_text()
    assert summary.count("| cos |") == 4 and "mean draft length (small)" in summary
    assert (out / "report" / "sweep_draft.png").stat().st_size > 0


# --- arms: more sd/cos variants — their own γ or draft policy — in one run, against the same vanilla decodes ---


def test_arms_lay_their_gamma_and_policy_over_the_runs_and_round_trip():
    cfg = config(
        draft="confidence",
        arms=[
            {"method": "cos", "gamma": {"small": 3}},  # keeps the run's confidence policy
            {"method": "cos", "draft": "heuristic"},  # a new policy starts from its own defaults
            {"method": "sd", "draft": {"threshold": 0.2}},  # same policy: only the threshold changes
        ],
    )
    gamma3, heuristic, threshold = cfg.arms
    assert (gamma3.key, dict(gamma3.gamma), gamma3.draft) == ("cos[gamma.small=3]", {"small": 3, "large": 1}, DraftSpec("confidence", 0.4))
    assert (heuristic.key, dict(heuristic.gamma), heuristic.draft) == ("cos[heuristic]", {"small": 5, "large": 1}, DraftSpec("heuristic"))
    assert (threshold.key, threshold.draft) == ("sd[confidence-0.2]", DraftSpec("confidence", 0.2))
    assert parse_config(config_to_dict(cfg), "round trip") == cfg
    assert config().arms == ()


def test_longest_drafts_cover_every_arm():
    assert config(arms=[{"method": "cos", "gamma": {"small": 9, "large": 2}}]).longest_drafts == (9, 2)
    assert config(arms=[{"method": "cos", "draft": "heuristic"}]).longest_drafts == (10, 2)


def test_longest_auto_drafts_cover_only_auto_policies():
    assert config().longest_auto_drafts is None and config(draft="heuristic").longest_auto_drafts is None
    assert config(draft="auto").longest_auto_drafts == (10, 2)
    auto_arm = {"method": "cos", "gamma": {"small": 3}, "draft": "auto"}
    # The heuristic arm drafts up to 18, but only auto's runs (6 and 2) are charged by measured pass costs.
    arms = [{"method": "cos", "gamma": {"small": 9}, "draft": "heuristic"}, auto_arm]
    assert config(arms=arms).longest_auto_drafts == (6, 2) and config(arms=arms).longest_drafts == (18, 2)


@pytest.mark.parametrize(
    "arms, message",
    [
        ([{"method": "vanilla", "draft": "heuristic"}], "exp.yaml: arms[0].method: must be one of sd, cos"),
        ([{"method": "cos", "gama": {"small": 3}}], "exp.yaml: arms[0].gama: unknown key; did you mean 'gamma'?"),
        ([{"method": "cos", "gamma": {"small": 5}}], "exp.yaml: arms[0]: changes nothing: give it a gamma or a draft policy"),
        ([{"method": "cos"}], "exp.yaml: arms[0]: changes nothing"),
        ([{"method": "cos", "gamma": {"small": 99}}], "exp.yaml: arms[0].gamma.small: must be ≤ 64 (got 99)"),
        ([{"method": "cos", "gamma": {"tiny": 3}}], "exp.yaml: arms[0].gamma.tiny:"),
        (
            [{"method": "cos", "draft": "best"}],
            "exp.yaml: arms[0].draft.policy: must be one of fixed, confidence, heuristic, auto, marginal (got str 'best')",
        ),
        (
            [{"method": "cos", "draft": "auto"}, {"method": "cos", "draft": {"policy": "auto"}}],
            "exp.yaml: arms[1]: cos[auto] is listed twice; list it once",
        ),
        ("cos", "exp.yaml: arms: must be a list"),
    ],
)
def test_bad_arms_give_one_line_errors(arms, message):
    with pytest.raises(CosBenchError) as caught:
        config(arms=arms)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_sweep_cell_drops_the_arms_it_makes_its_own():
    # A γ or draft grid through an arm's value: in that cell the arm is the cell's own cos, so the cell
    # keeps its own decodes of it instead of stopping the whole sweep with "changes nothing".
    cfg = config(
        arms=[{"method": "cos", "gamma": {"small": 3}}, {"method": "cos", "draft": "confidence"}],
        sweep={"gamma": {"small": [3, 5]}, "draft": ["fixed", "confidence"]},
    )
    cells = sweep_cells(cfg)
    assert {cell.label: [arm.key for arm in cell.config.arms] for cell in cells} == {
        "gamma.small=3,draft=fixed": ["cos[confidence-0.4]"],
        "gamma.small=3,draft=confidence-0.4": [],
        "gamma.small=5,draft=fixed": ["cos[gamma.small=3]", "cos[confidence-0.4]"],
        "gamma.small=5,draft=confidence-0.4": ["cos[gamma.small=3]"],
    }
    for cell in cells:
        assert parse_config(config_to_dict(cell.config), "round trip") == cell.config


def test_a_sweep_cell_keeps_rejecting_an_arm_that_adds_a_method_at_the_runs_own_settings():
    cfg = config(methods=["vanilla", "cos"], arms=[{"method": "sd", "gamma": {"small": 3}}], sweep={"gamma": {"small": [3, 5]}})
    with pytest.raises(CosBenchError, match=r"^t sweep cell gamma.small=3: arms\[0\]: changes nothing"):
        sweep_cells(cfg)


def test_the_plan_puts_each_examples_arms_right_after_its_methods():
    from cos_bench.run import plan

    cfg = config(methods=["vanilla", "cos"], arms=[{"method": "cos", "draft": "heuristic"}], limit=2)

    class Task:
        name = "gsm8k"

    class Example:
        def __init__(self, i):
            self.example_id = f"gsm8k/{i}"

    class Prompt:
        def __init__(self, i):
            self.example, self.index = Example(i), i

    jobs = plan(cfg, [Task()], {"gsm8k": [Prompt(0), Prompt(1)]})
    assert [(job.prompt.index, job.label) for job in jobs] == [
        (0, "vanilla"), (0, "cos"), (0, "cos[heuristic]"), (1, "vanilla"), (1, "cos"), (1, "cos[heuristic]"),
    ]  # fmt: skip
    assert len({job.key for job in jobs}) == len(jobs)
    arm_cfg = jobs[2].config(cfg)
    assert arm_cfg.draft == DraftSpec("heuristic") and arm_cfg.arms == () and jobs[1].config(cfg) is cfg


def test_a_run_with_arms_end_to_end(tmp_path):
    """Greedy on tiny float32 models: every arm's ids equal vanilla's, each record names its arm, γ and
    policy, the summary has a row per arm with its speedup over the run's vanilla, the headline puts the
    arms in cos's cell, and adding an arm to a finished run decodes only the new arm."""
    from tiny import tiny_pair_config

    data = tiny_pair_config(
        tmp_path,
        combinations=[{"rule": "we", "weights": [0.5, 0.5]}, {"rule": "cd", "mu": 0.1, "expert": "large", "amateur": "small"}],
        tasks=["gsm8k"],
        methods=["vanilla", "cos"],
        gamma={"small": 2, "large": 1},
        arms=[{"method": "cos", "gamma": {"small": 4}}, {"method": "cos", "draft": "confidence"}],
        limit=2,
        max_new_tokens=10,
    )
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "-c", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / RECORDS_NAME).read_text().splitlines()]
    assert len(lines) == 2 * 2 * 4  # prompts × settings × (vanilla, cos, two arms)
    by_arm = {(r["method"], r.get("arm", "")) for r in lines}
    assert by_arm == {("vanilla", ""), ("cos", ""), ("cos", "gamma.small=4"), ("cos", "confidence-0.4")}
    arm = next(r for r in lines if r.get("arm") == "gamma.small=4")
    assert arm["gammas"] == {"small": 4, "large": 1} and "draft" not in arm and arm["key"].split("|")[3] == "cos[gamma.small=4]"
    assert next(r for r in lines if r.get("arm") == "confidence-0.4")["draft"] == "confidence-0.4"
    vanilla = {(r["example_id"], r["setting"]): r["token_ids"] for r in lines if r["method"] == "vanilla"}
    assert all(r["token_ids"] == vanilla[(r["example_id"], r["setting"])] for r in lines)

    summary = summarize(load_records([out]))
    cos = summary[summary["method"] == "cos"]
    assert sorted(cos["arm"]) == ["", "", "confidence-0.4", "confidence-0.4", "gamma.small=4", "gamma.small=4"]
    assert (cos["identical_to_vanilla"] == 1.0).all() and cos["speedup_mean"].notna().all()
    headers, rows = headline(summary)
    assert len(headers) <= 10 and headers.count("cos speedup") == 1
    cell = rows[0][headers.index("cos speedup")]
    assert "; gamma.small=4: " in cell and "; confidence-0.4: " in cell
    assert "| arm |" in (out / "report" / "summary.md").read_text()

    data["arms"].append({"method": "cos", "draft": "heuristic"})
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", "-c", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "16 records already there are kept and skipped" in result.output
    lines = [json.loads(line) for line in (out / RECORDS_NAME).read_text().splitlines()]
    assert len(lines) == 20 and sum(r.get("arm") == "heuristic" for r in lines) == 4


def test_the_progress_line_names_each_arm():
    """rich reads "[heuristic]" as a style tag and drops it unless escaped: the bar would show "cos" twice."""
    import dataclasses

    from rich.console import Console
    from rich.text import Text

    from cos_bench.run import LiveRates

    template = RunRecord.from_json(json.loads((SMALL_RUN / RECORDS_NAME).read_text().splitlines()[0]))
    live = LiveRates()
    live.add(dataclasses.replace(template, method="cos"))
    live.add(dataclasses.replace(template, method="cos", arm="heuristic"))
    console = Console(record=True, width=200)
    console.print(Text.from_markup(live.text()))
    shown = console.export_text()
    assert "cos[heuristic] " in shown and shown.count("cos") == 2
