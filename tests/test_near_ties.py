"""scripts/near_ties.py finds a greedy divergence and re-scores the shared prefix correctly (tiny pair)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from script_loader import load_script
from tiny import save_tiny_pair
from typer.testing import CliRunner

from cos_bench.cli import app

DATA = Path(__file__).parent / "data" / "tasks"  # the few rows the tests ship: this test always runs


def test_a_forged_divergence_is_found_and_vanilla_wins_it(tmp_path, capsys):
    small, large = save_tiny_pair(tmp_path / "models")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "models": [{"name": "small", "source": str(small)}, {"name": "large", "source": str(large)}],
                "combinations": [{"rule": "cd", "mu": 0.1, "expert": "large", "amateur": "small"}],
                "methods": ["vanilla", "cos"],
                "tasks": ["gsm8k"],
                "limit": 1,
                "max_new_tokens": 6,
                "data_dir": str(DATA),
                "warmup": 0,
                "dtype": "float32",
                "temperature": 0,
            }
        )
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output

    # Forge a cos record that leaves vanilla's path at position 1 (what bf16 rounding does at a near-tie).
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    (vanilla,) = [r for r in records if r["method"] == "vanilla"]
    (cos,) = [r for r in records if r["method"] == "cos"]
    assert cos["token_ids"] == vanilla["token_ids"] and len(vanilla["token_ids"]) > 1
    forged = (vanilla["token_ids"][1] + 1) % 50
    cos["token_ids"] = vanilla["token_ids"][:1] + [forged] + vanilla["token_ids"][2:]
    cos["accounting"]["token_ids"] = cos["token_ids"]  # a record's ids are its accounting's: forge both
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    assert load_script("near_ties").main([str(config), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 greedy sd/cos decodes differ from vanilla" in printed
    assert f"python scripts/near_ties.py {config} {out}" in printed  # the page names the command that made it
    (row,) = [line for line in printed.splitlines() if line.startswith("| run |")]
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip("|"))]  # token cells escape their pipes
    assert cells[4:6] == ["cos", "1"]
    # Vanilla took the fp32 argmax at that prefix, so its token must score strictly higher than the forged one.
    assert float(cells[8]) > 0 and cells[9] == "yes"


def test_verdict_calls_rounding_only_when_every_gap_is_inside_the_low_precision_shift():
    verdict = load_script("near_ties").verdict
    inside = verdict([0.02, -0.01, 0.04], [0.05, 0.01, 0.03], "float32", "bfloat16")
    assert inside[0] == "|gap| at float32: max 0.0400, median 0.0200 over 3 decodes"
    assert inside[1].endswith("max 0.0500, median 0.0300")
    assert inside[2].startswith("Every float32 gap (at most 0.040) is smaller than the largest bfloat16 shift")
    assert "In 1 of 3 cases, vanilla's own choice is the float32 loser." in inside[2]

    outside = verdict([0.02, 0.30], [0.05, 0.01], "float32", "bfloat16")
    assert outside[2].startswith("1 of 2 float32 gaps are at least the largest bfloat16 shift (0.050)")
    assert not any("rounding flips" in line for line in outside)

    alone = verdict([-0.5], [], "float32", None)
    assert alone == [
        "|gap| at float32: max 0.5000, median 0.5000 over 1 decodes",
        "In 1 of 1 cases, vanilla's own choice is the float32 loser.",
    ]
