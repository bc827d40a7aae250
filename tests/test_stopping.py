"""StopRule decodes a bounded tail for stop strings: it must stop at exactly the token where
the rule it replaced (decode the whole generation after every token) stopped.

Real tokenizers are trained offline here, in the three families whose decoders treat the
start of a window differently from the middle of a text: byte-level BPE (GPT-2, Qwen,
Llama 3: a cut splits a UTF-8 character), SentencePiece-style BPE and Unigram with byte
fallback (Llama 2: a cut byte run turns into U+FFFD up to its end) and WordPiece with
transformers' cleanup (BERT: "##" pieces, " ' " chains). They decode real task texts from
../shared/data (when present), random multilingual texts and random ids.
"""

from __future__ import annotations

import gzip
import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from itertools import islice
from pathlib import Path

import pytest

from cos_bench.core import StopRule, stopping
from cos_bench.tasks import TASK_NAMES, get_task

DATA_DIR = Path(__file__).parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"offline data copies not found at {DATA_DIR}")

PROJECT_STOPS = tuple(sorted({s for name in TASK_NAMES for chat in (False, True) for s in get_task(name).stop_strings_for(chat)}))
# Pieces of random text: stop-string material, characters of 2-4 UTF-8 bytes (which tokens
# split), the cleanup's patterns (" ' ' ' " chains, " n't") and runs of spaces.
PIECES = (
    "def", "class", "return", "if __name__", "print(", "Question:", "Answer", "the", "of", "x",
    "#", "```", "</s>", "<|im_end|>", "\n", "\n\n\n", "    ", " ", " ", ".", " .", ",", " ?", "!",
    "'", " ' ", " ' ' ' ", "n't", " 's", "é", "ü", "ß", "Ж", "ñ", "中", "文", "字", "日本語",
    "😀", "🧪", "👍🏽", "∑", "€", "\t", "e\u0301", "\ufffd", "龘靐齉爩龘靐",
)  # fmt: skip
SPECIALS = ("<|endoftext|>", "<|im_end|>", "</s>")


def old_reason(rule: StopRule, generated: Sequence[int]) -> str | None:
    """The rule as it was: the whole generation decoded after every token."""
    if generated and generated[-1] in rule.eos_token_ids:
        return "eos"
    if rule.stop_strings:
        text = rule.decode(generated)
        if any(stop in text for stop in rule.stop_strings):
            return "stop_string"
    if len(generated) >= rule.max_new_tokens:
        return "max_new_tokens"
    return None


def check_prefixes(rule: StopRule, ids: Sequence[int], after: int = 8) -> tuple[int, str] | None:
    """Compare both rules on every prefix up to the old rule's first stop (and `after` more);
    return where and why it first stopped. Beyond the first stop (where callers never ask)
    the new rule may miss a stop string far back, but must never invent one."""
    first = None
    for n in range(len(ids) + 1):
        old, new = old_reason(rule, ids[:n]), rule.reason(ids[:n])
        if first is None:
            assert new == old, (n, ids[:n], rule.decode(ids[:n]), rule.stop_strings)
            first = (n, old) if old is not None else None
        else:
            assert new == old or new != "stop_string" and old == "stop_string", (n, ids[:n], rule.stop_strings)
            if n >= first[0] + after:
                break
    return first


def late_stop_strings(firsts: list[tuple[int, str] | None]) -> int:
    """How many checks stopped on a stop string found only through a window (not a full decode)."""
    return sum(first is not None and first[0] > 40 and first[1] == "stop_string" for first in firsts)


# --- the tokenizers, trained offline --------------------------------------------------------


def random_text(rng: random.Random, pieces: int) -> str:
    return "".join(rng.choice(PIECES) + rng.choice(("", "", " ", "\n")) for _ in range(pieces))


