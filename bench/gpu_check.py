"""The engine on the JAX backend on whatever device JAX sees (GPU when there is one).

    KERAS_BACKEND=jax python -m bench.gpu_check [--size 640x960] [--iterations 20] [--e2e]

Prints per-step and per-job seconds for fp32 and bf16, the device memory
peak, achieved TFLOP/s, and (with --e2e) one job through the queue with the
embedded Redis.  FLOP per step at the seed's three octave shapes of a
640x960 image were measured on the CPU: 33.8, 69.5 and 141.0 GFLOP; other
sizes scale them by area.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

GFLOP_640x960 = (33.8, 69.5, 141.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="640x960")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--e2e", action="store_true", help="also one job through the queue")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))

    import jax
    import keras
    from PIL import Image

    from shared.models import octave_shapes
    from shared.params import parse_params
    from worker.dream import Dreamer
    from worker.models import load_model

    device = jax.devices()[0]
    print(f"backend {keras.backend.backend()}, device {device.device_kind} ({device.platform}), jax {jax.__version__}")
    sample = os.path.join(os.path.dirname(__file__), "..", "dreamq", "samples", "astronaut.jpg")
    image = np.asarray(Image.open(sample).convert("RGB").resize((w, h), Image.LANCZOS))
    shapes = octave_shapes(h, w, 3, 1.4)
    gflop = [g * (sh * sw) / (640 * 960 / 1.4 ** (2 * (2 - i))) for i, (g, (sh, sw)) in enumerate(zip(GFLOP_640x960, shapes))]
    dreamer = Dreamer(load_model("inception_v3", "random"))

    for precision in ("fp32", "bf16"):
        params = parse_params({"iterations": args.iterations, "max_loss": "none", "precision": precision})
        t0 = time.perf_counter()
        dreamer.dream(image, params)  # first job compiles for these shapes
        first = time.perf_counter() - t0
        stamps: list[float] = []
        t0 = time.perf_counter()
        dreamer.dream(image, params, on_progress=lambda p: stamps.append(time.perf_counter()))
        job = time.perf_counter() - t0
        steps = np.diff([t0, *stamps])
        per_octave = [statistics.median(steps[i * args.iterations + 1:(i + 1) * args.iterations]) for i in range(3)]
        tflops = sum(g * args.iterations for g in gflop) / 1e3 / job
        mem = (device.memory_stats() or {}).get("peak_bytes_in_use") if hasattr(device, "memory_stats") else None
        print(f"{precision}: job {job:.2f}s (first, compiling: {first:.2f}s), median step per octave "
              f"{', '.join(f'{s * 1e3:.1f}' for s in per_octave)} ms, {tflops:.2f} TFLOP/s"
              + (f", device memory peak {mem / 2**30:.2f} GiB" if mem else ""))

    if args.e2e:
        import tempfile
        from pathlib import Path

        from shared.redis_server import EmbeddedRedis
        from tests.conftest import Service

        tmp = Path(tempfile.mkdtemp())
        server = EmbeddedRedis(tmp / "redis").start()
        svc = Service(server.url, tmp, {"DREAMQ_MODELS": "inception_v3", "DREAMQ_INCEPTION_V3_WEIGHTS": "random",
                                        "KERAS_BACKEND": keras.backend.backend()})
        try:
            svc.start_worker(DREAMQ_INTRA_OP_THREADS="0", DREAMQ_INTER_OP_THREADS="0", JAX_PLATFORMS="")
            params = {"iterations": args.iterations, "max_loss": "none"}
            svc.wait(svc.submit(image, **params), timeout=900)  # compiles the shapes
            t0 = time.perf_counter()
            job = svc.wait(svc.submit(image, **params), timeout=900)
            print(f"end to end through the queue (warm worker): {time.perf_counter() - t0:.2f}s, {job.status}, "
                  f"metrics {job.metrics}")
        finally:
            svc.stop()
            server.stop()


if __name__ == "__main__":
    main()
