"""Stop rules, applied after every committed token identically for every method."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cos_bench.errors import CosBenchError


@dataclass(frozen=True)
class StopRule:
    """Stop on an EOS id, on a stop string in the decoded generation, or at max_new_tokens.

    `decode` turns generated ids into text; it is only needed for stop strings
    (the core itself knows nothing of tokenization).
    """

    max_new_tokens: int
    eos_token_ids: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()
    decode: Callable[[Sequence[int]], str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise CosBenchError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}: raise it")
        if self.stop_strings and self.decode is None:
            raise ValueError("stop strings need a decode function")

    def reason(self, generated: Sequence[int]) -> str | None:
        """Why generation must stop after the last token of `generated`, or None."""
        if generated and generated[-1] in self.eos_token_ids:
            return "eos"
        if self.stop_strings:
            text = self.decode(generated)
            if any(stop in text for stop in self.stop_strings):
                return "stop_string"
        if len(generated) >= self.max_new_tokens:
            return "max_new_tokens"
        return None
