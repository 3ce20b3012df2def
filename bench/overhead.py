"""What a worker adds around the dream: run_s against the engine's own time, part by part.

    .venv/bin/python -m bench.overhead [--size 640x960] [--repeat 3] [--max-loss 15|none]

One warm worker (InceptionV3, fixed-seed random weights: speed does not depend on their values)
runs the seed's exact job (fp32, the Keras example's parameters) through Redis; its record's
``metrics.timings`` says where ``run_s`` went.  Baseline in the same run: the engine alone, in this
process (``Dreamer.dream`` with no callbacks, the same image and parameters), after a warm-up.
Prints the medians, ``run_s - steps_s`` (issue 23's CPU goal: at most 0.25 s at 640x960) and
``run_s / engine`` (its GPU goal: at most 1.1).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import print_header

PARTS = ("load_s", "steps_s", "preview_s", "encode_s", "store_s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="640x960", help="HxW")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-loss", default="15", help="the seed's 15, or none: every step runs")
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    max_loss = None if args.max_loss == "none" else float(args.max_loss)
    print_header()
    from PIL import Image

    from bench.cluster import SAMPLE, Service
    from dreamq.redis_server import EmbeddedRedis
    from shared.params import DreamParams
    from worker.dream import Dreamer
    from worker.models import load_model

    tmp = Path(tempfile.mkdtemp())
    weights = tmp / "inception_v3_random.weights.h5"
    model = load_model("inception_v3", "random")
    model.network.save_weights(str(weights))
    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((w, h), Image.LANCZOS))
    params = {"model": "inception_v3", "max_loss": max_loss}

    engine = Dreamer(model)
    dream_params = DreamParams.model_validate(params)
    engine.dream(image, dream_params)  # compile every octave's shape once
    alone = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        engine.dream(image, dream_params)
        alone.append(time.perf_counter() - t0)
    del engine

    server = EmbeddedRedis(tmp / "redis").start()
    svc = Service(server.url, tmp, {"DREAMQ_MODELS": "inception_v3", "DREAMQ_INCEPTION_V3_WEIGHTS": str(weights)})
    jobs, e2e = [], []
    try:
        svc.start_worker(DREAMQ_INTRA_OP_THREADS="0", DREAMQ_INTER_OP_THREADS="0")
        svc.wait(svc.submit(image, **params), timeout=1800)  # this size's shapes, compiled in the worker
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            job = svc.wait(svc.submit(image, **params), timeout=1800)
            e2e.append(time.perf_counter() - t0)
            assert job.status == "succeeded", job.error
            jobs.append(job)
    finally:
        svc.stop()
        server.stop()

    med = statistics.median
    run_s = med(j.metrics["run_s"] for j in jobs)
    parts = {p: med(j.metrics["timings"][p] for j in jobs) for p in PARTS}
    engine_s = med(alone)
    print(f"\n{args.size}, inception_v3 fp32, the seed's parameters (max_loss {args.max_loss}), "
          f"median of {args.repeat}")
    print(f"engine alone (baseline, this process)   {engine_s:8.3f} s")
    print(f"worker run_s                            {run_s:8.3f} s   run_s / engine {run_s / engine_s:.3f}")
    for p in PARTS:
        print(f"  timings.{p:<12}                  {parts[p]:8.3f} s")
    print(f"  not in a part (queue writes, checks)  {run_s - sum(parts.values()):8.3f} s")
    print(f"run_s - steps_s                         {run_s - parts['steps_s']:8.3f} s   (goal: at most 0.25 s)")
    print(f"submit -> succeeded, seen by the client {med(e2e):8.3f} s   / engine {med(e2e) / engine_s:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
