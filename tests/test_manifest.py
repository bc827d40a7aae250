"""A resumed run must be timed on the hardware that started it, judged on what sets its forwards' speed."""

from __future__ import annotations

import pytest
import torch

from cos_bench import manifest
from cos_bench.cpuinfo import KERNEL_FLAGS
from cos_bench.errors import CosBenchError
from cos_bench.storage import write_manifest

EPYC = {
    "cpu_model": "AMD EPYC 9R14",
    "cpu_generation": "AuthenticAMD family 25 model 17",
    "cpu_isa": "avx2 avx512_bf16 avx512f",
    "torch_cpu_kernels": "AVX512",
    "cpu_count": 2,
    "torch_threads": 2,
    "cuda_devices": ["NVIDIA H200"],
}


def resume(tmp_path, monkeypatch, written: dict, now: dict, device: str) -> None:
    write_manifest(tmp_path, {"hardware": written})
    monkeypatch.setattr(manifest, "hardware", lambda: now)
    manifest.refuse_other_hardware(tmp_path, torch.device(device))


@pytest.mark.parametrize(
    ("change", "device", "refused"),
    [
        ({"cpu_model": "Intel(R) Xeon(R) Processor"}, "cpu", "CPU AMD EPYC 9R14 -> Intel(R) Xeon(R) Processor"),
        # One model name, another generation: a Zen 3 VM is "AMD EPYC" too, without AVX-512 (seen here).
        ({"cpu_isa": "avx2", "torch_cpu_kernels": "AVX2"}, "cpu", "instruction sets avx2 avx512_bf16 avx512f -> avx2"),
        # One name and one set of flags, another microarchitecture: a Zen 5 VM beside the Zen 4 one (seen here).
        (
            {"cpu_generation": "AuthenticAMD family 26 model 2"},
            "cpu",
            "CPU generation AuthenticAMD family 25 model 17 -> AuthenticAMD family 26 model 2",
        ),
        ({"cpu_isa": ""}, "cpu", "avx512f -> none of avx2/avx512f/avx512_bf16/amx_bf16"),
        ({"torch_cpu_kernels": "AVX2"}, "cpu", "torch kernels AVX512 -> AVX2"),  # ATEN_CPU_CAPABILITY capped (emulate_avx2.py)
        ({"cpu_isa": "avx2", "torch_cpu_kernels": "AVX2"}, "cuda", None),  # a GPU run's matmuls are not the CPU's
        ({"torch_threads": 1}, "cpu", "torch threads 2 -> 1"),
        ({"cpu_count": 16}, "cpu", "CPUs 2 -> 16"),
        ({"cuda_devices": ["NVIDIA A100"]}, "cpu", None),  # a CPU run's speed does not depend on the GPU beside it
        ({"torch_threads": 1, "cpu_count": 16}, "cuda", None),  # a Ray GPU cell runs cpus_per_cell threads
        ({"cuda_devices": ["NVIDIA H200"] * 8}, "cuda", None),  # more GPUs of one kind: each times alike
        ({"cuda_devices": ["NVIDIA A100"]}, "cuda", "GPUs NVIDIA H200 -> NVIDIA A100"),
        ({"cpu_model": "Intel(R) Xeon(R) Processor"}, "cuda", "CPU AMD EPYC 9R14 -> Intel(R) Xeon(R) Processor"),
    ],
)
def test_a_resume_is_refused_only_where_the_hardware_sets_a_different_speed(tmp_path, monkeypatch, change, device, refused):
    if refused is None:
        resume(tmp_path, monkeypatch, EPYC, EPYC | change, device)
        return
    with pytest.raises(CosBenchError) as error:
        resume(tmp_path, monkeypatch, EPYC, EPYC | change, device)
    assert refused in str(error.value) and "--out with a new folder" in str(error.value)


def test_what_an_older_manifest_did_not_record_is_not_compared(tmp_path, monkeypatch):
    added = ("cpu_model", "cpu_generation", "cpu_isa", "torch_cpu_kernels")
    older = {key: value for key, value in EPYC.items() if key not in added}
    resume(
        tmp_path, monkeypatch, older, EPYC | {"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_isa": "avx2", "cpu_generation": "x"}, "cpu"
    )
    resume(tmp_path, monkeypatch, {}, EPYC, "cpu")  # no hardware record at all
    resume(tmp_path, monkeypatch, ["not", "a", "mapping"], EPYC, "cpu")  # a hand-edited one: nothing to compare


def test_a_hand_edited_gpu_list_is_compared_not_a_traceback(tmp_path, monkeypatch):
    resume(tmp_path, monkeypatch, EPYC | {"cuda_devices": None}, EPYC | {"cuda_devices": []}, "cuda")  # both: none
    with pytest.raises(CosBenchError, match="GPUs NVIDIA H200 -> none"):
        resume(tmp_path, monkeypatch, EPYC | {"cuda_devices": "NVIDIA H200"}, EPYC | {"cuda_devices": None}, "cuda")


def test_this_machine_names_its_cpu_and_the_kernels_torch_runs_on_it():
    info = manifest.hardware()
    assert info["cpu_model"].strip()
    assert info["torch_cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert info["cpu_isa"] is None or set(info["cpu_isa"].split()) <= set(KERNEL_FLAGS)
