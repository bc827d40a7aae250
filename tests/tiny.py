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

from cos_bench.core.runner import ForwardStats


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
