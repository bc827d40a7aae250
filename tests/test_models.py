"""Model sources, device/dtype choice and the tokenizer check, on tiny random models (no network)."""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path

import gguf
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from tiny import word_tokenizer
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

from cos_bench import models as cbm
from cos_bench import offline
from cos_bench.errors import CosBenchError
from cos_bench.models import (
    LoadedModel,
    check_same_tokenizer,
    cpu_bf16_beats_fp32,
    load_model,
    parse_spec,
    resolve_device,
    resolve_dtype,
    shared_vocab_size,
)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(autouse=True)
def fp32_on_cpu(monkeypatch):
    """Loading tests expect float32 on the CPU whatever this machine's bf16 support (dtype choice is tested apart)."""
    monkeypatch.setattr(cbm, "cpu_bf16_beats_fp32", lambda: False)


# --- tiny builders ------------------------------------------------------------------------


def tiny_qwen(vocab_size: int, seed: int = 0, layers: int = 2) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
    )  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


def save_tiny_dir(path: Path, words: list[str], padded_rows: int = 0, seed: int = 0) -> Path:
    tok = word_tokenizer(words)
    tiny_qwen(len(tok) + padded_rows, seed).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def byte_bpe_vocab() -> tuple[list[str], list[int], list[str]]:
    """A GPT-2 style byte-level BPE vocabulary: 256 byte symbols, three merges, three specials."""
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
    tokens = [*bytes_to_unicode().values(), *("".join(m) for m in merges), *SPECIALS]
    types = [1] * (len(tokens) - len(SPECIALS)) + [3] * len(SPECIALS)  # 1 normal, 3 control
    return tokens, types, [" ".join(m) for m in merges]


def write_tiny_gguf(path: Path, model: Qwen2ForCausalLM) -> Path:
    """Write `model` (float32) plus the byte-level BPE tokenizer as a qwen2 GGUF file."""
    tokens, types, merges = byte_bpe_vocab()
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("tiny")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_file_type(0)  # all F32
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_add_bos_token(False)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, cfg.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_dir(tmp_path_factory.mktemp("tiny") / "tiny-qwen", ["def", "return", "x", "+", "1"], padded_rows=5)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> tuple[Path, Qwen2ForCausalLM]:
    model = tiny_qwen(len(byte_bpe_vocab()[0]), seed=1)
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", model), model


# --- specs --------------------------------------------------------------------------------


def test_parse_spec_kinds(tiny_dir, tiny_gguf):
    gguf_path, _ = tiny_gguf
    assert parse_spec("Qwen/Qwen2.5-Coder-0.5B-Instruct") == cbm.ParsedSpec(
        "Qwen/Qwen2.5-Coder-0.5B-Instruct", "hub", "Qwen/Qwen2.5-Coder-0.5B-Instruct", None
    )
    pinned = parse_spec("Qwen/Qwen2.5-Coder-0.5B-Instruct@abc123")
    assert (pinned.kind, pinned.location, pinned.revision) == ("hub", "Qwen/Qwen2.5-Coder-0.5B-Instruct", "abc123")
    assert parse_spec("offline:qwen2.5-coder-1.5b-instruct").location == "qwen2.5-coder-1.5b-instruct"
    assert parse_spec(str(tiny_dir)).kind == "local"
    assert parse_spec(str(gguf_path)) == cbm.ParsedSpec(str(gguf_path), "gguf", str(gguf_path.resolve()))
    assert parse_spec(str(gguf_path.parent)).kind == "gguf"  # a folder holding exactly one .gguf


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("./no/such/dir", "no such model file or folder"),
        ("/nope/model.gguf", "no such model file or folder"),
        ("offline:llama-9000", "unknown offline model"),
        ("not a hub id!", "no such model file or folder"),
        ("", "empty model spec"),
    ],
)
def test_parse_spec_refuses_with_one_line(spec, fragment):
    with pytest.raises(CosBenchError, match=fragment) as info:
        parse_spec(spec)
    assert "\n" not in str(info.value)


