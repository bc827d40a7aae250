"""What every registered method is handed: the run's runners and loaded models, and the decode's seed.

One signature for every method (`cos_bench.methods.MethodDecode`):
`decode(context, prompt_ids, settings, stop) -> DecodeResult`. The core's loops use the
runners and the generator; a wrapped method may use the loaded models and the seed instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cos_bench.core.runner import ModelRunner

if TYPE_CHECKING:  # models.py imports transformers; a method is handed models already loaded
    from cos_bench.models import LoadedModel


@dataclass(frozen=True)
class DecodeContext:
    runners: Sequence[ModelRunner]  # one per model, in role order, each with its own KV cache
    models: Sequence[LoadedModel]  # the same models, as loaded (name, module, tokenizer)
    seed: int  # this decode's seed, the same for every method of one (example, repeat)
    generator: torch.Generator | None  # seeded with `seed` on the models' device; None when greedy
