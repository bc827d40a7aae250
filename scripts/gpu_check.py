"""Engine check for a CUDA machine with no network (`make gpu-check`, ≤ 6 minutes on an H200).

Builds randomly initialised models with the architectures of Qwen2.5-0.5B, 1.5B
and 7B (no download) and measures both engines side by side in one run:

- `eager`: Hugging Face forwards with a DynamicCache (`HFRunner`);
- `compiled`: a StaticCache and the forward compiled with CUDA graphs (`StaticRunner`),
  every fed length compiled and recorded before any clock is read.

Per model and engine: single-token step time (k = 1) and verification-pass time
(k = γ + 1), next to the floor — weight bytes / the device-to-device copy bandwidth
measured here. Per pair and engine: c, vanilla overhead (vanilla time per token /
Σ step times), loop overhead (decode wall time / time inside forward calls, CUDA
events), and `cos` measured speedup vs Thm 3.6 — the paper's formula and the same
expectation with the verifier's measured pass cost ρ.

Random weights give near-uniform next-token distributions, so α here is an
artefact of the initialisation: this measures the engine, not the models.

Each stage's results are written to --out as soon as they exist, and stages stop
being started once --budget-s has passed, so a lease that runs short still leaves
what was measured. vanilla and `cos` alternate per prompt (a virtual GPU host's
speed was seen to drift 2x within a minute). `--tiny` runs the same script on
scaled-down shapes (CPU smoke test; compiled there means inductor without CUDA graphs).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch
import transformers
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cos_bench.core import CORE_METHODS, DecodeResult, DecodeSettings, HFRunner, StopRule, WeightedEnsemble  # noqa: E402
from cos_bench.core.runner import StaticRunner, graph_lengths, static_capacity  # noqa: E402
from cos_bench.theory import theoretical_speedup  # noqa: E402
from cos_bench.timing import Feed, cost_ratio, feed_seconds, step_seconds, timed  # noqa: E402

QWEN_SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}  # fmt: skip
TINY_SHAPES = {
    "tiny-a": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
    "tiny-b": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
    "tiny-c": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, vocab_size=640),
}  # fmt: skip
MIN_TRANSFORMERS = Version("5.24")  # pyproject's floor: the `cache=` keyword of the 5.x forward
SHARED_VOCAB = 151665  # Qwen2.5's tokenizer; embeddings are padded past it (and differ between sizes)


def build(shape: dict, device: torch.device, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise straight in the target dtype: no fp32 copy of a 7B model
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(Qwen2Config(**shape, max_position_embeddings=4096))
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)


def decode_stats(
    methods: tuple[str, ...], runners, prompts, settings: DecodeSettings, new_tokens: int, device: torch.device
) -> dict[str, dict]:
    """Time each method on every prompt, the methods interleaved per prompt so that a drift in the
    machine's speed (clocks, a noisy host) falls on all of them alike."""
    stop = StopRule(new_tokens)
    runs: dict[str, list[tuple[DecodeResult, float]]] = {method: [] for method in methods}
    for index, prompt in enumerate(prompts):
        for method in methods:
            generator = torch.Generator(device=device).manual_seed(index)
            decode = functools.partial(CORE_METHODS[method], runners, prompt, settings, stop, generator)
            runs[method].append(timed(decode, device))
    return {method: _summary(method_runs) for method, method_runs in runs.items()}


def _summary(runs: list[tuple[DecodeResult, float]]) -> dict:
    seconds = sum(elapsed for _, elapsed in runs)
    alphas = [result.expected_acceptance for result, _ in runs if result.expected_acceptance is not None]
    calls, forward = Counter(), Counter()
    for result, _ in runs:
        for model in result.models:
            calls[model.name] += model.forward_calls
            forward[model.name] += model.forward_seconds
    return {
        "tokens_per_s": sum(len(result.token_ids) for result, _ in runs) / seconds,
        "decode_s_per_token": statistics.mean(
            (elapsed - result.first_token_seconds) / max(1, len(result.token_ids) - 1) for result, elapsed in runs
        ),
        "alpha": statistics.mean(alphas) if alphas else None,
        "forward_s_per_call": {name: forward[name] / calls[name] for name in calls if calls[name]},
        "loop_overhead": seconds / sum(forward.values()),
    }


def copy_bandwidth(device: torch.device, megabytes: int) -> float:
    """Bytes per second of a device-to-device copy (read + write), median of 5: the floor's denominator."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # first touch
    samples = [timed(lambda: target.copy_(source), device)[1] for _ in range(5)]
    return 2 * source.numel() / statistics.median(samples)


def warm_up(runner, prompts, device: torch.device, seconds: float) -> None:
    """Untimed forwards until `seconds` have passed (at least one round): the first calls load
    kernels, and clocks and a virtual host's speed can take tens of seconds to settle."""
    start = time.perf_counter()
    while True:
        step_seconds(runner, prompts[:1], device, steps=4)
        if time.perf_counter() - start >= seconds:
            return


