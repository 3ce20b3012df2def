"""What machine a benchmark ran on, printed at the top of every bench script.

Figures from two CPUs are only comparable when we know which CPUs they were:
a step that takes 0.4 s on a Xeon with AVX-512 takes 2 s on a Zen 3 with AVX2,
and bf16 can be fast only with bf16 instructions.  So every bench names the
CPU, the instruction sets that decide TensorFlow's speed, the cores it may use,
the library versions and the load it started under.

    python -m bench.machine          # the header alone, plus the matmul peaks
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata

# The instruction sets that decide convolution speed (fma, avx2, avx512f) and
# whether bf16 is native (avx512_bf16, amx_bf16 + amx_tile) or emulated.
X86_FLAGS = ("fma", "avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
ARM_FLAGS = ("asimd", "sve", "bf16")
NATIVE_BF16 = {"avx512_bf16", "amx_bf16", "bf16"}


@dataclass
class CPU:
    model: str
    arch: str
    flags: set[str] | None  # None: this OS does not tell us
    logical: int
    usable: int  # CPUs this process may run on (affinity)
    quota: float | None = None  # cgroup CPU limit, in CPUs, when there is one
    source: str = ""
    relevant: tuple[str, ...] = field(default=())

    @property
    def native_bf16(self) -> bool | None:
        return None if self.flags is None else bool(self.flags & NATIVE_BF16)

    def flag_line(self) -> str:
        if self.flags is None:
            return f"flags unknown ({self.source})"
        have = [f for f in self.relevant if f in self.flags]
        lack = [f for f in self.relevant if f not in self.flags]
        return f"has {' '.join(have) or '-'}; lacks {' '.join(lack) or '-'}"

    def bf16_line(self) -> str:
        # Instructions present is not bf16 faster: TensorFlow measured slower in bf16 on a
        # Xeon with avx512_bf16 but no AMX (docs/PERFORMANCE.md); the benches measure it.
        # The verdict is the workers' own (worker/device.py), so bench and worker agree.
        if self.native_bf16 is None:
            return "bf16 instructions: unknown"
        present = ", ".join(sorted(self.flags & NATIVE_BF16)) or "NONE (emulated)"
        verdict = ""
        if self.source == "/proc/cpuinfo":
            from worker.device import cpu_bf16

            support = cpu_bf16()
            verdict = f"; workers run bf16 jobs in {'bf16' if support.native else 'fp32'} ({support.reason})"
        return f"bf16 instructions: {present}{verdict}"


def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> CPU:
    arch = platform.machine() or "unknown"
    logical = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    relevant = ARM_FLAGS if arch.lower() in ("aarch64", "arm64") else X86_FLAGS
    model, flags, source = _linux_cpu(cpuinfo) if os.path.exists(cpuinfo) else _other_cpu()
    return CPU(model or platform.processor() or arch, arch, flags, logical, usable, _cgroup_quota(), source, relevant)


def _linux_cpu(path: str) -> tuple[str | None, set[str] | None, str]:
    fields: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                break  # the first processor is enough
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware")
    if "cpu family" in fields and "model" in fields:
        # Virtual machines often say only "Intel(R) Xeon(R) Processor": family/model name the generation.
        model = f"{model}, family {fields['cpu family']} model {fields['model']}"
    raw = fields.get("flags", fields.get("Features"))  # x86: flags, ARM: Features
    return model, (set(raw.split()) if raw is not None else None), path


def _other_cpu() -> tuple[str | None, set[str] | None, str]:
    """macOS: sysctl names the CPU and its features; elsewhere we only have the model."""
    if sys.platform == "darwin":
        def sysctl(*names):
            try:
                return subprocess.run(["sysctl", "-n", *names], capture_output=True, text=True, timeout=5,
                                      check=False).stdout
            except (OSError, subprocess.SubprocessError):
                return ""
        model = sysctl("machdep.cpu.brand_string").strip() or None
        raw = sysctl("machdep.cpu.features", "machdep.cpu.leaf7_features").lower().replace(".", "_").split()
        flags = set(raw) or None
        if flags is None and sysctl("hw.optional.arm.FEAT_BF16").strip() == "1":
            flags = {"bf16"}  # Apple silicon: no x86 feature list, but it says whether it has BF16
        return model, flags, "sysctl"
    return None, None, f"no /proc/cpuinfo on {platform.system() or sys.platform}"


def _cgroup_quota() -> float | None:
    # A container may be limited to fewer CPUs than it sees (cgroup v2 cpu.max: "quota period").
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def versions() -> dict[str, str]:
    """Installed versions, read from package metadata: no need to import TensorFlow for this."""
    found = {"Python": platform.python_version()}
    for label, dists in (("TensorFlow", ("tensorflow", "tensorflow-cpu", "tf-nightly")), ("Keras", ("keras",)),
                         ("NumPy", ("numpy",)), ("JAX", ("jax",))):
        for dist in dists:
            try:
                found[label] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def keras_backend() -> str:
    if "keras" in sys.modules:  # imported already: ask it (it also reads ~/.keras/keras.json)
        return sys.modules["keras"].backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def describe() -> str:
    cpu = cpu_info()
    cores = f"{cpu.logical} logical CPUs, {cpu.usable} usable by this process"
    if cpu.quota is not None:
        cores += f", cgroup limit {cpu.quota:g} CPUs"
    soft = ", ".join(f"{k} {v}" for k, v in versions().items())
    lines = [
        f"machine: {cpu.model} ({cpu.arch}), {cores}",
        f"  cpu: {cpu.flag_line()}; {cpu.bf16_line()}",
        f"  software: {soft}; Keras backend {keras_backend()}; {platform.system()} {platform.release()}",
    ]
    if hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        lines.append(f"  load average {load:.2f} at start; the machine's load is not controlled here, "
                     "so compare the ratios (baseline measured in the same run), not absolute times")
    return "\n".join(lines)


def print_header() -> None:
    print(describe(), flush=True)


def tf_threads() -> str:
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return f"TensorFlow threads: intra-op {intra or 'default'}, inter-op {inter or 'default'}"


def matmul_peak(dtype: str = "float32", n: int = 2048, runs: int = 5) -> float:
    """GFLOP/s of an n×n TensorFlow matmul, best of ``runs``: the practical peak of
    this process, with its thread settings, on this machine as loaded right now.
    Best, not median: the peak is what the hardware can do; load only slows it."""
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_normal((n, n), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_normal((n, n), seed=(3, 4)), dtype)
    float(tf.linalg.matmul(a, b)[0, 0])  # warm-up: oneDNN picks its kernel on the first call
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        float(tf.linalg.matmul(a, b)[0, 0])  # CPU eager ops are synchronous; reading one value is enough
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


if __name__ == "__main__":
    print_header()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(tf_threads())
    fp32 = matmul_peak()
    bf16 = matmul_peak("bfloat16")
    print(f"matmul 2048x2048, best of 5: float32 {fp32:.0f} GFLOP/s, bfloat16 {bf16:.0f} GFLOP/s ({bf16 / fp32:.2f}x)")
