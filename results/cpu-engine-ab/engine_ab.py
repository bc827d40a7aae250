"""A/B of the decoding engine on the offline pair: per-token time of vanilla and cos (greedy, bf16),
eager runner of a given checkout, optionally the compiled StaticRunner. Usage: ab.py ROOT ENGINE TOKENS"""
import gzip, json, statistics, sys, time
root, engine, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, root)
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from cos_bench.core import CORE_METHODS, DecodeSettings, HFRunner, StopRule, WeightedEnsemble
M = "/root/.cache/cos-bench/models/"
tok = AutoTokenizer.from_pretrained(M + "qwen2.5-coder-0.5b-instruct")
models = [AutoModelForCausalLM.from_pretrained(M + n, dtype=torch.bfloat16).eval() for n in ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct")]
V = len(tok)
rows = [json.loads(l) for l in gzip.open("/work/shared/data/humaneval_test.jsonl.gz", "rt")][:2]
prompts = [tok(r["prompt"], return_tensors="pt").input_ids[0] for r in rows]
t0 = time.perf_counter()
if engine == "eager":
    runners = [HFRunner(n, m, V) for n, m in zip("sl", models)]
else:
    from cos_bench.core.runner import StaticRunner
    runners = [StaticRunner(n, m, V, 512, 7, compiled=(engine == "compiled")) for n, m in zip("sl", models)]
    lengths = set(range(1, 8)) | {runners[0].padded_length(len(p) + j) for p in prompts for j in range(8)}
    for r in runners: r.warm_up(sorted(lengths), rounds=1)
print(f"{engine}: setup/compile {time.perf_counter() - t0:.1f} s", flush=True)
settings = DecodeSettings(WeightedEnsemble([0.5, 0.5]), 0.0, (5, 1))
for m in ("vanilla", "cos"):
    CORE_METHODS[m](runners, prompts[0], settings, StopRule(4))
times = {"vanilla": [], "cos": []}
ids = {}
for rep in range(2):
    for i, p in enumerate(prompts):
        for m in ("vanilla", "cos"):
            s = time.perf_counter(); r = CORE_METHODS[m](runners, p, settings, StopRule(tokens)); e = time.perf_counter() - s
            times[m].append(e / len(r.token_ids)); ids[(i, m)] = r.token_ids
for m, v in times.items():
    print(f"{engine} {m}: {statistics.mean(v)*1000:.1f} ms/token (per decode: {', '.join(f'{x*1000:.0f}' for x in v)})", flush=True)
print(f"{engine} cos speedup {statistics.mean(times['vanilla'])/statistics.mean(times['cos']):.3f}; identical {[ids[(i,'vanilla')]==ids[(i,'cos')] for i in range(2)]}")
print("ids", json.dumps({f"{i}-{m}": list(v) for (i, m), v in ids.items()}))
