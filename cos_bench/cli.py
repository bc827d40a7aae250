"""The command line: declares options and calls one function per command (parsing lives in cos_bench.config)."""

from __future__ import annotations

import functools
import inspect
import os
import sys
import tempfile
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from cos_bench.config import DTYPES, ExperimentConfig, config_from_command_line
from cos_bench.errors import CosBenchError
from cos_bench.methods import METHOD_NAMES
from cos_bench.tasks import TASK_NAMES

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


def _option(*decls: Any, **kwargs: Any) -> Any:
    """A dataclass field declared by its typer option (default first, as `typer.Option` takes it)."""
    default, *names = decls
    return field(default=default, metadata={"option": typer.Option(default, *names, **kwargs)})


@dataclass(frozen=True)
class SharedOptions:
    """The options `run` and `sweep` share, declared once; `with_shared_options` gives them to a command."""

    config: Optional[Path] = _option(None, "--config", "-c", help="Experiment YAML (default: the shipped configs/default.yaml).")
    limit: Optional[int] = _option(None, "--limit", help="Examples per task.")
    tasks: Optional[str] = _option(None, "--tasks", help=f"Comma list: {','.join(TASK_NAMES)}.")
    methods: Optional[str] = _option(None, "--methods", help=f"Comma list: {','.join(METHOD_NAMES)}.")
    max_new_tokens: Optional[int] = _option(None, "--max-new-tokens", help="Token budget for every task (default: each task's own).")
    repeats: Optional[int] = _option(None, "--repeats", help="Timed repeats per example.")
    seed: Optional[int] = _option(None, "--seed", help="Subset shuffling and sampling seed.")
    device: Optional[str] = _option(None, "--device", help="auto, cpu, cuda, cuda:N, mps, multi-gpu.")
    dtype: Optional[str] = _option(None, "--dtype", help=f"{', '.join(DTYPES)}.")
    engine: Optional[str] = _option(
        None,
        "--engine",
        help="auto (compiled on CUDA, else eager), eager (HF forwards), compiled (static cache + torch.compile, CUDA graphs).",
    )
    data_dir: Optional[str] = _option(
        None, "--data-dir", help="Local folder of the datasets' JSONL files (else $COS_BENCH_DATA_DIR, else the Hub)."
    )
    allow_code_eval: bool = _option(False, "--allow-code-eval", help="Run model-written code (HumanEval) in the sandbox.")
    warmup: Optional[int] = _option(None, "--warmup", help="Untimed warm-up decodes per method.")
    sets: Optional[list[str]] = _option(None, "--set", help="Override any config field, KEY=YAML (e.g. --set offset=10); repeatable.")
    draft_threshold: Optional[float] = _option(
        None,
        "--draft-threshold",
        help="confidence policy: end a run after a draft its drafter gave less than this probability (default 0.4).",
    )
    draft_gamma_max: Optional[int] = _option(
        None, "--draft-gamma-max", help="heuristic and auto policies: the longest run of any model (default: 2 × its gamma)."
    )

    def overrides(self) -> dict[str, Any]:
        """The config keys these options set, as typed (None = not given); `config_from_command_line` parses them."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("config", "sets", "draft_threshold", "draft_gamma_max")
        }

    def draft_parameters(self) -> dict[str, Any]:
        """The draft policy's parameters given (None = not given), keyed as the config's `draft:` mapping."""
        return {"threshold": self.draft_threshold, "gamma_max": self.draft_gamma_max}

    def resolve(self, grids: Optional[dict[str, Any]] = None, **command_options: Any) -> ExperimentConfig:
        """The experiment config: the file, these options and the command's own (raw, keyed by config field),
        then --set, then the sweep `grids` (raw, keyed by sweep axis); validated once."""
        return config_from_command_line(self.config, {**self.overrides(), **command_options}, self.sets, grids)


def with_shared_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Declare SharedOptions' fields as `command`'s options too; it receives them as one `options` argument."""
    hints = typing.get_type_hints(SharedOptions)
    shared = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.metadata["option"], annotation=hints[f.name])
        for f in fields(SharedOptions)
    ]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(command, eval_str=True).parameters.values()]
    own = [p for p in own if p.name != "options"]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        options = SharedOptions(**{f.name: kwargs.pop(f.name) for f in fields(SharedOptions)})
        return command(options, **kwargs)

    parameters = [*shared, *own]
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


