"""/proc/cpuinfo read as Linux writes it: the model name and the kernel-picking flags, whole words only."""

from __future__ import annotations

import pytest

from cos_bench.cpuinfo import cpu_flags, cpu_generation, cpu_model, kernel_isa

ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2 sha_ni vaes\n"
ZEN4 = ZEN3.replace("avx2 ", "avx2 avx512f avx512bw avx512_bf16 avx512_vnni ")
XEON = "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"


@pytest.mark.parametrize(
    ("cpuinfo", "model", "isa"),
    [
        (ZEN3, "AMD EPYC", "avx2"),
        (ZEN4, "AMD EPYC", "avx2 avx512_bf16 avx512f"),  # same name as ZEN3: only the flags tell them apart
        (XEON, "Intel(R) Xeon(R) Processor", "amx_bf16 avx2 avx512_bf16 avx512f"),
        ("model name : Old CPU\nflags : fpu sse2 avx2x avx512\n", "Old CPU", ""),  # words, not substrings
    ],
)
def test_model_name_and_kernel_flags(cpuinfo, model, isa):
    assert cpu_model(cpuinfo) == model
    assert kernel_isa(cpuinfo) == isa


def test_a_cpuinfo_without_flags_records_nothing_rather_than_a_guess():
    arm = "processor\t: 0\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\n"
    assert cpu_flags(arm) == frozenset()
    assert kernel_isa(arm) is None
    assert cpu_model(arm)  # the platform's own name for the processor or machine, never empty
    assert kernel_isa("") is None


def test_the_generation_tells_apart_what_name_and_flags_do_not():
    zen4 = ZEN4.replace("model name", "cpu family\t: 25\nmodel\t\t: 17\nmodel name")
    zen5 = ZEN4.replace("model name", "cpu family\t: 26\nmodel\t\t: 2\nmodel name")
    assert (cpu_model(zen4), kernel_isa(zen4)) == (cpu_model(zen5), kernel_isa(zen5))
    assert cpu_generation(zen4) == "AuthenticAMD family 25 model 17"
    assert cpu_generation(zen5) == "AuthenticAMD family 26 model 2"
    assert cpu_generation(ZEN3) is None  # no family or model line: nothing recorded rather than a guess
