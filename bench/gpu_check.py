"""The engine on the JAX backend on whatever device JAX sees (GPU when there is one).

    KERAS_BACKEND=jax python -m bench.gpu_check [--size 640x960] [--iterations 20] [--e2e]

Prints what the worker detects (native bf16 or not), then per-step and
per-job seconds for three modes: fp32 as XLA runs it by default (on NVIDIA
from Ampere on, float32 convolutions use TF32 tensor cores), fp32 at
"highest" matmul precision (true float32), and bf16; the device memory peak,
achieved TFLOP/s, and how far one step of each mode is from true float32.
With --e2e, jobs through the queue (embedded Redis, a real worker process),
one per precision, showing what the worker ran and warned.
FLOP per step at the seed's three octave shapes of a 640x960 image were
measured on the CPU: 33.8, 69.5 and 141.0 GFLOP; other sizes scale by area.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

GFLOP_640x960 = (33.8, 69.5, 141.0)
# name -> (dreamq precision, JAX matmul precision).  "fp32" is what a worker runs:
# XLA's default, which on NVIDIA Ampere and later is TF32 for float32 convolutions.
MODES = {"fp32": ("fp32", None), "fp32-highest": ("fp32", "highest"), "bf16": ("bf16", None)}


def one_step(dreamer, image, layers, precision):
    """Loss, gradient and the image after one seed step, as float64 numpy."""
    from keras import ops

    step, gradient = dreamer.gradient_fns(layers, precision)
    x = ops.convert_to_tensor(dreamer.model.preprocess(image.astype(np.float32)[None]))
    coeffs = ops.convert_to_tensor(np.array([1.0, 1.5, 2.0, 2.5], np.float32))
    loss, grads = gradient(x, coeffs)
    _, stepped = step(x, coeffs, ops.convert_to_tensor(np.float32(0.01)))
    return float(loss), np.asarray(grads, np.float64), dreamer.model.deprocess(np.asarray(stepped))


def engine_figures(args, device, image, gflop, model) -> None:
    import jax

    from shared.params import parse_params
    from shared.settings import get_settings
    from worker.dream import Dreamer

    layers = ("mixed4", "mixed5", "mixed6", "mixed7")
    jobs, one = {}, {}
    for name in args.modes:
        precision, matmul = MODES[name]
        # A fresh Dreamer per mode: the matmul precision is read when the step is traced.
        jax.config.update("jax_default_matmul_precision", matmul)
        dreamer = Dreamer(model, shape_buckets=get_settings().shape_buckets)  # as a worker would
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
        jobs[name] = job
        print(f"{name}: job {job:.2f}s (first, compiling: {first:.2f}s), median step per octave "
              f"{', '.join(f'{s * 1e3:.1f}' for s in per_octave)} ms, {tflops:.2f} TFLOP/s"
              + (f", device memory peak {mem / 2**30:.2f} GiB" if mem else ""))
        one[name] = one_step(dreamer, image, layers, precision)
    jax.config.update("jax_default_matmul_precision", None)

    base = "fp32-highest" if "fp32-highest" in one else args.modes[0]
    ref_loss, ref_grads, ref_img = one[base]
    print(f"one step, against {base}: loss rel diff / gradient rel L2 diff / image max level diff")
    for name in args.modes:
        loss, grads, stepped = one[name]
        print(f"  {name}: {abs(loss - ref_loss) / abs(ref_loss):.2e} / "
              f"{np.linalg.norm(grads - ref_grads) / np.linalg.norm(ref_grads):.2e} / "
              f"{int(np.abs(stepped.astype(int) - ref_img.astype(int)).max())}")
    print(f"speed-up per job against {base}: " + ", ".join(f"{n} {jobs[base] / jobs[n]:.2f}x" for n in args.modes))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="640x960")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--e2e", action="store_true", help="also jobs through the queue")
    ap.add_argument("--e2e-only", action="store_true", help="only the jobs through the queue")
    ap.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES),
                    help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--precisions", type=lambda s: s.split(","), default=["fp32", "bf16", "auto"],
                    help="of the jobs through the queue")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))

    import jax
    import keras
    from PIL import Image

    from shared.models import octave_shapes
    from worker.device import detect_bf16
    from worker.models import load_model

    device = jax.devices()[0]
    print(f"backend {keras.backend.backend()}, device {device.device_kind} ({device.platform}), jax {jax.__version__}, "
          f"keras {keras.__version__}")
    bf16 = detect_bf16()
    print(f"bf16 detection: native={bf16.native}; {bf16.device}; {bf16.reason}")
    sample = os.path.join(os.path.dirname(__file__), "..", "dreamq", "samples", "astronaut.jpg")
    image = np.asarray(Image.open(sample).convert("RGB").resize((w, h), Image.LANCZOS))
    shapes = octave_shapes(h, w, 3, 1.4)
    gflop = [g * (sh * sw) / (640 * 960 / 1.4 ** (2 * (2 - i))) for i, (g, (sh, sw)) in enumerate(zip(GFLOP_640x960, shapes))]
    if not args.e2e_only:
        engine_figures(args, device, image, gflop, load_model("inception_v3", "random"))

    if args.e2e or args.e2e_only:
        import tempfile
        from pathlib import Path

        from bench.cluster import Service
        from dreamq.redis_server import EmbeddedRedis

        tmp = Path(tempfile.mkdtemp())
        server = EmbeddedRedis(tmp / "redis").start()
        svc = Service(server.url, tmp, {"DREAMQ_MODELS": "inception_v3", "DREAMQ_INCEPTION_V3_WEIGHTS": "random",
                                        "KERAS_BACKEND": keras.backend.backend()})
        try:
            proc = svc.start_worker(DREAMQ_INTRA_OP_THREADS="0", DREAMQ_INTER_OP_THREADS="0", JAX_PLATFORMS="")
            print(f"worker heartbeat bf16: {svc.worker_info(proc.pid).get('bf16')}")
            for precision in args.precisions:
                params = {"iterations": args.iterations, "max_loss": "none", "precision": precision}
                svc.wait(svc.submit(image, **params), timeout=900)  # compiles the shapes
                t0 = time.perf_counter()
                job = svc.wait(svc.submit(image, **params), timeout=900)
                print(f"end to end through the queue (warm worker), precision={precision}: "
                      f"{time.perf_counter() - t0:.2f}s, {job.status}, metrics {job.metrics}, warnings {job.warnings}")
        finally:
            svc.stop()
            server.stop()


if __name__ == "__main__":
    main()
