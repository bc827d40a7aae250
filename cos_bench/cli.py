"""The command line: parses options and calls one function each. No logic lives here."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from cos_bench.config import DEFAULT_CONFIG_PATH, ExperimentConfig, apply_overrides, load_config
from cos_bench.errors import CosBenchError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="Benchmark collaborative decoding via speculation (CoS) against vanilla collaborative decoding.",
)
# Piped or captured output has no terminal width: give the summary table room instead of 80 columns.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input becomes one `error:` line and exit code 2; Ctrl-C leaves results valid and says how to resume."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CosBenchError as exc:
            # The message quotes user input ('--set limit=['): escaped, so rich markup cannot eat it;
            # soft_wrap so a long message stays the one line the contract promises.
            console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted: every finished record is saved; rerun the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


def split_list(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [item.strip() for item in value.split(",") if item.strip()]


def parse_number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CosBenchError(f"{what}: {text!r} is not a number; write e.g. 0.5") from None


def parse_whole_number(text: str, what: str, example: str) -> int:
    """An integer as written: "2.7", "nan", "inf" and "1e3" are refused, never truncated."""
    try:
        return int(text.strip())
    except ValueError:
        raise CosBenchError(f"{what}: {text.strip()!r} is not a whole number; write e.g. {example}") from None


def parse_gamma(values: Optional[list[str]], grid: bool = False) -> Optional[dict[str, Any]]:
    """`--gamma small=5` (run) or `--gamma-grid small=1,3,5` (sweep) -> {name: value(s)}."""
    if not values:
        return None
    option, example = ("--gamma-grid", "--gamma-grid small=1,3,5") if grid else ("--gamma", "--gamma small=5")
    gammas: dict[str, Any] = {}
    for item in values:
        name, sep, raw = item.partition("=")
        if not sep or not raw.strip():
            raise CosBenchError(f"{option} {item!r}: write MODEL=N (e.g. {example})")
        numbers = [parse_whole_number(x, f"{option} {name.strip()}", example) for x in raw.split(",")]
        if not grid and len(numbers) > 1:
            raise CosBenchError(f"{option} {item!r}: one draft length per model; grids belong to `sweep --gamma-grid`")
        gammas[name.strip()] = numbers if grid else numbers[0]
    return gammas


def parse_sets(items: Optional[list[str]]) -> dict[str, Any]:
    """`--set KEY=VALUE` for any config field; VALUE is YAML (`--set 'subjects=[anatomy]'`)."""
    import yaml

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


def check_out_dir(out: Path) -> Path:
    """Refuse a results folder that cannot be written before any model loads; creates nothing."""
    if out.exists() and not out.is_dir():
        raise CosBenchError(f"--out {out} is a file, not a folder; pass --out with a folder path (it is created if missing)")
    if out.is_symlink() and not out.exists():
        raise CosBenchError(f"--out {out} is a link to {os.readlink(out)}, which does not exist; create that folder or pass another --out")
    existing = next(parent for parent in (out, *out.parents) if parent.exists() or parent == parent.parent)
    if not existing.is_dir():
        raise CosBenchError(f"--out {out}: {existing} is a file, so no folder can be made under it; pass --out with another path")
    try:  # a real attempt: permission bits do not tell root (or a read-only mount) the truth
        os.rmdir(tempfile.mkdtemp(prefix=".cos-bench-write-check-", dir=existing))
    except OSError as exc:
        raise CosBenchError(
            f"--out {out}: cannot create a folder in {existing} ({exc.strerror or exc}); pass --out with a folder you can write to"
        ) from None
    return out


def resolve_config(config: Optional[Path], overrides: dict[str, Any], sets: Optional[list[str]] = None) -> ExperimentConfig:
    """The config file with the explicit options applied, then any --set (validated as a whole)."""
    path = config or DEFAULT_CONFIG_PATH
    cfg = load_config(path)
    given = {key: value for key, value in overrides.items() if value is not None}
    given.update(parse_sets(sets))
    return apply_overrides(cfg, given) if given else cfg


def common_overrides(
    limit: Optional[int],
    tasks: Optional[str],
    methods: Optional[str],
    temperature: Optional[float],
    max_new_tokens: Optional[int],
    repeats: Optional[int],
    seed: Optional[int],
    gamma: Optional[list[str]],
    proposer: Optional[str],
    device: Optional[str],
    dtype: Optional[str],
    data_dir: Optional[str],
    allow_code_eval: bool,
    warmup: Optional[int],
    engine: Optional[str],
) -> dict[str, Any]:
    return {
        "limit": limit,
        "tasks": split_list(tasks),
        "methods": split_list(methods),
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "repeats": repeats,
        "seed": seed,
        "gamma": parse_gamma(gamma),
        "proposer": proposer,
        "device": device,
        "dtype": dtype,
        "data_dir": data_dir,
        "allow_code_eval": True if allow_code_eval else None,
        "warmup": warmup,
        "engine": engine,
    }


ConfigOpt = typer.Option(None, "--config", "-c", help="Experiment YAML (default: the shipped configs/default.yaml).")
OutOpt = typer.Option(None, "--out", "-o", help="Results folder (default: results/<config name>). Rerunning resumes it.")
LimitOpt = typer.Option(None, "--limit", help="Examples per task.")
TasksOpt = typer.Option(None, "--tasks", help="Comma list: humaneval,gsm8k,mmlu.")
MethodsOpt = typer.Option(None, "--methods", help="Comma list: vanilla,sd,cos,hf-ensemble.")
TempOpt = typer.Option(None, "--temperature", "-t", help="0 = greedy.")
MaxNewOpt = typer.Option(None, "--max-new-tokens", help="Generation limit per example.")
RepeatsOpt = typer.Option(None, "--repeats", help="Timed repeats per example.")
SeedOpt = typer.Option(None, "--seed", help="Subset shuffling and sampling seed.")
GammaOpt = typer.Option(None, "--gamma", help="Draft length per model, MODEL=N; repeatable.")
ProposerOpt = typer.Option(None, "--proposer", help="Default proposer (a model name from the config).")
DeviceOpt = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N, mps, multi-gpu.")
DtypeOpt = typer.Option(None, "--dtype", help="auto, float32, bfloat16, float16.")
EngineOpt = typer.Option(
    None, "--engine", help="auto (compiled on CUDA, else eager), eager (HF forwards), compiled (static cache + torch.compile, CUDA graphs)."
)
DataOpt = typer.Option(None, "--data-dir", help="Local folder of the datasets' JSONL files (else $COS_BENCH_DATA_DIR, else the Hub).")
CodeEvalOpt = typer.Option(False, "--allow-code-eval", help="Run model-written code (HumanEval) in the sandbox.")
WarmupOpt = typer.Option(None, "--warmup", help="Untimed warm-up decodes per method.")
SetOpt = typer.Option(None, "--set", help="Override any config field, KEY=YAML (e.g. --set offset=10); repeatable.")


@app.command()
@user_errors
def run(
    config: Optional[Path] = ConfigOpt,
    out: Optional[Path] = OutOpt,
    limit: Optional[int] = LimitOpt,
    tasks: Optional[str] = TasksOpt,
    methods: Optional[str] = MethodsOpt,
    temperature: Optional[float] = TempOpt,
    max_new_tokens: Optional[int] = MaxNewOpt,
    repeats: Optional[int] = RepeatsOpt,
    seed: Optional[int] = SeedOpt,
    gamma: Optional[list[str]] = GammaOpt,
    proposer: Optional[str] = ProposerOpt,
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
    engine: Optional[str] = EngineOpt,
    data_dir: Optional[str] = DataOpt,
    allow_code_eval: bool = CodeEvalOpt,
    warmup: Optional[int] = WarmupOpt,
    sets: Optional[list[str]] = SetOpt,
) -> None:
    """Run vanilla collaborative decoding, sd and cos side by side and store every decode."""
    from cos_bench.bench import run_experiment

    overrides = common_overrides(
        limit,
        tasks,
        methods,
        temperature,
        max_new_tokens,
        repeats,
        seed,
        gamma,
        proposer,
        device,
        dtype,
        data_dir,
        allow_code_eval,
        warmup,
        engine,
    )
    cfg = resolve_config(config, overrides, sets)
    run_experiment(cfg, check_out_dir(out or Path("results") / cfg.name), console)


@app.command()
@user_errors
def sweep(
    config: Optional[Path] = ConfigOpt,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Sweep folder (default: results/sweep-<config name>)."),
    lambdas: Optional[str] = typer.Option(None, "--lambda", help="Grid of the first model's WE weight, e.g. 0.2,0.5,0.8."),
    mus: Optional[str] = typer.Option(None, "--mu", help="Grid of CD μ, e.g. 0.1,0.5."),
    gamma_grid: Optional[list[str]] = typer.Option(None, "--gamma-grid", help="Grid per model, MODEL=1,3,5; repeatable."),
    temperatures: Optional[str] = typer.Option(None, "--temperatures", help="Grid, e.g. 0,1."),
    proposers: Optional[str] = typer.Option(None, "--proposers", help="Proposer orders, e.g. small,large."),
    limit: Optional[int] = LimitOpt,
    tasks: Optional[str] = TasksOpt,
    methods: Optional[str] = MethodsOpt,
    max_new_tokens: Optional[int] = MaxNewOpt,
    repeats: Optional[int] = RepeatsOpt,
    seed: Optional[int] = SeedOpt,
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
    engine: Optional[str] = EngineOpt,
    data_dir: Optional[str] = DataOpt,
    allow_code_eval: bool = CodeEvalOpt,
    warmup: Optional[int] = WarmupOpt,
    sets: Optional[list[str]] = SetOpt,
) -> None:
    """Run a grid over λ, μ, γ, temperature and proposer order: one results folder per cell, plus plots."""
    from cos_bench.bench import run_sweep

    overrides = common_overrides(
        limit, tasks, methods, None, max_new_tokens, repeats, seed, None, None, device, dtype, data_dir, allow_code_eval, warmup, engine
    )
    grid = {
        "lambda": [parse_number(x, "--lambda") for x in split_list(lambdas)] if lambdas else None,
        "mu": [parse_number(x, "--mu") for x in split_list(mus)] if mus else None,
        "gamma": parse_gamma(gamma_grid, grid=True),
        "temperature": [parse_number(x, "--temperatures") for x in split_list(temperatures)] if temperatures else None,
        "proposer": split_list(proposers),
    }
    grid = {key: value for key, value in grid.items() if value}
    cfg = resolve_config(config, overrides, sets)
    if grid:
        cfg = apply_overrides(cfg, {"sweep": grid})
    run_sweep(cfg, check_out_dir(out or Path("results") / f"sweep-{cfg.name}"), console)


@app.command()
@user_errors
def report(
    folders: list[Path] = typer.Argument(..., help="Results folders (or sweep folders) to tabulate."),
    out: Path = typer.Option(Path("results/report"), "--out", "-o", help="Where to write summary.csv, summary.md and plots."),
) -> None:
    """Turn stored results into CSV and Markdown tables and PNG plots."""
    from cos_bench.bench import report_folders

    paths = report_folders(folders, check_out_dir(out), console)
    console.print(f"wrote {paths.summary_md}, {paths.summary_csv} and plots in {out}", markup=False, highlight=False)


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
