"""Engine check for a CUDA machine with no network (`make gpu-check`, < 5 minutes).

Builds randomly initialised models with the architectures of Qwen2.5-0.5B,
1.5B and 7B (no download), then reports per-model single-step time, the cost
ratio c of each pair, the vanilla framework overhead (vanilla time per token /
Σ bare step times) and `cos` measured vs theoretical speedup.

Random weights give near-uniform next-token distributions, so α here is an
artefact of the initialisation: this measures the engine, not the models.

c is the ratio of synchronised single-step times, as in a real run. A batch-1
eager forward is often launch-bound on a GPU: the host issues kernels slower
than the device runs them, and inside a decode nothing waits between calls.
So the check also reports c from the mean forward-call time inside vanilla's
decodes (CUDA events) with the Thm 3.6 factor it gives, and the loop overhead
(decode wall time / time inside forward calls) of vanilla and `cos`. Each
model is warmed up first (`--warmup-s`), each pair's c comes from step times
taken just before its decodes, and vanilla and `cos` alternate per prompt:
a virtual GPU host's speed was seen to drift by 2x within a minute.
`--tiny` runs the same script on scaled-down shapes (CPU smoke test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import transformers
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cos_bench.core import CORE_METHODS, DecodeResult, DecodeSettings, HFRunner, StopRule, WeightedEnsemble  # noqa: E402
from cos_bench.theory import theoretical_speedup  # noqa: E402
from cos_bench.timing import cost_ratio, step_seconds, timed  # noqa: E402

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


def decode_stats(methods: tuple[str, ...], runners, prompts, settings: DecodeSettings, new_tokens: int,
                 device: torch.device) -> dict[str, dict]:
    """Time each method on every prompt, the methods interleaved per prompt so that a drift in the
    machine's speed (clocks, a noisy host) falls on all of them alike."""
    stop = StopRule(new_tokens)
    runs: dict[str, list[tuple[DecodeResult, float]]] = {method: [] for method in methods}
    for index, prompt in enumerate(prompts):
        for method in methods:
            generator = torch.Generator(device=device).manual_seed(index)
            runs[method].append(timed(lambda: CORE_METHODS[method](runners, prompt, settings, stop, generator), device))
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
        # Inside the loop nothing waits for the device between calls, so on a launch-bound GPU a
        # call's in-loop time can differ from the synchronised step time that c is measured with.
        "forward_s_per_call": {name: forward[name] / calls[name] for name in calls if calls[name]},
        "loop_overhead": seconds / sum(forward.values()),
    }


def warm_up(runner: HFRunner, prompts, device: torch.device, seconds: float) -> None:
    """Untimed forwards until `seconds` have passed (at least one round): the first calls load
    kernels, and clocks and a virtual host's speed can take tens of seconds to settle."""
    start = time.perf_counter()
    while True:
        step_seconds(runner, prompts[:1], device, steps=4)
        if time.perf_counter() - start >= seconds:
            return


