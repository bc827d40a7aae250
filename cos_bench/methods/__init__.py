"""Every decoding method by name: the core's (`cos_bench.core.CORE_METHODS`) plus the outside ones wrapped here.

This is the registry the rest derives from (config validation, report order, theory). Importing it
imports the core, and so torch: a config is validated by the process that is about to load models,
so a second, torch-free list of the same names would cost more than the ~1.5 s it saves on an error.
"""

from __future__ import annotations

from cos_bench.core import CORE_METHODS

# Outside implementations, one module each in this package, loaded where they run.
WRAPPED_METHODS: tuple[str, ...] = ("hf-ensemble",)  # hf_ensemble.py: transformers' assisted generation


def method_names() -> tuple[str, ...]:
    """Every registered method, core first: what configs accept and the order reports use."""
    return (*CORE_METHODS, *WRAPPED_METHODS)


METHOD_NAMES: tuple[str, ...] = method_names()