def real_texts() -> list[str]:
    """HumanEval code, GSM8K word problems and MMLU questions, as a base model would write them."""
    if not DATA_DIR.is_dir():
        return []

    def rows(name: str, count: int) -> Iterator[dict]:
        with gzip.open(DATA_DIR / name, "rt", encoding="utf-8") as f:
            yield from (json.loads(line) for line in islice(f, count))

    code = [r["prompt"] + r["canonical_solution"] + "\n\ndef check(candidate):\n    pass\n" for r in rows("humaneval_test.jsonl.gz", 24)]
    math = [f"Question: {r['question']}\nAnswer: {r['answer']}\n\n\n" for r in rows("gsm8k_test.jsonl.gz", 24)]
    mmlu = [
        r["question"] + "".join(f"\n{k}. {c}" for k, c in zip("ABCD", r["choices"])) + "\nAnswer: B\n"
        for r in rows("mmlu_test.jsonl.gz", 24)
    ]
    return code + math + mmlu


def training_corpus() -> list[str]:
    rng = random.Random(0)
    return real_texts() + [random_text(rng, 60) for _ in range(60)]


def wrap(tokenizer, **kwargs):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **kwargs)


def with_byte_fallback(tokenizer):
    """SentencePiece models keep <0x00>..<0xFF> as ordinary pieces for text outside the vocabulary."""
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.to_str())
    model = spec["model"]
    model["byte_fallback"] = True
    if isinstance(model["vocab"], dict):  # BPE
        for byte in range(256):
            model["vocab"].setdefault(f"<0x{byte:02X}>", len(model["vocab"]))
    else:  # Unigram: [piece, score] pairs
        model["vocab"] += [[f"<0x{byte:02X}>", -20.0] for byte in range(256)]
    return Tokenizer.from_str(json.dumps(spec))


def byte_level_bpe():
    """GPT-2/Qwen style: bytes mapped to printable characters, merged by BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=list(SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(training_corpus(), trainer)
    return wrap(tokenizer, eos_token="<|endoftext|>")


def sentencepiece_bpe():
    """Llama 2 style: "▁" for spaces, byte fallback for characters outside a small alphabet."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=60, show_progress=False)
    tokenizer.train_from_iterator(training_corpus(), trainer)
    tokenizer = with_byte_fallback(tokenizer)
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return wrap(tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def sentencepiece_unigram():
    """A Unigram model over the SentencePiece pieces, byte fallback and the Metaspace decoder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    pieces = sorted(sentencepiece_bpe().get_vocab().items(), key=lambda item: item[1])
    # The Unigram trainer is not deterministic (ties, float sums): score the trained pieces by rank.
    vocab = [(piece, -20.0 if piece.startswith("<0x") else -math.log(2 + rank)) for rank, (piece, _) in enumerate(pieces)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(prepend_scheme="always")])
    return wrap(tokenizer, unk_token="<unk>", eos_token="</s>")


def wordpiece():
    """BERT style: "##" continuation pieces, spaces between words, transformers' cleanup on."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    # The WordPiece trainer breaks ties at random: take the SentencePiece pieces instead, a piece
    # that starts a word ("▁the") as a word piece ("the"), any other ("ing") as "##ing".
    vocab = {"[UNK]": 0, "[SEP]": 1}
    for piece, _ in sorted(sentencepiece_bpe().get_vocab().items(), key=lambda item: item[1]):
        if piece[0] != "<":
            forms = [piece[1:]] if piece[0] == "▁" else [piece, "##" + piece] if len(piece) == 1 else ["##" + piece]
            vocab.update((form, len(vocab)) for form in forms if form and form not in vocab)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return wrap(tokenizer, unk_token="[UNK]", sep_token="[SEP]", clean_up_tokenization_spaces=True)


TOKENIZERS = {
    "byte_level_bpe": byte_level_bpe,
    "sentencepiece_bpe": sentencepiece_bpe,
    "sentencepiece_unigram": sentencepiece_unigram,
    "wordpiece": wordpiece,
}


@cache  # sentencepiece_unigram reuses sentencepiece_bpe's pieces
def tokenizer_named(name: str):
    return TOKENIZERS[name]()


def decoder_of(tokenizer) -> Callable[[Sequence[int]], str]:
    return lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)  # as engine.stop_for does


