"""Where does a single-token forward's time go on this device? (one-off diagnostic)"""
import cProfile, importlib.util, io, pstats, statistics, sys, time
import torch
sys.path.insert(0, ".")
spec = importlib.util.spec_from_file_location("gpu_check", "scripts/gpu_check.py")
gc = importlib.util.module_from_spec(spec); spec.loader.exec_module(gc)
from cos_bench.core import HFRunner
dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
out = sys.argv[2] if len(sys.argv) > 2 else "."
dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
t = time.perf_counter(); sum(range(10**7)); print(f"python sum(range(1e7)): {time.perf_counter()-t:.3f} s")
if dev.type == "cuda":
    t = time.perf_counter()
    for _ in range(1000): torch.cuda.synchronize()
    print(f"empty synchronize: {(time.perf_counter()-t)*1000:.3f} us")
    x = torch.ones(8, device=dev); sync(); t = time.perf_counter()
    for _ in range(1000): x = x + 1
    sync(); print(f"1000 tiny adds: {(time.perf_counter()-t)*1000:.2f} us each")
shapes = {"tiny-a": gc.TINY_SHAPES["tiny-a"]}
if dev.type == "cuda": shapes["qwen2.5-0.5b"] = gc.QWEN_SHAPES["qwen2.5-0.5b"]
for name, shape in shapes.items():
    model = gc.build(shape, dev, dtype, 0)
    r = HFRunner(name, model, min(gc.SHARED_VOCAB, model.config.vocab_size))
    prompt = torch.randint(0, 500, (128,), device=dev)
    tok = torch.tensor([3], device=dev)
    def fresh():
        r.reset(); r.feed(prompt, keep=1); sync()
    fresh()
    for _ in range(5): r.feed(tok, 1)
    fresh(); s = []
    for _ in range(20):
        sync(); t = time.perf_counter(); r.feed(tok, 1); sync(); s.append(time.perf_counter() - t)
    print(f"{name}: runner.feed synced each: median {statistics.median(s)*1000:.2f} ms")
    fresh(); t = time.perf_counter()
    for _ in range(20): r.feed(tok, 1)
    t1 = time.perf_counter(); sync(); t2 = time.perf_counter()
    print(f"{name}: 20 feeds unsynced: host {(t1-t)/20*1000:.2f} ms/step, +{(t2-t1)*1000:.2f} ms drain")
    fresh(); s = []
    with torch.inference_mode():
        for _ in range(20):
            sync(); t = time.perf_counter(); model(input_ids=tok[None], cache=r.cache, use_cache=True, logits_to_keep=1); sync(); s.append(time.perf_counter() - t)
    print(f"{name}: bare model() synced: median {statistics.median(s)*1000:.2f} ms")
    fresh(); p = cProfile.Profile(); p.enable()
    for _ in range(10): r.feed(tok, 1)
    sync(); p.disable()
    buf = io.StringIO(); pstats.Stats(p, stream=buf).sort_stats("tottime").print_stats(30)
    open(f"{out}/cprofile_{name}.txt", "w").write(buf.getvalue())
    print("\n".join(buf.getvalue().splitlines()[:45]))
    from torch.profiler import profile, ProfilerActivity
    fresh()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(5): r.feed(tok, 1)
        sync()
    tab = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    open(f"{out}/torchprof_{name}.txt", "w").write(tab)
    print(tab[:6000])
    del model, r
