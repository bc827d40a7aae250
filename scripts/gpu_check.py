"""Engine check for a CUDA machine with no network (`make gpu-check`, < 5 minutes).

Builds randomly initialised models with the architectures of Qwen2.5-0.5B,
1.5B and 7B (no download), then reports per-model single-step time, the cost
ratio c of each pair, the vanilla framework overhead (vanilla time per token /
Σ bare step times) and `cos` measured vs theoretical speedup.

Random weights give near-uniform next-token distributions, so α here is an
artefact of the initialisation: this measures the engine, not the models.
`--tiny` runs the same script on scaled-down shapes (CPU smoke test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cos_bench.core import CORE_METHODS, DecodeSettings, HFRunner, StopRule, WeightedEnsemble  # noqa: E402
from cos_bench.theory import theoretical_speedup  # noqa: E402
from cos_bench.timing import cost_ratio, step_seconds, synchronize  # noqa: E402

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


def decode_stats(method: str, runners, prompts, settings: DecodeSettings, new_tokens: int, device: torch.device) -> dict:
    stop = StopRule(new_tokens)
    seconds, tokens, decode_seconds, alphas = 0.0, 0, [], []
    for index, prompt in enumerate(prompts):
        generator = torch.Generator(device=device).manual_seed(index)
        synchronize(device)
        start = time.perf_counter()
        result = CORE_METHODS[method](runners, prompt, settings, stop, generator)
        synchronize(device)
        elapsed = time.perf_counter() - start
        seconds += elapsed
        tokens += len(result.token_ids)
        decode_seconds.append((elapsed - result.first_token_seconds) / max(1, len(result.token_ids) - 1))
        if result.expected_acceptance is not None:
            alphas.append(result.expected_acceptance)
    return {
        "tokens_per_s": tokens / seconds,
        "decode_s_per_token": statistics.mean(decode_seconds),
        "alpha": statistics.mean(alphas) if alphas else None,
    }


def check_pair(small: str, large: str, models: dict, step: dict, prompts, args, device) -> dict:
    vocab = min(SHARED_VOCAB, *(models[n].config.vocab_size for n in (small, large)))
    runners = [HFRunner(small, models[small], vocab), HFRunner(large, models[large], vocab)]
    settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), args.temperature, (args.gamma, 1), proposer=0)
    for method in ("vanilla", "cos"):  # warm-up, untimed
        CORE_METHODS[method](runners, prompts[0], settings, StopRule(8), torch.Generator(device=device).manual_seed(0))
    vanilla = decode_stats("vanilla", runners, prompts, settings, args.new_tokens, device)
    cos = decode_stats("cos", runners, prompts, settings, args.new_tokens, device)
    c = cost_ratio({small: step[small], large: step[large]}, small)
    theory = theoretical_speedup("cos", 2, cos["alpha"], c, (args.gamma, 1))
    speedup = cos["tokens_per_s"] / vanilla["tokens_per_s"]
    return {
        "pair": f"{small} drafts, {large} verifies",
        "c": c,
        "vanilla_overhead": vanilla["decode_s_per_token"] / (step[small] + step[large]),
        "alpha_artificial": cos["alpha"],
        "cos_speedup_measured": speedup,
        "cos_speedup_theory": theory,
        "measured_over_theory": speedup / theory if theory else None,
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
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
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
    step = {name: step_seconds(HFRunner(name, model, vocab), prompts, device) for name, model in models.items()}
    for name, seconds in step.items():
        print(f"step time {name}: {seconds * 1000:.2f} ms (median single-token forward, measured)")
    pairs = [(names[0], names[2]), (names[1], names[2]), (names[0], names[1])]
    results = {"device": str(device), "step_seconds": step, "pairs": [check_pair(s, l, models, step, prompts, args, device) for s, l in pairs]}
    for pair in results["pairs"]:
        print(
            f"{pair['pair']}: c={pair['c']:.3f} (measured)  vanilla overhead={pair['vanilla_overhead']:.3f}× Σ step "
            f"(measured)  α={pair['alpha_artificial']:.3f} (artificial)  cos speedup {pair['cos_speedup_measured']:.2f}× "
            f"measured vs {pair['cos_speedup_theory']:.2f}× Thm 3.6 (computed from measured α, c)"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
