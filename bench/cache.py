"""Submit latency: a cached answer against a normal submission that queues, in one run.

    .venv/bin/python -m bench.cache [--rounds 50] [--side 512]

The web app (its Flask test client: the request path without a network) on an embedded Redis,
a worker's heartbeat written as workers write it (with a weights fingerprint), and one job
finished as a worker finishes it.  Then, alternately: an identical submission (answered from the
cache: a new job born succeeded, its files copied) and a submission with another seed (a miss:
stored and queued).  Prints median and p95 of each, and the ratio.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.machine import print_header


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--side", type=int, default=512)
    args = ap.parse_args()
    print_header()

    from bench.cluster import SAMPLE
    from shared import keys
    from shared.images import encode_png
    from shared.redis_server import EmbeddedRedis
    from shared.settings import Settings
    from web import create_app

    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    server = EmbeddedRedis(tmp / "redis").start()
    try:
        app = create_app(Settings(_env_file=None, redis_url=server.url, data_dir=tmp, max_queued=100_000))
        r = app.extensions["dreamq"].redis
        r.set(keys.worker("bench:1"), json.dumps({
            "id": "bench:1", "host": "bench", "pid": 1, "device": "CPU", "backend": "tensorflow",
            "models": {"vgg16_hed": "ready"}, "job": None, "bf16": {"native": False}, "ready": True,
            "started_at": time.time(), "fingerprints": {"vgg16_hed": "f" * 64}}), ex=3600)
        r.sadd(keys.WORKERS, "bench:1")
        photo = np.asarray(Image.open(SAMPLE).convert("RGB").resize((args.side, args.side)))
        png = encode_png(photo)
        client = app.test_client()
        fields = {"model": "vgg16_hed", "octaves": "2", "iterations": "4"}

        def post(**more):
            t = time.perf_counter()
            resp = client.post("/api/v1/jobs", data={"image": (io.BytesIO(png), "p.png"), **fields, **more},
                               content_type="multipart/form-data")
            return time.perf_counter() - t, resp.get_json()

        _, first = post()
        state, store = app.extensions["dreamq"].state, app.extensions["dreamq"].store
        state.start(first["id"], state.get(first["id"]).dispatch, "bench:1")
        url = store.put(first["id"], "result.png", png)
        state.finish(first["id"], "bench:1", "succeeded", result_url=url)

        hits, misses = [], []
        for i in range(args.rounds):
            dt, job = post()
            assert job["metrics"].get("cached") is True, job
            hits.append(dt)
            dt, job = post(seed=str(i + 1))
            assert job["status"] == "queued", job
            misses.append(dt)

        def summary(xs):
            xs = sorted(xs)
            return statistics.median(xs) * 1000, xs[int(0.95 * (len(xs) - 1))] * 1000

        (h50, h95), (m50, m95) = summary(hits), summary(misses)
        print(f"{args.side}x{args.side} PNG upload, {args.rounds} rounds each:")
        print(f"  cached answer (202, born succeeded)        : p50 {h50:.1f} ms, p95 {h95:.1f} ms")
        print(f"  normal submission (stored and queued):        p50 {m50:.1f} ms, p95 {m95:.1f} ms")
        print(f"  ratio cached / normal (p50): {h50 / m50:.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
