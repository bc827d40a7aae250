"""What this machine's CPU is, read once from Linux's /proc/cpuinfo: its model name and the instruction
sets that decide which matmul kernels torch runs. The dtype choice and the manifest's hardware record
both read it here. Elsewhere (no /proc/cpuinfo) the text is empty and each answer says so.
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

# The flags that pick torch's CPU matmul path: AVX2 or AVX-512 kernels, native bf16 dot products
# (AVX512-BF16), AMX tiles. Two VMs that both call themselves "AMD EPYC" differ here (a Zen 3 with
# AVX2 only emulates bf16 and ran a 1.5B's 6-token pass 4.7x its single step; a Zen 4 with
# AVX512-BF16, 1.3x), so a model name alone does not say two runs timed alike.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


@cache
def _proc_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _field(cpuinfo: str, name: str) -> str | None:
    """The first `name : value` line's value (one per core, alike on every core we have seen)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name: `platform.processor()` says only "x86_64" on Linux, where two VMs of one
    name can be an AMD EPYC and an Intel Xeon with 2.7x slower steps (seen here)."""
    name = _field(_proc_cpuinfo() if cpuinfo is None else cpuinfo, "model name")
    return name or platform.processor() or platform.machine()


def cpu_generation(cpuinfo: str | None = None) -> str | None:
    """Vendor, family and model numbers ("AuthenticAMD family 25 model 17"): which microarchitecture the
    model name stands for. A Zen 4 and a Zen 5 VM were both "AMD EPYC" with AVX512-BF16 here (family 25
    model 17, family 26 model 2), so neither the name nor the flags tell them apart. None where
    cpuinfo does not say (not Linux, or an Arm cpuinfo)."""
    text = _proc_cpuinfo() if cpuinfo is None else cpuinfo
    vendor, family, model = (_field(text, name) for name in ("vendor_id", "cpu family", "model"))
    if family is None or model is None:
        return None
    return f"{vendor or 'unknown vendor'} family {family} model {model}"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags, as whole words; empty where there is no cpuinfo to read."""
    return frozenset((_field(_proc_cpuinfo() if cpuinfo is None else cpuinfo, "flags") or "").split())


def kernel_isa(cpuinfo: str | None = None) -> str | None:
    """Which of KERNEL_FLAGS the CPU has, sorted and space-separated ("" for none of them); None where
    there are no flags to read, so a manifest records nothing rather than a guess."""
    flags = cpu_flags(cpuinfo)
    return " ".join(sorted(flags.intersection(KERNEL_FLAGS))) if flags else None
