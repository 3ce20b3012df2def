"""What this worker's device computes fast: is bfloat16 native here, or emulated?

bf16 halves the network's memory traffic and, on hardware with bf16 matrix
units, roughly doubles its throughput.  Without them a bf16 step is *slower*
than fp32: 8.6x on an AVX2-only AMD Zen 3 (emulated), and still 1.6x on a Xeon
with AVX512_BF16 but no AMX (the dot-product instruction alone does not pay
for the conversions around it; docs/PERFORMANCE.md).  So a worker checks once,
at start, and a job that asks for bf16 on a device without it runs fp32 and
says so.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Bf16Support", "detect_bf16", "cpu_bf16", "gpu_bf16", "resolve_precision"]

# x86: AMX tiles (Sapphire Rapids and later) make oneDNN's bf16 convolutions
# faster than fp32; avx512_bf16 alone was measured slower (see above).
CPU_BF16_FLAGS = ("amx_bf16",)
# NVIDIA: tensor cores take bf16 from Ampere (compute capability 8.0) on.
GPU_BF16_MIN_CC = (8, 0)


@dataclass(frozen=True)
class Bf16Support:
    native: bool
    device: str  # what was checked, e.g. "cpu: Intel(R) Xeon(R) ..." or "gpu: NVIDIA H200 (cc 9.0)"
    reason: str  # one line a person can read

    def as_dict(self) -> dict:
        return asdict(self)


def cpu_model_and_flags(cpuinfo: str) -> tuple[str, set[str]]:
    """Model name and flags of the first processor in a /proc/cpuinfo text."""
    model, flags = "unknown CPU", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def cpu_bf16(cpuinfo: str | None = None) -> Bf16Support:
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    model, flags = cpu_model_and_flags(cpuinfo)
    device = f"cpu: {model}"
    if flags & set(CPU_BF16_FLAGS):
        return Bf16Support(True, device, "this worker's CPU has AMX bf16 (amx_bf16)")
    if not flags:
        return Bf16Support(False, device, "this worker could not read its CPU's flags; assuming no fast bf16")
    if "avx512_bf16" in flags:
        return Bf16Support(False, device, "this worker's CPU has avx512_bf16 but no AMX, where bf16 is slower "
                                          "than fp32")
    return Bf16Support(False, device, "this worker's CPU has no bf16 instructions")


def gpu_bf16(name: str, capability: tuple[int, int]) -> Bf16Support:
    cc = ".".join(map(str, capability))
    device = f"gpu: {name} (compute capability {cc})"
    if tuple(capability) >= GPU_BF16_MIN_CC:
        return Bf16Support(True, device, f"this worker's GPU has bf16 tensor cores (compute capability {cc})")
    return Bf16Support(False, device, f"this worker's GPU has no bf16 tensor cores (compute capability {cc} < 8.0)")


def _first_gpu() -> tuple[str, tuple[int, int]] | None:
    """Name and compute capability of the GPU the Keras backend computes on, if any."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "gpu":
            return None
        major, _, minor = str(getattr(device, "compute_capability", "0.0")).partition(".")
        return device.device_kind, (int(major), int(minor or 0))
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        details = tf.config.experimental.get_device_details(gpus[0])
        return details.get("device_name", "GPU"), tuple(details.get("compute_capability", (0, 0)))
    return None


def detect_bf16(mode: str = "auto") -> Bf16Support:
    """The worker's answer, once at start.  ``mode``: the operator's ``DREAMQ_BF16``:
    ``auto`` detects, ``off`` never runs bf16, ``on`` trusts the operator."""
    gpu = _first_gpu()
    found = gpu_bf16(*gpu) if gpu else cpu_bf16()
    if mode == "off":
        return Bf16Support(False, found.device, "bf16 is turned off on this worker (DREAMQ_BF16=off)")
    if mode == "on":
        return Bf16Support(True, found.device, "bf16 is turned on on this worker (DREAMQ_BF16=on)")
    return found


def resolve_precision(requested: str, bf16: Bf16Support) -> tuple[str, str | None]:
    """The precision a job really runs in here, and a warning for the job if that is not what it asked."""
    if requested == "auto":
        return ("bf16" if bf16.native else "fp32"), None
    if requested == "bf16" and not bf16.native:
        return "fp32", f"bf16 requested; {bf16.reason}, so it ran fp32 (bf16 would have been slower here)"
    return requested, None
