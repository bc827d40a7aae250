"""Every decoding method by name: the core's (`cos_bench.core.CORE_METHODS`) plus the outside ones wrapped here.

This is the registry the rest derives from (config validation, report order, theory, `engine.decode_one`).
Every method has one signature, `decode(context, prompt_ids, settings, stop) -> DecodeResult`
(`context.DecodeContext`: runners, loaded models, seed and generator). A new method is one new
file and one entry in `METHODS`. Importing this imports the core, and so torch: a config is
validated by the process that is about to load models, so a second, torch-free list of the same
names would cost more than the ~1.5 s it saves on an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from cos_bench.core import CORE_METHODS, DecodeResult, DecodeSettings, StopRule
from cos_bench.errors import CosBenchError
from cos_bench.methods import hf_ensemble
from cos_bench.methods.context import DecodeContext

MethodDecode = Callable[[DecodeContext, torch.Tensor, DecodeSettings, StopRule], DecodeResult]


def _core(decode: Callable[..., DecodeResult]) -> MethodDecode:
    """A core loop, `decode(runners, prompt_ids, settings, stop, generator)`, under the registry's signature."""

    def run(context: DecodeContext, prompt_ids: torch.Tensor, settings: DecodeSettings, stop: StopRule) -> DecodeResult:
        return decode(context.runners, prompt_ids, settings, stop, context.generator)

    return run


# Outside implementations, one module each in this package. transformers' assisted generation runs
# two ways: with transformers' own drafting defaults (what its users get) and matched to the run's γ.
HF_ENSEMBLE_VARIANTS: tuple[str, ...] = tuple(peer.name for peer in hf_ensemble.VARIANTS)  # defaults first
WRAPPED_METHODS: dict[str, MethodDecode] = {peer.name: peer for peer in hf_ensemble.VARIANTS}

# Methods that need exactly two models combined by a weighted ensemble: config validation refuses
# them elsewhere, and the runner plans them for we combinations only.
TWO_MODEL_WE_ONLY: frozenset[str] = frozenset(HF_ENSEMBLE_VARIANTS)

METHODS: dict[str, MethodDecode] = {**{name: _core(decode) for name, decode in CORE_METHODS.items()}, **WRAPPED_METHODS}


def method_names() -> tuple[str, ...]:
    """Every registered method, core first: what configs accept and the order reports use."""
    return tuple(METHODS)


def hf_drafting(name: str, settings: DecodeSettings) -> dict[str, Any] | None:
    """How the peer variant `name` drafts under `settings`, as stored beside its records; None for every other method."""
    peer = next((p for p in hf_ensemble.VARIANTS if p.name == name), None)
    return None if peer is None else peer.drafting(settings).to_json()


def get_method(name: str) -> MethodDecode:
    if name not in METHODS:
        raise CosBenchError(f"unknown decoding method {name!r}: choose from {', '.join(METHODS)}")
    return METHODS[name]


METHOD_NAMES: tuple[str, ...] = method_names()

__all__ = [
    "HF_ENSEMBLE_VARIANTS",
    "METHODS",
    "METHOD_NAMES",
    "TWO_MODEL_WE_ONLY",
    "WRAPPED_METHODS",
    "DecodeContext",
    "MethodDecode",
    "get_method",
    "hf_drafting",
    "method_names",
]