@app.command()
@user_errors
@with_shared_options
def run(
    options: SharedOptions,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results folder (default: results/<config name>). Rerunning resumes it."),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-t", help="0 = greedy."),
    gamma: Optional[list[str]] = typer.Option(None, "--gamma", help="Draft length per model, MODEL=N; repeatable."),
    proposer: Optional[str] = typer.Option(None, "--proposer", help="Default proposer (a model name from the config)."),
    draft: Optional[str] = typer.Option(
        None, "--draft", help="Draft-length policy of sd and cos: fixed, confidence, heuristic, auto or marginal."
    ),
) -> None:
    """Run vanilla collaborative decoding, sd and cos side by side and store every decode."""
    from cos_bench.run import run_experiment

    cfg = options.resolve(temperature=temperature, gamma=gamma, proposer=proposer, draft={"policy": draft, **options.draft_parameters()})
    run_experiment(cfg, check_out_dir(out or Path("results") / cfg.name), console)


@app.command()
@user_errors
@with_shared_options
def sweep(
    options: SharedOptions,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Sweep folder (default: results/sweep-<config name>)."),
    lambdas: Optional[str] = typer.Option(None, "--lambda", help="Grid of the first model's WE weight, e.g. 0.2,0.5,0.8."),
    mus: Optional[str] = typer.Option(None, "--mu", help="Grid of CD μ, e.g. 0.1,0.5."),
    gamma_grid: Optional[list[str]] = typer.Option(None, "--gamma-grid", help="Grid per model, MODEL=1,3,5; repeatable."),
    temperatures: Optional[str] = typer.Option(None, "--temperatures", help="Grid, e.g. 0,1."),
    proposers: Optional[str] = typer.Option(None, "--proposers", help="Proposer orders, e.g. small,large."),
    drafts: Optional[str] = typer.Option(None, "--draft", help="Grid of draft-length policies, e.g. fixed,confidence,heuristic,auto."),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (one cell after another, here) or ray (one Ray task per cell)."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Ray head, host:6379 or auto (default: $RAY_ADDRESS, else a new local Ray cluster)."
    ),
    gpus_per_cell: Optional[int] = typer.Option(None, "--gpus-per-cell", help="GPUs a Ray cell asks for (default: from --device)."),
    cpus_per_cell: Optional[int] = typer.Option(None, "--cpus-per-cell", help="CPUs a Ray cell asks for (default 1)."),
) -> None:
    """Run a grid over λ, μ, γ, temperature, proposer order and draft policy: one results folder per cell, plus plots."""
    from cos_bench.sweep import run_sweep

    # --draft-threshold / --draft-gamma-max go with the --draft grid's policies, else to the config's own policy.
    draft = (drafts, options.draft_parameters())
    grids = {"lambda": lambdas, "mu": mus, "gamma": gamma_grid, "temperature": temperatures, "proposer": proposers, "draft": draft}
    cfg = options.resolve(
        grids=grids,
        draft=None if drafts else draft[1],
        executor=executor,
        ray_address=ray_address,
        gpus_per_cell=gpus_per_cell,
        cpus_per_cell=cpus_per_cell,
    )
    run_sweep(cfg, check_out_dir(out or Path("results") / f"sweep-{cfg.name}"), console)


@app.command()
@user_errors
def report(
    folders: list[Path] = typer.Argument(..., help="Results folders (or sweep folders) to tabulate."),
    out: Path = typer.Option(Path("results/report"), "--out", "-o", help="Where to write summary.csv, summary.md and plots."),
) -> None:
    """Turn stored results into CSV and Markdown tables and PNG plots."""
    from cos_bench.folders import report_folders

    paths = report_folders(folders, check_out_dir(out), console)
    console.print(f"wrote {paths.summary_md}, {paths.summary_csv} and plots in {out}", markup=False, highlight=False)


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