def rule_for(tokenizer, stops: Sequence[str], max_new_tokens: int = 10_000, eos: bool = False) -> StopRule:
    eos_ids = frozenset({tokenizer.eos_token_id} - {None} if eos else ())
    return StopRule(max_new_tokens, eos_ids, tuple(stops), decoder_of(tokenizer))


def straddling_stops(rng: random.Random, text: str, count: int) -> list[str]:
    """Substrings first found in the text's second half: they straddle token boundaries and stop late."""
    stops: list[str] = []
    for _ in range(20 * count if text else 0):
        start = rng.randrange(len(text))
        stop = text[start : start + rng.randint(3, 12)]
        if text.find(stop) >= len(text) // 2 and len(stops) < count:
            stops.append(stop)
    return stops


def check_sequence(tokenizer, ids: Sequence[int], rng: random.Random) -> list[tuple[int, str] | None]:
    """The project's stop strings, late stops cut from the text, then all of them with EOS and a length limit."""
    text = decoder_of(tokenizer)(ids)
    firsts = [check_prefixes(rule_for(tokenizer, PROJECT_STOPS), ids)]
    firsts += [check_prefixes(rule_for(tokenizer, [stop]), ids) for stop in straddling_stops(rng, text, 3)]
    stops = PROJECT_STOPS + tuple(straddling_stops(rng, text, 2))
    firsts.append(check_prefixes(rule_for(tokenizer, stops, max_new_tokens=rng.randint(1, len(ids) + 1), eos=True), ids))
    return firsts


# --- the tests --------------------------------------------------------------------------------


