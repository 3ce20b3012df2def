"""The result cache: what a cache hit costs in store bytes and in submit latency, against a miss.

    .venv/bin/python -m bench.cache [--rounds 50] [--side 256] [--frames 24]

The web app (its Flask test client: the request path without a network) on an embedded Redis,
a worker's heartbeat written as workers write it (with a weights fingerprint), and one zoom job
(``--frames`` frames) finished as a worker finishes it: its frames, preview and video stored.
Then:

* ``--rounds`` identical submissions (hits), the store folder's size (bytes of every file under
  it) measured before and after: the store bytes each hit adds, next to the upload's size.
* alternately, an identical submission (a hit: a new job born succeeded) and one with another
  seed (a miss: stored and queued); median and p95 of each, and the ratio.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.machine import print_header


def tree_bytes(root: Path) -> int:
    """Bytes of every file under ``root`` (what ``du --apparent-size -b`` counts for files)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--frames", type=int, default=24)
    args = ap.parse_args()
    print_header()

    from bench.cluster import SAMPLE
    from shared import keys
    from shared.images import encode_png
    from shared.kinds import get_kind
    from dreamq.redis_server import EmbeddedRedis
    from shared.settings import Settings
    from web import create_app

    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    server = EmbeddedRedis(tmp / "redis").start()
    try:
        settings = Settings(_env_file=None, redis_url=server.url, data_dir=tmp, max_queued=100_000)
        app = create_app(settings)
        r = app.extensions["dreamq"].redis
        r.set(keys.worker("bench:1"), json.dumps({
            "id": "bench:1", "host": "bench", "pid": 1, "device": "CPU", "backend": "tensorflow",
            "models": {"vgg16_hed": "ready"}, "job": None, "bf16": {"native": False}, "ready": True,
            "started_at": time.time(), "fingerprints": {"vgg16_hed": "f" * 64}}), ex=3600)
        r.sadd(keys.WORKERS, "bench:1")
        photo = np.asarray(Image.open(SAMPLE).convert("RGB").resize((args.side, args.side)))
        png = encode_png(photo)
        client = app.test_client()
        fields = {"kind": "zoom", "model": "vgg16_hed", "frames": str(args.frames), "octaves": "2",
                  "iterations": "4", "format": "mp4"}

        def post(**more):
            t = time.perf_counter()
            resp = client.post("/api/v1/jobs", data={"image": (io.BytesIO(png), "p.png"), **fields, **more},
                               content_type="multipart/form-data")
            return time.perf_counter() - t, resp.get_json()

        # The source: a zoom finished as a worker finishes one (frames first, then the video).
        _, first = post()
        state, store = app.extensions["dreamq"].state, app.extensions["dreamq"].store
        kind = get_kind("zoom")
        state.start(first["id"], state.get(first["id"]).dispatch, "bench:1")
        rng = np.random.default_rng(0)
        for n in range(args.frames):  # noisy frames: PNG does not shrink them below a dream's size
            frame = np.clip(photo.astype(np.int16) + rng.integers(-20, 20, photo.shape), 0, 255).astype(np.uint8)
            store.put(first["id"], kind.file("frame", n), encode_png(frame))
        store.put(first["id"], kind.file("preview"), png)
        video = rng.bytes(len(png) * args.frames // 4)  # a stand-in for the mp4: its size, not its codec
        url = store.put(first["id"], kind.result_name(first["params"]), video)
        state.finish(first["id"], "bench:1", "succeeded", result_url=url)
        source_bytes = tree_bytes(Path(store.root) / first["id"])

        # Store bytes per hit.
        before = tree_bytes(Path(store.root))
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            _, job = post()
            assert job["metrics"].get("cached") is True, job
        spent = time.perf_counter() - t0
        after = tree_bytes(Path(store.root))
        per_hit = (after - before) / args.rounds

        # Latency: hits against misses, alternately.
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
        print(f"zoom of {args.frames} frames of {args.side}x{args.side}: upload {len(png):,} bytes (PNG), "
              f"source job's store folder {source_bytes:,} bytes")
        print(f"  store bytes per cache hit ({args.rounds} hits in {spent:.2f} s): {per_hit:,.0f} "
              f"({per_hit / len(png):.2f} x the upload; store {before:,} -> {after:,} bytes)")
        print(f"{args.rounds} rounds each:")
        print(f"  cached answer (202, born succeeded)        : p50 {h50:.1f} ms, p95 {h95:.1f} ms")
        print(f"  normal submission (stored and queued):        p50 {m50:.1f} ms, p95 {m95:.1f} ms")
        print(f"  ratio cached / normal (p50): {h50 / m50:.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