def check_pair(small: str, large: str, models: dict, prompts, args, device) -> dict:
    vocab = min(SHARED_VOCAB, *(models[n].config.vocab_size for n in (small, large)))
    runners = [HFRunner(small, models[small], vocab), HFRunner(large, models[large], vocab)]
    settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), args.temperature, (args.gamma, 1), proposer=0)
    for method in ("vanilla", "cos"):  # warm-up, untimed
        CORE_METHODS[method](runners, prompts[0], settings, StopRule(8), torch.Generator(device=device).manual_seed(0))
    # The pair's own step times, just before its decodes: the same minutes as the speedups they explain.
    step = {runner.name: step_seconds(runner, prompts, device) for runner in runners}
    stats = decode_stats(("vanilla", "cos"), runners, prompts, settings, args.new_tokens, device)
    vanilla, cos = stats["vanilla"], stats["cos"]
    c = cost_ratio(step, small)
    theory = theoretical_speedup("cos", 2, cos["alpha"], c, (args.gamma, 1))
    c_in_loop = cost_ratio(vanilla["forward_s_per_call"], small)
    speedup = cos["tokens_per_s"] / vanilla["tokens_per_s"]
    return {
        "pair": f"{small} drafts, {large} verifies",
        "step_seconds": step,
        "c": c,
        "vanilla_overhead": vanilla["decode_s_per_token"] / (step[small] + step[large]),
        "alpha_artificial": cos["alpha"],
        "cos_speedup_measured": speedup,
        "cos_speedup_theory": theory,
        "measured_over_theory": speedup / theory if theory else None,
        "c_in_loop": c_in_loop,
        "cos_speedup_theory_in_loop_c": theoretical_speedup("cos", 2, cos["alpha"], c_in_loop, (args.gamma, 1)),
        "vanilla_loop_overhead": vanilla["loop_overhead"],
        "cos_loop_overhead": cos["loop_overhead"],
        "vanilla_tokens_per_s": vanilla["tokens_per_s"],
        "cos_tokens_per_s": cos["tokens_per_s"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="scaled-down shapes (CPU smoke test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--gamma", type=int, default=5, help="draft length of the small model (large: 1)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--warmup-s", type=float, default=10.0, help="untimed forwards per model before any timing")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if Version(transformers.__version__) < MIN_TRANSFORMERS:
        parser.error(f"transformers {transformers.__version__} found; the runners need >= {MIN_TRANSFORMERS} "
                     f"(pip install 'transformers>={MIN_TRANSFORMERS},<6', or carry its wheel to an offline machine)")
    if device.type != "cuda" and not args.tiny:
        parser.error("no CUDA device: this check is for a GPU machine (use --tiny for a CPU smoke run)")
    shapes = TINY_SHAPES if args.tiny else QWEN_SHAPES
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    names = list(shapes)
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; dtype {dtype}")
    print("NOTE: random weights — α is artificial; this measures the engine, not the models.")
    models = {name: build(shapes[name], device, dtype, seed) for seed, name in enumerate(names)}
    vocab = min(SHARED_VOCAB, *(m.config.vocab_size for m in models.values()))
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, vocab, (args.prompt_tokens,), generator=generator).to(device) for _ in range(args.prompts)]
    runners = {name: HFRunner(name, model, vocab) for name, model in models.items()}
    for runner in runners.values():
        warm_up(runner, prompts, device, args.warmup_s)
    step = {name: step_seconds(runner, prompts, device) for name, runner in runners.items()}
    for name, seconds in step.items():
        print(f"step time {name}: {seconds * 1000:.2f} ms (median single-token forward, measured)")
    pairs = [(names[0], names[2]), (names[1], names[2]), (names[0], names[1])]
    results = {"device": str(device), "step_seconds": step, "pairs": [check_pair(s, l, models, prompts, args, device) for s, l in pairs]}
    for pair in results["pairs"]:
        small, large = pair["step_seconds"].values()
        print(
            f"{pair['pair']}: step times {small * 1000:.2f} / {large * 1000:.2f} ms (measured just before its decodes)  "
            f"c={pair['c']:.3f} (measured)  vanilla overhead={pair['vanilla_overhead']:.3f}× Σ step "
            f"(measured)  α={pair['alpha_artificial']:.3f} (artificial)  cos speedup {pair['cos_speedup_measured']:.2f}× "
            f"measured vs {pair['cos_speedup_theory']:.2f}× Thm 3.6 (computed from measured α, c)"
        )
        print(
            f"    inside the decodes: c={pair['c_in_loop']:.3f} (mean forward-call time, events, measured) → "
            f"{pair['cos_speedup_theory_in_loop_c']:.2f}× Thm 3.6 (computed); loop overhead (wall / time in forwards, "
            f"measured) vanilla {pair['vanilla_loop_overhead']:.3f}, cos {pair['cos_loop_overhead']:.3f}"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
