"""bench/machine.py names the CPU and says whether bf16 is native, from /proc/cpuinfo text."""
from bench.machine import cpu_info, describe

ZEN3 = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 1
model name	: AMD EPYC 7B13
flags		: fpu sse sse2 avx fma avx2 bmi2 sha_ni

processor	: 1
model name	: something else
"""
XEON = ZEN3.replace("AMD EPYC 7B13", "Intel(R) Xeon(R) Processor").replace("sha_ni", "avx512f avx512_bf16")


def test_cpu_flags_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(ZEN3)
    zen3 = cpu_info(str(path))
    assert zen3.model == "AMD EPYC 7B13, family 25 model 1"
    assert {"avx2", "fma"} <= zen3.flags and "avx512f" not in zen3.flags
    assert zen3.native_bf16 is False and "NO" in zen3.bf16_line()
    path.write_text(XEON)
    assert cpu_info(str(path)).native_bf16 is True


def test_header_names_cpu_cores_and_versions():
    text = describe()
    for word in ("machine:", "logical CPUs", "TensorFlow", "Keras", "NumPy", "bf16 instructions"):
        assert word in text
