"""Zoom videos: a real zoom job's frame rate and per-frame overhead, and the encoder's memory.

    .venv/bin/python -m bench.zoom job --model inception_v3 --frames 4      # 640x480, default zoom params
    .venv/bin/python -m bench.zoom encode --format mp4 --frames 600         # streaming encode, peak RSS

``job`` runs a zoom job through a real worker (embedded Redis); its figures come from the job's
own metrics: dream time per frame, and what each frame costs beyond the dream (PNG, store,
record, preview) as a ratio of it.  ``encode`` streams synthetic 640x480 frames (a zoomed and
turned photo, a little more each frame) into the encoder, in a fresh process, and reports its
peak RSS against the RSS before encoding (the baseline) and the raw size of the frames.
inception_v3 runs with its fixed-seed random weights: the same compute as ImageNet's.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.machine import print_header


def photo(w: int = 640, h: int = 480) -> np.ndarray:
    from bench.cluster import SAMPLE

    return np.asarray(Image.open(SAMPLE).convert("RGB").resize((w, h), Image.LANCZOS))


def job(model: str, frames: int, fmt: str) -> None:
    from bench.cluster import Service
    from shared.images import encode_png
    from dreamq.redis_server import EmbeddedRedis

    tmp = Path(tempfile.mkdtemp(prefix="bench-zoom-"))
    server = EmbeddedRedis(tmp / "redis").start()
    svc = Service(server.url, tmp, {"DREAMQ_MODELS": model, "DREAMQ_INCEPTION_V3_WEIGHTS": "random",
                                    "DREAMQ_INTRA_OP_THREADS": "0", "DREAMQ_INTER_OP_THREADS": "0"})
    try:
        svc.start_worker()
        job_id = svc.state.submit({"model": model, "frames": frames, "format": fmt}, encode_png(photo()),
                                  kind="zoom").id
        done = svc.wait(job_id, timeout=6000)
        m, n = done.metrics, done.metrics.get("frames_computed") or frames
        assert done.status == "succeeded", done.error
        print(f"{model} 640x480, {n} frames ({fmt}): {n / m['run_s']:.3f} frames/s, {m['run_s'] / n:.2f} s/frame; "
              f"dream {m['dream_s'] / n:.2f} s/frame; beyond the dream per frame: PNG+store+record+preview "
              f"{m['store_s'] / n * 1000:.0f} ms ({m['store_s'] / m['dream_s']:.1%} of the dream), "
              f"video encode+store {m['encode_s'] / n * 1000:.0f} ms ({m['result_bytes']} bytes)")
    finally:
        svc.stop()
        server.stop()


def encode(fmt: str, frames: int) -> None:
    import av  # noqa: F401 — loaded before the baseline is read

    from worker.kinds.zoom import zoom_frame
    from worker.video import encode as encode_video

    base = photo()

    def stream():
        for i in range(frames):
            yield zoom_frame(base, 1 + 0.0004 * i, 0.05 * i)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    path = Path(tempfile.mkdtemp(prefix="bench-zoom-")) / f"out.{fmt}"
    t = time.perf_counter()
    encode_video(stream(), 12, fmt, str(path))
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    raw = frames * base.nbytes / 2**20
    print(f"{fmt}: {frames} frames 640x480 in {dt:.1f} s ({dt / frames * 1000:.1f} ms/frame, making the frame "
          f"included), {os.path.getsize(path) / 1e6:.1f} MB; peak RSS {peak:.0f} MiB, {peak - before:.0f} MiB over "
          f"the {before:.0f} MiB before encoding; the raw frames: {raw:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    j = sub.add_parser("job")
    j.add_argument("--model", default="inception_v3")
    j.add_argument("--frames", type=int, default=4)
    j.add_argument("--format", default="mp4")
    e = sub.add_parser("encode")
    e.add_argument("--format", default="mp4")
    e.add_argument("--frames", type=int, default=600)
    args = ap.parse_args()
    print_header()
    if args.what == "job":
        job(args.model, args.frames, args.format)
    else:
        encode(args.format, args.frames)


if __name__ == "__main__":
    main()