@pytest.fixture(params=["first_window", "smallest_first_window"])
def windows(request, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also start every window at one id, so that every doubling step gets to decide."""
    if request.param == "smallest_first_window":
        monkeypatch.setattr(stopping, "_FIRST_WINDOW", 1)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_random_texts_stop_where_the_full_decode_did(name: str, windows: None) -> None:
    tokenizer, rng = tokenizer_named(name), random.Random(f"text-{name}")
    firsts = []
    for _ in range(10):
        ids = tokenizer(random_text(rng, rng.randint(30, 90)), add_special_tokens=False).input_ids
        start = rng.randrange(len(ids) // 4 + 1)  # a generation may start anywhere, even mid-character
        firsts += check_sequence(tokenizer, ids[start : start + 200], rng)
    assert late_stop_strings(firsts) >= 10


@pytest.mark.parametrize("name", TOKENIZERS)
def test_random_ids_stop_where_the_full_decode_did(name: str, windows: None) -> None:
    """Random ids: split characters, lone continuation bytes, byte runs, special tokens anywhere."""
    tokenizer, rng = tokenizer_named(name), random.Random(f"ids-{name}")
    firsts = []
    for _ in range(8):
        ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randint(40, 200))]
        firsts += check_sequence(tokenizer, ids, rng)
    assert late_stop_strings(firsts) >= 10


@needs_data
@pytest.mark.parametrize("name", TOKENIZERS)
def test_real_texts_stop_where_the_full_decode_did(name: str, windows: None) -> None:
    tokenizer, rng = tokenizer_named(name), random.Random(f"real-{name}")
    firsts = []
    for text in rng.sample(real_texts(), 10):
        ids = tokenizer(text, add_special_tokens=False).input_ids
        start = rng.randrange(len(ids) // 4 + 1)
        firsts += check_sequence(tokenizer, ids[start : start + 200], rng)
    assert late_stop_strings(firsts) >= 10


def test_quote_chains_cut_by_the_window_still_stop(windows: None) -> None:
    """transformers' cleanup turns " ' " into "'" greedily from the left: in " ' ' ' ' x" a
    window that starts inside the chain keeps other spaces than the full text, up to its end."""
    tokenizer, rng = tokenizer_named("wordpiece"), random.Random(2)
    quote, *others = tokenizer.convert_tokens_to_ids(["'", "x", "s", "n", "##t", ".", "the"])
    firsts = []
    for _ in range(20):
        ids = [rng.choice(others) if rng.random() < 0.06 else quote for _ in range(rng.randint(30, 90))]
        firsts += [check_prefixes(rule_for(tokenizer, [stop]), ids) for stop in straddling_stops(rng, decoder_of(tokenizer)(ids), 3)]
    assert late_stop_strings(firsts) >= 10


def test_byte_fallback_run_cut_by_the_window_still_stops() -> None:
    """A long run of byte tokens (a rare CJK text under Llama 2) ends in "\\n": every window that
    starts inside the run decodes it to U+FFFD only, hiding the "\\n"; the stop must still come."""
    tokenizer = tokenizer_named("sentencepiece_bpe")
    byte = {b: tokenizer.convert_tokens_to_ids(f"<0x{b:02X}>") for b in range(256)}
    ids = [byte[b] for b in ("龘" * 40 + "\nq").encode()]
    assert check_prefixes(rule_for(tokenizer, ["\n"]), ids) == (3 * 40 + 1, "stop_string")
    # the same run, cut: invalid from its start, so the full text never shows the "\n"
    assert check_prefixes(rule_for(tokenizer, ["\n"]), ids[1:]) is None


def test_stop_strings_with_replacement_characters_are_checked_on_the_full_text(windows: None) -> None:
    """After a stray byte, the full text shows a byte-fallback run as U+FFFD only; a window that
    starts inside the run at a character boundary decodes it validly. A stop string made of
    U+FFFD could then hide from every window: it is looked for in the full text."""
    tokenizer = tokenizer_named("sentencepiece_bpe")
    byte = {b: tokenizer.convert_tokens_to_ids(f"<0x{b:02X}>") for b in range(256)}
    letter = tokenizer.convert_tokens_to_ids("s")
    for char in ("龘", "😀"):
        ids = [byte[0x80]] + [byte[b] for b in (char * 40).encode()] + [letter]
        assert check_prefixes(rule_for(tokenizer, ["\ufffds"]), ids) == (len(ids), "stop_string")


def test_the_same_answer_whatever_the_order_of_calls() -> None:
    """reason() is a pure function of the prefix: callers also ask about arbitrary prefixes."""
    tokenizer, rng = tokenizer_named("byte_level_bpe"), random.Random(1)
    ids = tokenizer(random_text(rng, 80), add_special_tokens=False).input_ids
    rule = rule_for(tokenizer, PROJECT_STOPS + ("x",))
    in_order = [rule.reason(ids[:n]) for n in range(len(ids) + 1)]
    order = list(range(len(ids) + 1))
    rng.shuffle(order)
    assert {n: rule.reason(ids[:n]) for n in order} == dict(enumerate(in_order))
    assert "stop_string" in in_order


@pytest.mark.parametrize("name", TOKENIZERS)
def test_ids_decoded_per_call_stay_bounded(name: str) -> None:
    """The O(n^2) must not come back: a long generation's checks decode a bounded tail each."""
    tokenizer, rng = tokenizer_named(name), random.Random(f"long-{name}")
    sources = real_texts() or [random_text(rng, 200) for _ in range(10)]
    ids = tokenizer("\n".join(sources + [random_text(rng, 400)]), add_special_tokens=False).input_ids[:3000]
    assert len(ids) > 2000
    decoded: list[int] = []
    decode = decoder_of(tokenizer)
    rule = StopRule(len(ids), stop_strings=("<never in the text>",), decode=lambda i: decoded.append(len(i)) or decode(i))
    assert all(rule.reason(ids[:n]) is None for n in range(1, len(ids)))
    assert max(decoded) <= 128
    assert sum(decoded) <= 64 * len(ids)