def model_times(runner, prompts, device: torch.device, verify_tokens: int, floor_s: float) -> dict:
    seconds = feed_seconds(runner, prompts, device, {"step": Feed(1), "verify": Feed(verify_tokens)})  # one prefill per prompt for both
    step, verify = seconds["step"], seconds["verify"]
    return {"step_s": step, "verify_s": verify, "verify_tokens": verify_tokens, "pass_cost": verify / step,
            "floor_s": floor_s, "step_over_floor": step / floor_s}  # fmt: skip


def check_pair(small: str, large: str, runners: dict, prompts, args, device) -> dict:
    pair = [runners[small], runners[large]]
    settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), args.temperature, (args.gamma, 1), proposer=0)
    for method in ("vanilla", "cos"):  # warm-up, untimed
        CORE_METHODS[method](pair, prompts[0], settings, StopRule(8), torch.Generator(device=device).manual_seed(0))
    # The pair's own step times, just before its decodes: the same minutes as the speedups they explain.
    verifier = feed_seconds(runners[large], prompts, device, {"step": Feed(1), "pass": Feed(args.gamma + 1)})
    step = {small: step_seconds(runners[small], prompts, device), large: verifier["step"]}
    rho = verifier["pass"] / verifier["step"]
    stats = decode_stats(("vanilla", "cos"), pair, prompts, settings, args.new_tokens, device)
    vanilla, cos = stats["vanilla"], stats["cos"]
    c = cost_ratio(step, small)
    theory = theoretical_speedup("cos", 2, cos["alpha"], c, (args.gamma, 1))
    theory_pass = theoretical_speedup("cos", 2, cos["alpha"], c, (args.gamma, 1), pass_cost=rho)
    speedup = cos["tokens_per_s"] / vanilla["tokens_per_s"]
    return {
        "pair": f"{small} drafts, {large} verifies",
        "step_seconds": step,
        "c": c,
        "verifier_pass_cost": rho,
        "vanilla_overhead": vanilla["decode_s_per_token"] / (step[small] + step[large]),
        "alpha_artificial": cos["alpha"],
        "cos_speedup_measured": speedup,
        "cos_speedup_theory": theory,
        "measured_over_theory": speedup / theory if theory else None,
        "cos_speedup_theory_measured_pass": theory_pass,
        "measured_over_theory_measured_pass": speedup / theory_pass if theory_pass else None,
        "vanilla_loop_overhead": vanilla["loop_overhead"],
        "cos_loop_overhead": cos["loop_overhead"],
        "vanilla_tokens_per_s": vanilla["tokens_per_s"],
        "vanilla_ms_per_token": 1000 / vanilla["tokens_per_s"],
        "cos_tokens_per_s": cos["tokens_per_s"],
    }


def make_runners(engine: str, models: dict, vocab: int, capacity: int, max_block: int) -> dict:
    if engine == "eager":
        return {name: HFRunner(name, model, vocab) for name, model in models.items()}
    return {name: StaticRunner(name, model, vocab, capacity, max_block, compiled=True) for name, model in models.items()}


def print_model(engine: str, name: str, times: dict) -> None:
    compiled = f"  compile+record {times['compile_s']:.1f} s (untimed)" if "compile_s" in times else ""
    print(f"[{engine}] {name}: step {times['step_s'] * 1000:.2f} ms, {times['verify_tokens']}-token verify "
          f"{times['verify_s'] * 1000:.2f} ms (ρ={times['pass_cost']:.2f}) (medians, measured); floor "
          f"{times['floor_s'] * 1000:.2f} ms (weight bytes / measured copy bandwidth) → step/floor "
          f"{times['step_over_floor']:.2f}{compiled}", flush=True)  # fmt: skip


