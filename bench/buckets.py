"""Shape buckets and the persistent compile cache on the JAX backend: the first job of a new size.

    .venv/bin/python -m bench.buckets [--sizes 480x640,470x630] [--bucket 64] [--model inception_v3]

Each phase runs in a fresh process (KERAS_BACKEND=jax, as a worker) with the seed's parameters,
every step (max_loss off), fixed-seed random weights for inception_v3:
  unbucketed   size A, then size B (a new size: its shapes compile), then B again
  bucketed     the same, DREAMQ_SHAPE_BUCKETS' step (B falls in A's buckets: nothing to compile)
  restart      a new process on the bucketed phase's cache directory: size A again
Prints each job's seconds, the goal's ratio (first job of B / second job of B: at most 1.25 with
buckets), the restart's first job against the bucketed phase's first and second, and how far the
bucketed result is from the unbucketed one (levels of 255).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.machine import print_header

PHASE = r"""
import json, os, sys, time
os.environ["KERAS_BACKEND"] = "jax"
import jax
cache, bucket, model, weights, out_dir, *sizes = sys.argv[1:]
jax.config.update("jax_compilation_cache_dir", cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
import numpy as np
from PIL import Image
from bench.cluster import SAMPLE
from shared.params import DreamParams
from worker.dream import Dreamer
from worker.models import load_model
dreamer = Dreamer(load_model(model, weights or None), shape_buckets=int(bucket))
dreamer.warm_up()  # as a worker does before it reports ready (one 128x128 shape)
params = DreamParams.model_validate({"model": model, "max_loss": None})
for i, size in enumerate(sizes):
    h, w = (int(v) for v in size.split("x"))
    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((w, h), Image.LANCZOS))
    t0 = time.perf_counter()
    out = dreamer.dream(image, params)
    print(json.dumps({"size": size, "s": time.perf_counter() - t0}), flush=True)
    np.save(os.path.join(out_dir, f"{i}.npy"), out)
"""


def phase(cache: Path, bucket: int, model: str, weights: str, out: Path, sizes: list[str]) -> list[float]:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", PHASE, str(cache), str(bucket), model, weights, str(out), *sizes],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return [json.loads(line)["s"] for line in proc.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="480x640,470x630", help="A,B: B inside A's buckets")
    ap.add_argument("--bucket", type=int, default=64)
    ap.add_argument("--model", default="inception_v3")
    args = ap.parse_args(argv)
    a, b = args.sizes.split(",")
    print_header()
    import numpy as np

    tmp = Path(tempfile.mkdtemp())
    weights = ""
    if args.model == "inception_v3":
        from worker.models import load_model

        weights = str(tmp / "inception_v3_random.weights.h5")
        load_model("inception_v3", "random").network.save_weights(weights)
    plain = phase(tmp / "cache-plain", 0, args.model, weights, tmp / "plain", [a, b, b])
    bucketed = phase(tmp / "cache-buckets", args.bucket, args.model, weights, tmp / "buckets", [a, b, b])
    restart = phase(tmp / "cache-buckets", args.bucket, args.model, weights, tmp / "restart", [a])
    diff = np.abs(np.load(tmp / "buckets" / "1.npy").astype(int) - np.load(tmp / "plain" / "1.npy").astype(int))

    print(f"\n{args.model}, the seed's parameters, every step; A {a}, B {b}; JAX on this CPU; seconds a job")
    print(f"{'':12} {'A first':>9} {'B first':>9} {'B second':>9} {'B first/second':>15}")
    for name, t in (("unbucketed", plain), (f"buckets {args.bucket}", bucketed)):
        print(f"{name:12} {t[0]:9.2f} {t[1]:9.2f} {t[2]:9.2f} {t[1] / t[2]:15.2f}")
    print(f"restart, buckets {args.bucket}, the same cache directory: A first {restart[0]:.2f} s "
          f"(before the restart: first {bucketed[0]:.2f} s, a warm repeat about {bucketed[2]:.2f} s)")
    print(f"bucketed vs unbucketed result of B: mean {diff.mean():.3f} levels, max {diff.max()}, "
          f"{(diff > 2).mean() * 100:.2f}% of values more than 2 levels apart")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
