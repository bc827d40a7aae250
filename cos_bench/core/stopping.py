"""Stop rules, applied after every committed token identically for every method."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cos_bench.errors import CosBenchError

_FIRST_WINDOW = 32  # ids a typical stop-string check decodes: enough for guard + longest stop + last token
_GUARD = 8  # chars at a window's start that may differ from the full text (a cut "##", " ." or split character)
_MARGIN = 8  # chars before the last token's text that appending it may still change (a completed character, " n't")
_REPLACEMENT = "\ufffd"  # what decoders print for bytes that are not (yet) a whole UTF-8 character


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
        if self.stop_strings and self._has_stop_string(generated):
            return "stop_string"
        if len(generated) >= self.max_new_tokens:
            return "max_new_tokens"
        return None

    def _has_stop_string(self, generated: Sequence[int]) -> bool:
        """Whether a stop string occurs in decode(generated), found by decoding a bounded tail:
        decoding the whole generation after every token cost O(n^2) host work per generation,
        inside the timed decode.

        It stops at exactly the token where that old rule stopped, as a pure function of
        `generated`, for decoders whose text of a suffix of ids differs from the end of the full
        text only in a leading stretch, as in the last point (the Hugging Face decoders: byte-level BPE, SentencePiece with
        byte fallback, Metaspace, WordPiece, and transformers' cleanup; a decode that looked at
        the whole sequence at once could break it):

        - No false stop: a hit in the tail is confirmed on the full decode. That happens once
          per generation, since the caller then stops.
        - No missed stop. Callers check prefix by prefix and stop at the first hit, so a stop
          string found there was absent one token earlier: it ends in the text the last token
          changed, which is its own decoded text and at most _MARGIN chars before it (byte-level
          BPE completing a split character, the cleanup deleting the space in " ." or " n't").
          A SentencePiece byte-fallback run, all U+FFFD until valid, turns valid only as its last
          character completes, and every earlier character ended a valid run already. So the stop
          string lies in the last `need` chars, and the tail is taken at least that long.
        - The tail is the end of the full text. The text of a window ids[-w:] differs from
          decode(ids) only in a leading stretch, which `_trusted_start` drops: the first _GUARD
          chars (a "##" or a stripped space on its first token, a cut " ." pattern), then any
          U+FFFD (bytes of a character cut by the window; a byte-fallback run so cut is U+FFFD to
          its end) and quotes with the spaces beside them (the cleanup turns " ' " into "'"
          greedily from the left, so a cut inside " ' ' ' " moves which spaces go, up to the chain's
          end). Dropping more is always safe: the window only grows. Once it would reach the start
          of `generated`, the full text is used with no guard, which is the old rule itself.
        """
        if any(_REPLACEMENT in stop for stop in self.stop_strings):
            return self._in_full_text(generated)  # a window may show U+FFFD as text and text as U+FFFD
        tail = self._tail_text(generated)
        if tail is None:
            return self._in_full_text(generated)
        return any(stop in tail for stop in self.stop_strings) and self._in_full_text(generated)

    def _tail_text(self, generated: Sequence[int]) -> str | None:
        """The end of decode(generated), long enough to hold any stop string the last token
        completed, from the shortest window that yields it; None once a window would be all."""
        if len(generated) <= _FIRST_WINDOW:
            return None
        need = max(map(len, self.stop_strings)) + len(self.decode(generated[-1:])) + _MARGIN
        window = _FIRST_WINDOW
        while window < len(generated):
            text = self.decode(generated[-window:])
            start = _trusted_start(text)
            if len(text) - start >= need:
                return text[start:]
            window *= 2  # doubling keeps the total work within twice the last window
        return None

    def _in_full_text(self, generated: Sequence[int]) -> bool:
        text = self.decode(generated)
        return any(stop in text for stop in self.stop_strings)


def _trusted_start(text: str) -> int:
    """Where the text of a window starts to agree with the end of the full text (see
    StopRule._has_stop_string): after _GUARD chars and any U+FFFD, quotes and spaces beside quotes."""
    start = min(_GUARD, len(text))
    while start < len(text) and _may_differ(text, start):
        start += 1
    return start


def _may_differ(text: str, i: int) -> bool:
    if text[i] in (_REPLACEMENT, "'"):
        return True
    return text[i] == " " and "'" in text[i - 1 : i + 2]
