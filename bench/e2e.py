"""End to end through the queue vs the Keras example as a script, same image, same run.

    .venv/bin/python -m bench.e2e [--size 640x960] [--repeat 1]

Seed: `python -m tests.seed_reference` in a fresh process (imports, model,
retracing, 60 steps, PNG), wall clock.  dreamq: submit to a warm worker
through Redis until the result PNG is in the store, for fp32 (exact) and
bf16 (fast).  Random InceptionV3 weights (ImageNet's cannot be fetched here);
speed does not depend on the weights' values.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="640x960")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))

    from PIL import Image

    from shared.redis_server import EmbeddedRedis
    from shared.store import RESULT
    from tests.conftest import ROOT, SAMPLE, Service
    from worker.models import load_model

    tmp = Path(tempfile.mkdtemp())
    weights = tmp / "inception_v3_random.weights.h5"
    load_model("inception_v3", "random").network.save_weights(str(weights))
    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((w, h), Image.LANCZOS))
    src = tmp / "input.png"
    Image.fromarray(image).save(src)

    server = EmbeddedRedis(tmp / "redis").start()
    svc = Service(server.url, tmp, {"DREAMQ_MODELS": "inception_v3", "DREAMQ_INCEPTION_V3_WEIGHTS": str(weights)})
    results: dict[str, list[float]] = {"seed script": [], "dreamq fp32": [], "dreamq bf16": []}
    try:
        svc.start_worker(DREAMQ_INTRA_OP_THREADS="0", DREAMQ_INTER_OP_THREADS="0")
        # Compile bf16 once, as a worker that serves bf16 jobs has.
        svc.wait(svc.submit(image[:300, :300], precision="bf16", iterations=1), timeout=600)
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tests.seed_reference", str(src), str(weights), str(tmp / "seed.png")],
                           cwd=ROOT, check=True, capture_output=True)
            results["seed script"].append(time.perf_counter() - t0)
            for precision in ("fp32", "bf16"):
                t0 = time.perf_counter()
                job = svc.wait(svc.submit(image, precision=precision), timeout=900)
                assert job.status == "succeeded", job.error
                assert svc.store.get(job.id, RESULT) is not None
                results[f"dreamq {precision}"].append(time.perf_counter() - t0)
    finally:
        svc.stop()
        server.stop()
    seed = statistics.median(results["seed script"])
    print(f"{args.size}, seed parameters, {args.repeat} run(s), median seconds per job")
    print(f"{'':14} | {'s/job':>7} | {'vs seed':>7}")
    for name, values in results.items():
        m = statistics.median(values)
        print(f"{name:14} | {m:7.2f} | {m / seed:7.2f}")


if __name__ == "__main__":
    main()
