"""Tiny models built in the tests: no downloads.

`tiny_llama` is a real Hugging Face causal LM (random weights, float64 so that
one-token-at-a-time and many-tokens-at-once forward passes agree to ~1e-15 and
greedy ties cannot flip). `TableRunner` is a causal LM given as a table:
prefix -> logits, cheap enough to draw tens of thousands of samples, behind the
same `ModelRunner` interface the engine uses for real models.
"""

from __future__ import annotations

import hashlib

import torch

from cos_bench.core import AutoDraft, ConfidenceDraft, DraftPolicy, FixedDraft, HeuristicDraft, MarginalDraft, PassCost
from cos_bench.core.runner import ForwardStats, HFRunner, StaticRunner

# The runners a real model can sit behind: eager + DynamicCache, and the compiled engine's
# StaticCache logic run uncompiled (compiling takes tens of seconds; one slow test does it).
ENGINES = ("eager", "static")


def make_runner(engine: str, name: str, model, vocab: int, capacity: int = 128, max_block: int = 12):
    """A runner of the given engine kind for a real (tiny) Hugging Face model."""
    if engine == "eager":
        return HFRunner(name, model, vocab)
    if engine == "static":
        return StaticRunner(name, model, vocab, capacity=capacity, max_block=max_block, compiled=False)
    raise ValueError(f"unknown engine {engine!r}")


def tiny_llama(seed: int, vocab: int = 64, init: float = 0.5, embed_rows: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=embed_rows or vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        # A wide init makes next-token distributions peaked, so random models disagree often.
        initializer_range=init,
    )
    return LlamaForCausalLM(config).to(torch.float64).eval()


class TableRunner:
    """A causal LM over a small vocabulary whose logits are a fixed pseudo-random
    function of (seed, prefix). Implements the ModelRunner protocol."""

    def __init__(self, name: str, seed: int, vocab: int, scale: float = 1.5):
        self.name, self.seed, self.vocab, self.scale = name, seed, vocab, scale
        self._table: dict[tuple[int, ...], torch.Tensor] = {}
        self.reset()

    def logits_for(self, prefix: tuple[int, ...]) -> torch.Tensor:
        if prefix not in self._table:
            digest = hashlib.sha256(repr((self.seed, prefix)).encode()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
            self._table[prefix] = torch.randn(self.vocab, generator=gen, dtype=torch.float64) * self.scale
        return self._table[prefix]

    def reset(self) -> None:
        self.seen: list[int] = []
        self.cache_len = 0
        self.calls = 0
        self.tokens = 0

    def feed(self, tokens: torch.Tensor, keep: int) -> torch.Tensor:
        new = tokens.tolist()
        assert new, "fed nothing"
        self.seen.extend(new)
        self.cache_len = len(self.seen)
        self.calls += 1
        self.tokens += len(new)
        ends = range(len(self.seen) - keep + 1, len(self.seen) + 1)
        return torch.stack([self.logits_for(tuple(self.seen[:end])) for end in ends])

    def crop(self, length: int) -> None:
        del self.seen[length:]
        self.cache_len = len(self.seen)

    def stats(self) -> ForwardStats:
        return ForwardStats(self.calls, self.tokens, 0.0)


SPECIAL_TOKENS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}


def word_tokenizer(words: list[str]):
    """A whitespace word-level tokenizer; unknown words map to <unk>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", *words])}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return tokenizer


TASK_WORDS = "def return if else for in the of a to is and x y n 1 2 3 4 5 6 7 8 9 0 ( ) : + - = # The answer".split()


def save_tiny_pair(folder) -> tuple:
    """A small and a larger random Qwen2 model sharing one tokenizer, saved like Hub checkouts."""
    from pathlib import Path

    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    tokenizer = word_tokenizer(TASK_WORDS)
    paths = []
    for name, layers, seed in (("small", 1, 0), ("large", 3, 1)):
        torch.manual_seed(seed)
        config = Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            initializer_range=0.3, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        path = folder / name
        Qwen2ForCausalLM(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return tuple(paths)


def tiny_pair_config(folder, **changes) -> dict:
    """A raw experiment config over `save_tiny_pair(folder / "models")`: the tests' task files, float32, no
    warm-up, one example; `changes` replace keys."""
    from pathlib import Path

    small, large = save_tiny_pair(Path(folder) / "models")
    return {
        "name": "t",
        "models": [{"name": "small", "source": str(small)}, {"name": "large", "source": str(large)}],
        "combinations": [{"rule": "we", "weights": [0.5, 0.5]}],
        "limit": 1,
        "data_dir": str(Path(__file__).parent / "data" / "tasks"),
        "warmup": 0,
        "dtype": "float32",
        **changes,
    }


ADAPTIVE_POLICIES = ("confidence", "heuristic", "auto", "marginal")  # every policy but fixed, as the exactness tests run them


def draft_policy(name: str, n: int, cheap: float) -> DraftPolicy:
    """Each draft policy as the exactness tests run it: under `auto`, model 0 costs `cheap` of every
    other model's step, α is trusted from the first verdict on, so short decodes adapt, and passes
    are charged a measured-style curve (with a dip, as calibration can time one) as runs charge them;
    `marginal` likewise."""
    curve = PassCost((2, 3, 4, 5), (1.3, 1.5, 1.4, 1.8))
    return {
        "fixed": FixedDraft(),
        "confidence": ConfidenceDraft(0.4),
        "heuristic": HeuristicDraft(),
        "auto": AutoDraft(step_costs=(cheap,) + (1.0,) * (n - 1), pass_costs=(curve,) * n, min_verdicts=1),
        "marginal": MarginalDraft(step_costs=(cheap,) + (1.0,) * (n - 1), pass_costs=(curve,) * n, min_verdicts=1),
    }[name]
