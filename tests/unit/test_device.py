"""Which precision a job really runs in: bf16 only where the device has native bf16."""
from worker.device import Bf16Support, cpu_bf16, gpu_bf16, resolve_precision

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2 sha_ni vaes vpclmulqdq
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
"""
COOPER_LAKE = "model name\t: Intel(R) Xeon(R) 8380H\nflags\t\t: avx2 avx512f avx512_bf16\n"
SKYLAKE = "model name\t: Intel(R) Xeon(R) Gold 6148\nflags\t\t: avx2 avx512f avx512bw avx512vl\n"


def test_cpu_flags_decide_native_bf16():
    zen3 = cpu_bf16(ZEN3)
    assert not zen3.native and "AMD EPYC 7B13" in zen3.device and "no bf16 instructions" in zen3.reason
    assert not cpu_bf16(SKYLAKE).native  # AVX-512 alone is not bf16
    # avx512_bf16 without AMX: bf16 measured 1.6x slower than fp32 (docs/PERFORMANCE.md).
    cooper = cpu_bf16(COOPER_LAKE)
    assert not cooper.native and "avx512_bf16 but no AMX" in cooper.reason
    spr = cpu_bf16(SAPPHIRE_RAPIDS)
    assert spr.native and "amx_bf16" in spr.reason
    assert not cpu_bf16("").native  # unreadable: assume the slow case never happens silently


def test_gpu_compute_capability_decides_native_bf16():
    assert gpu_bf16("NVIDIA H200", (9, 0)).native
    assert gpu_bf16("NVIDIA A100", (8, 0)).native
    t4 = gpu_bf16("Tesla T4", (7, 5))
    assert not t4.native and "7.5" in t4.reason


def test_this_machine_is_detected_without_error():
    # Whatever this CPU is, detection answers, and agrees with its flags.
    with open("/proc/cpuinfo") as f:
        flags = set(next((line for line in f if line.startswith("flags")), "").split())
    assert cpu_bf16().native == ("amx_bf16" in flags)


def test_a_job_runs_bf16_only_where_it_is_native():
    native = Bf16Support(True, "gpu: H200", "bf16 tensor cores")
    emulated = cpu_bf16(ZEN3)
    assert resolve_precision("fp32", native) == ("fp32", None)
    assert resolve_precision("fp32", emulated) == ("fp32", None)
    assert resolve_precision("bf16", native) == ("bf16", None)
    ran, warning = resolve_precision("bf16", emulated)
    assert ran == "fp32" and "bf16 requested" in warning and "no bf16 instructions" in warning and "ran fp32" in warning
    assert resolve_precision("auto", native) == ("bf16", None)
    assert resolve_precision("auto", emulated) == ("fp32", None)