def test_parse_spec_refuses_non_gguf_file(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(CosBenchError, match="not a .gguf"):
        parse_spec(str(tmp_path / "weights.bin"))


# --- device and dtype ---------------------------------------------------------------------


def _fake_accelerators(monkeypatch, cuda: bool, mps: bool, bf16: bool = True, count: int = 1):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count if cuda else 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.setattr(cbm, "_cuda_bf16", lambda device: bf16)


def test_resolve_device_auto_order(monkeypatch):
    _fake_accelerators(monkeypatch, cuda=True, mps=True)
    assert resolve_device("auto") == torch.device("cuda")
    _fake_accelerators(monkeypatch, cuda=False, mps=True)
    assert resolve_device(None) == torch.device("mps")
    _fake_accelerators(monkeypatch, cuda=False, mps=False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")


def test_resolve_device_explicit(monkeypatch):
    _fake_accelerators(monkeypatch, cuda=True, mps=False, count=2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("multi-gpu") == torch.device("cuda", 0)
    with pytest.raises(CosBenchError, match="does not exist"):
        resolve_device("cuda:2")
    with pytest.raises(CosBenchError, match="MPS is not available"):
        resolve_device("mps")
    _fake_accelerators(monkeypatch, cuda=False, mps=False)
    for bad, fragment in [("cuda", "CUDA is not available"), ("multi-gpu", "needs CUDA"), ("tpu9", "unknown device")]:
        with pytest.raises(CosBenchError, match=fragment):
            resolve_device(bad)


@pytest.mark.parametrize(
    "flags, faster",
    [
        ("fpu sse2 avx avx2 fma avx512f avx512_bf16", True),  # native bf16
        ("fpu sse2 avx amx_bf16 amx_tile", True),
        ("fpu sse2 avx avx2 fma", True),  # AVX2 only: ATen's own bf16 kernels, still faster than fp32
        ("fpu sse2 avx fma", False),  # no AVX2: not measured
        ("fp asimd evtstrm aes", False),  # an Arm CPU without bf16
        ("flags: avx512f avx512bw avx2x", False),  # words, not substrings
    ],
)
def test_cpu_bf16_beats_fp32_reads_the_flags(flags, faster):
    assert cpu_bf16_beats_fp32(f"processor : 0\nflags : {flags}\n") is faster


def test_resolve_dtype(monkeypatch):
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    _fake_accelerators(monkeypatch, cuda=True, mps=False, bf16=True)
    monkeypatch.setattr(cbm, "cpu_bf16_beats_fp32", lambda: False)
    assert resolve_dtype("auto", cpu) == torch.float32  # neither AVX2 nor native bf16: not measured faster
    monkeypatch.setattr(cbm, "cpu_bf16_beats_fp32", lambda: True)
    assert resolve_dtype("auto", cpu) == torch.bfloat16  # half the bytes per step
    assert resolve_dtype(None, cuda) == torch.bfloat16
    assert resolve_dtype("auto", mps) == torch.float16
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("torch.float16", cuda) == torch.float16
    assert resolve_dtype(torch.float32, cuda) == torch.float32
    _fake_accelerators(monkeypatch, cuda=True, mps=False, bf16=False)
    assert resolve_dtype("auto", cuda) == torch.float16
    with pytest.raises(CosBenchError, match="no native bfloat16"):
        resolve_dtype("bfloat16", cuda)
    with pytest.raises(CosBenchError, match="unknown dtype"):
        resolve_dtype("int4", cpu)


# --- loading ------------------------------------------------------------------------------


def test_load_local_dir(tiny_dir):
    loaded = load_model(str(tiny_dir), device="cpu")
    assert loaded.name == "tiny-qwen"
    assert (loaded.device, loaded.dtype) == (torch.device("cpu"), torch.float32)
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.source == cbm.ModelSource(
        str(tiny_dir), "local", str(tiny_dir.resolve()), None, None, "local folder (weights not hashed)"
    )
    ids = loaded.tokenizer("def x + 1", return_tensors="pt").input_ids
    assert loaded.model(ids).logits.shape == (1, ids.shape[1], len(loaded.tokenizer) + 5)


def test_load_local_dir_with_name_and_dtype(tiny_dir):
    loaded = load_model(str(tiny_dir), name="drafter", device="cpu", dtype="bfloat16")
    assert loaded.name == "drafter"
    assert loaded.dtype == torch.bfloat16 == next(loaded.model.parameters()).dtype


BROKEN_CONFIGS = {
    "invalid JSON": lambda good: '{"model_type": "qwen2",',
    "empty file": lambda good: "",
    "not a mapping": lambda good: "[1, 2]",
    "no model_type": lambda good: "{}",
    "unknown model_type": lambda good: json.dumps({**good, "model_type": "no-such-architecture"}),
    "field of the wrong type": lambda good: json.dumps({**good, "hidden_size": "wide"}),
}


@pytest.mark.parametrize("broken", BROKEN_CONFIGS.values(), ids=BROKEN_CONFIGS.keys())
def test_broken_config_json_is_one_line_naming_the_folder(tmp_path, tiny_dir, broken):
    import shutil

    folder = shutil.copytree(tiny_dir, tmp_path / "broken")
    (folder / "config.json").write_text(broken(json.loads((tiny_dir / "config.json").read_text())))
    with pytest.raises(CosBenchError) as err:
        load_model(str(folder), name="small", device="cpu")
    message = str(err.value)
    assert message.startswith(f"cannot load model 'small' from {folder} (") and "fix its config.json" in message
    assert "\n" not in message


def test_missing_weights_is_one_line(tmp_path, tiny_dir):
    import shutil

    folder = shutil.copytree(tiny_dir, tmp_path / "no-weights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CosBenchError, match=r"cannot load the model from .*no-weights \(OSError: .*model.safetensors"):
        load_model(str(folder), device="cpu")


def test_corrupt_gguf_is_one_line(tmp_path):
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(CosBenchError, match=r"cannot load the model from .*corrupt.gguf .*download or convert it again"):
        load_model(str(path), device="cpu")


def test_load_gguf_file_matches_the_weights_written(tiny_gguf):
    path, reference = tiny_gguf
    loaded = load_model(str(path), device="cpu")
    assert loaded.source.kind == "gguf"
    assert loaded.source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.name == "tiny"
    assert len(loaded.tokenizer) == len(byte_bpe_vocab()[0])
    assert loaded.tokenizer.eos_token == "<|im_end|>"
    ids = torch.tensor([[1, 5, 9, 200, 258]])
    torch.testing.assert_close(loaded.model(ids).logits, reference(ids).logits)


def _unreachable(*args, **kwargs):
    try:
        raise LocalEntryNotFoundError("Name or service not known")
    except LocalEntryNotFoundError as cause:
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files") from cause


def test_hub_unreachable_falls_back_to_registered_offline_copy(monkeypatch, tiny_dir, caplog):
    real = cbm._from_pretrained

    def fake(location, *args, **kwargs):
        if location.startswith("Qwen/"):
            _unreachable()
        return real(location, *args, **kwargs)

    monkeypatch.setattr(cbm, "_from_pretrained", fake)
    monkeypatch.setattr(cbm, "ensure_offline_model", lambda name, cache_dir=None, progress=True: tiny_dir)
    loaded = load_model("Qwen/Qwen2.5-Coder-0.5B-Instruct", device="cpu")
    assert loaded.source.kind == "offline"
    assert loaded.source.spec == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert loaded.source.sha256 == offline.OFFLINE_MODELS["qwen2.5-coder-0.5b-instruct"].sha256
    assert loaded.source.note.startswith("Hub unreachable")
    assert "offline:qwen2.5-coder-0.5b-instruct" in caplog.text


def test_hub_unreachable_without_offline_copy_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cbm, "_from_pretrained", _unreachable)
    with pytest.raises(CosBenchError, match="cannot reach the Hugging Face Hub") as info:
        load_model("someone/some-model", device="cpu")
    assert "\n" not in str(info.value)
    # A pinned revision is never silently replaced by the offline copy.
    with pytest.raises(CosBenchError, match="pinned revision"):
        load_model("Qwen/Qwen2.5-Coder-0.5B-Instruct@deadbeef", device="cpu")


def test_hub_missing_repo_is_not_mistaken_for_offline(monkeypatch):
    def missing(*args, **kwargs):
        raise OSError("someone/typo is not a local folder and is not a valid model identifier\nmore text")

    monkeypatch.setattr(cbm, "_from_pretrained", missing)
    with pytest.raises(CosBenchError, match="could not load someone/typo from the Hub: .*valid model identifier"):
        load_model("someone/typo", device="cpu")


def test_offline_spec_end_to_end_from_fake_wheels(tmp_path, monkeypatch, tiny_gguf):
    """A tiny GGUF split into fake data wheels goes through fetch -> verify -> convert -> load."""
    gguf_path, reference = tiny_gguf
    blob = gguf_path.read_bytes()
    third = len(blob) // 3 + 1
    packages = ("tiny-blob-part1", "tiny-blob-part2", "tiny-blob-part3")
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    for i, package in enumerate(packages, start=1):
        module = package.replace("-", "_")
        with zipfile.ZipFile(wheels / f"{module}-1.0-py3-none-any.whl", "w") as whl:
            whl.writestr(f"{module}/data/part{i:02d}.bin", blob[(i - 1) * third : i * third])
    fake = offline.OfflineModel(
        name="tiny", hub_id="example/tiny", packages=packages, version="1.0", size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(), gguf_file="tiny.gguf", quantisation="F32", licence="test only",
    )  # fmt: skip
    monkeypatch.setattr(offline, "OFFLINE_MODELS", {"tiny": fake})
    monkeypatch.setattr(offline, "_pip_download", lambda *a: pytest.fail("wheels are present; nothing to fetch"))

    loaded = load_model("offline:tiny", device="cpu", cache_dir=tmp_path / "cache", progress=False)
    folder = tmp_path / "cache" / "models" / "tiny"
    assert loaded.source == cbm.ModelSource(
        "offline:tiny", "offline", str(folder), None, fake.sha256,
        "offline copy of example/tiny: F32 from PyPI tiny-blob-part1..3==1.0, sha256-verified, dequantised to bf16",
    )  # fmt: skip
    provenance = json.loads((folder / offline.PROVENANCE_FILE).read_text())
    assert provenance["sha256"] == fake.sha256 and provenance["hub_id"] == "example/tiny"
    assert not (tmp_path / "cache" / "gguf" / "tiny.gguf").exists()  # deleted once converted
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == ["tiny"]  # no staging left
    ids = torch.tensor([[1, 5, 9, 200, 258]])
    # Stored in bf16, loaded back in float32: equal to the reference up to bf16 rounding of the weights.
    torch.testing.assert_close(loaded.model(ids).logits, reference(ids).logits, atol=0.05, rtol=0.05)

    started = time.perf_counter()
    assert offline.ensure_offline_model("tiny", cache_dir=tmp_path / "cache") == folder
    assert time.perf_counter() - started < 0.5  # converted copy: no re-hash, no re-conversion


# --- tokenizer check ----------------------------------------------------------------------


def test_same_tokenizer_returns_its_length():
    a, b = word_tokenizer(["def", "x"]), word_tokenizer(["def", "x"])
    assert check_same_tokenizer([("small", a), ("large", b)]) == len(a) == 5


def test_different_vocab_is_refused_naming_both():
    a, b = word_tokenizer(["def", "x"]), word_tokenizer(["def", "y"])
    with pytest.raises(CosBenchError) as info:
        check_same_tokenizer([("small", a), ("large", b)])
    message = str(info.value)
    assert "'small'" in message and "'large'" in message and "'x' vs 'y'" in message
    assert "\n" not in message


def test_different_special_tokens_are_refused():
    a, b = word_tokenizer(["def", "x"]), word_tokenizer(["def", "x"])
    b.add_special_tokens({"additional_special_tokens": ["x"]})  # same id, now special
    with pytest.raises(CosBenchError, match="special tokens differ at id 2"):
        check_same_tokenizer([("a", a), ("b", b)])


def test_different_eos_role_alone_is_accepted():
    a, b = word_tokenizer(["def", "x"]), word_tokenizer(["def", "x"])
    b.eos_token = "<|endoftext|>"  # base vs instruct: same ids, different stop token
    assert check_same_tokenizer([("base", a), ("instruct", b)]) == len(a)


def test_shared_vocab_size_ignores_padded_embedding_rows(tmp_path):
    words = ["def", "return", "x"]
    small = load_model(str(save_tiny_dir(tmp_path / "s", words, padded_rows=3)), device="cpu")
    large = load_model(str(save_tiny_dir(tmp_path / "l", words, padded_rows=11, seed=1)), device="cpu")
    assert small.model.config.vocab_size != large.model.config.vocab_size
    assert shared_vocab_size([small, large]) == len(small.tokenizer) == 6


def test_shared_vocab_size_refuses_embeddings_smaller_than_tokenizer(tmp_path):
    tok = word_tokenizer(["def", "x"])
    short = LoadedModel(
        "short", tiny_qwen(len(tok) - 1), tok, cbm.ModelSource("s", "local", "s", None, None, ""),
        torch.device("cpu"), torch.float32,
    )  # fmt: skip
    with pytest.raises(CosBenchError, match="'short' scores 4 tokens but its tokenizer has 5"):
        shared_vocab_size([short])


# --- the real offline pair (slow: needs the converted models) -----------------------------


@pytest.mark.slow
def test_real_offline_pair_shares_one_tokenizer_and_generates():
    pair = [load_model(f"offline:{name}", device="cpu") for name in offline.OFFLINE_MODELS]
    assert shared_vocab_size(pair) == 151_936
    for loaded in pair:
        assert loaded.source.kind == "offline"
        messages = [{"role": "user", "content": "Write a Python function that returns the square of x."}]
        ids = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
        out = loaded.model.generate(ids, max_new_tokens=24, do_sample=False)
        text = loaded.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        assert "def" in text and "x" in text, text
