"""Does the runner's CUDA-event timer inflate synchronised step times? (one-off probe)"""
import importlib.util, sys, time
import torch
sys.path.insert(0, ".")
spec = importlib.util.spec_from_file_location("gpu_check", "scripts/gpu_check.py")
gc = importlib.util.module_from_spec(spec); spec.loader.exec_module(gc)
from cos_bench.core import HFRunner
from cos_bench.core import runner as runner_mod
from cos_bench.timing import step_seconds
dev = torch.device("cuda")
class NoTimer:
    def __init__(self, device): pass
    def start(self): pass
    def stop(self): pass
    def seconds(self): return 0.0
Real = runner_mod.ForwardTimer
prompts = [torch.randint(0, 500, (128,), generator=torch.Generator().manual_seed(i)).to(dev) for i in range(2)]
for name in ("qwen2.5-0.5b", "qwen2.5-7b"):
    model = gc.build(gc.QWEN_SHAPES[name], dev, torch.bfloat16, 0)
    vocab = min(gc.SHARED_VOCAB, model.config.vocab_size)
    step_seconds(HFRunner(name, model, vocab), prompts[:1], dev, steps=3)
    for rep in range(3):
        for label, timer in (("events", Real), ("no-timer", NoTimer)):
            runner_mod.ForwardTimer = timer
            r = HFRunner(name, model, vocab)
            synced = step_seconds(r, prompts, dev, steps=10)
            r.reset(); r.feed(prompts[0], keep=1); tok = torch.tensor([3], device=dev)
            torch.cuda.synchronize(); t = time.perf_counter()
            for _ in range(30): r.feed(tok, 1)
            torch.cuda.synchronize(); back = (time.perf_counter() - t) / 30
            print(f"{name} rep {rep} {label:8s}: step_seconds (synced, median) {synced*1000:6.2f} ms | 30 back-to-back feeds {back*1000:6.2f} ms/step", flush=True)
    runner_mod.ForwardTimer = Real
    del model; torch.cuda.empty_cache()