def print_pair(engine: str, pair: dict) -> None:
    print(
        f"[{engine}] {pair['pair']}: c={pair['c']:.3f} (measured)  vanilla {pair['vanilla_ms_per_token']:.2f} ms/token, "
        f"overhead {pair['vanilla_overhead']:.3f}× Σ step (measured)  α={pair['alpha_artificial']:.3f} (artificial)  "
        f"cos {pair['cos_speedup_measured']:.2f}× measured vs {pair['cos_speedup_theory']:.2f}× Thm 3.6 "
        f"(ratio {pair['measured_over_theory']:.2f}) and {pair['cos_speedup_theory_measured_pass']:.2f}× with the measured "
        f"pass cost ρ={pair['verifier_pass_cost']:.2f} (computed)  loop overhead vanilla {pair['vanilla_loop_overhead']:.3f}, "
        f"cos {pair['cos_loop_overhead']:.3f} (wall / time in forwards, measured)", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="scaled-down shapes (CPU smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--engines", default="eager,compiled", help="comma list of eager, compiled")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--gamma", type=int, default=5, help="draft length of the small model (large: 1)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--warmup-s", type=float, default=5.0, help="untimed forwards per model and engine before any timing")
    parser.add_argument("--copy-mb", type=int, default=1024, help="size of the copy that measures bandwidth")
    parser.add_argument("--budget-s", type=float, default=330.0, help="start no new stage after this many seconds")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here (after every stage)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device(args.device)
    if Version(transformers.__version__) < MIN_TRANSFORMERS:
        parser.error(
            f"transformers {transformers.__version__} found; the runners need >= {MIN_TRANSFORMERS} "
            f"(pip install 'transformers>={MIN_TRANSFORMERS},<6', or carry its wheel to an offline machine)"
        )
    if device.type != "cuda" and not args.tiny:
        parser.error("no CUDA device: this check is for a GPU machine (use --tiny for a CPU smoke run)")
    engines = [e for e in args.engines.split(",") if e]
    if not set(engines) <= {"eager", "compiled"}:
        parser.error(f"--engines takes eager and/or compiled, got {args.engines}")
    shapes = TINY_SHAPES if args.tiny else QWEN_SHAPES
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    names = list(shapes)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {machine}; dtype {dtype}; torch {torch.__version__}; transformers {transformers.__version__}")
    print("NOTE: random weights — α is artificial; this measures the engine, not the models.")
    results: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": str(device), "machine": machine,
        "dtype": str(dtype), "torch": torch.__version__, "transformers": transformers.__version__, "args": vars(args) | {"out": str(args.out)},
        "models": {}, "pairs": {}, "stages_s": {}, "skipped": [],
    }  # fmt: skip

    def save(stage: str) -> None:
        results["stages_s"][stage] = time.perf_counter() - started
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))

    models = {name: build(shapes[name], device, dtype, seed) for seed, name in enumerate(names)}
    vocab = min(SHARED_VOCAB, *(m.config.vocab_size for m in models.values()))
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, vocab, (args.prompt_tokens,), generator=generator).to(device) for _ in range(args.prompts)]
    bandwidth = copy_bandwidth(device, args.copy_mb)
    results["copy_bandwidth_bytes_per_s"] = bandwidth
    floors = {name: sum(p.numel() * p.element_size() for p in m.parameters()) / bandwidth for name, m in models.items()}
    print(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s (measured, read + write)")
    save("build")
    max_block = args.gamma + 1 + 1  # Σγ + 1 for γ = (gamma, 1)
    capacity = static_capacity([args.prompt_tokens], args.new_tokens, max_block)  # as `cos-bench run` sizes it
    lengths = graph_lengths([args.prompt_tokens], max_block)
    pairs = [(names[0], names[2]), (names[1], names[2]), (names[0], names[1])]
    for engine in engines:
        runners = make_runners(engine, models, vocab, capacity, max_block)
        results["models"][engine], results["pairs"][engine] = {}, []
        for name, runner in runners.items():
            if time.perf_counter() - started > args.budget_s:
                results["skipped"].append(f"{engine} {name}: budget spent")
                continue
            compile_s = None
            if engine == "compiled":
                compile_s = runner.warm_up(lengths)
            warm_up(runner, prompts, device, args.warmup_s)
            times = model_times(runner, prompts, device, args.gamma + 1, floors[name])
            if compile_s is not None:
                times["compile_s"] = compile_s
            results["models"][engine][name] = times
            print_model(engine, name, times)
            save(f"{engine} {name}")
        for small, large in pairs:
            done = results["models"][engine]
            if small not in done or large not in done or time.perf_counter() - started > args.budget_s:
                results["skipped"].append(f"{engine} pair {small}/{large}: budget spent or a model not ready")
                continue
            pair = check_pair(small, large, runners, prompts, args, device)
            results["pairs"][engine].append(pair)
            print_pair(engine, pair)
            save(f"{engine} {small}/{large}")
    compare(results)
    save("done")
    print(f"wall {time.perf_counter() - started:.0f} s; skipped: {results['skipped'] or 'nothing'}")
    return results


def compare(results: dict) -> None:
    """Compiled against eager, where both measured the same pair: the speed-up of vanilla itself."""
    eager = {p["pair"]: p for p in results["pairs"].get("eager", [])}
    results["compiled_vs_eager"] = {}
    for pair in results["pairs"].get("compiled", []):
        if pair["pair"] in eager:
            ratio = eager[pair["pair"]]["vanilla_ms_per_token"] / pair["vanilla_ms_per_token"]
            results["compiled_vs_eager"][pair["pair"]] = {
                "vanilla_per_token_speedup": ratio,
                "eager_c": eager[pair["pair"]]["c"],
                "compiled_c": pair["c"],
            }
            print(f"{pair['pair']}: compiled vanilla is {ratio:.1f}× faster per token than eager (measured); "
                  f"c eager {eager[pair['pair']]['c']:.3f} vs compiled {pair['c']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
