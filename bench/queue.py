"""Queue overhead with an idle, warm worker: what the queue adds around a dream.

    .venv/bin/python -m bench.queue [--jobs 50]

Starts an embedded Redis and one real worker process, submits tiny jobs one
at a time and measures, from the client:
  submit -> running   client submit until the record says running (polled every 1 ms)
  finished -> visible time from `running` to the client seeing `succeeded`, less the
                      dream itself (input fetch, PNG encode, store write, record update, poll)
Baseline in the same run: a bare Redis round trip (PING) from the same client.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import print_header
from shared import keys


def pct(values, q):
    return float(np.percentile(values, q))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50)
    args = ap.parse_args()
    print_header()

    from PIL import Image

    from bench.cluster import SAMPLE, Service
    from dreamq.redis_server import EmbeddedRedis

    tmp = Path(tempfile.mkdtemp())
    server = EmbeddedRedis(tmp / "redis").start()
    svc = Service(server.url, tmp, {"DREAMQ_MODELS": "vgg16_hed"})
    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((64, 64)))
    params = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": 1, "iterations": 1}
    try:
        svc.start_worker()
        svc.wait(svc.submit(image, **params))  # warm the path once
        pings = []
        for _ in range(200):
            t0 = time.perf_counter()
            svc.redis.ping()
            pings.append(time.perf_counter() - t0)
        to_running, to_visible = [], []
        for _ in range(args.jobs):
            t0 = time.time()
            job_id = svc.submit(image, **params)
            while svc.redis.hget(keys.job(job_id), "status") == b"queued":
                time.sleep(0.001)
            to_running.append(time.time() - t0)
            while svc.redis.hget(keys.job(job_id), "status") not in (b"succeeded", b"failed"):
                time.sleep(0.001)
            seen = time.time()
            job = svc.state.get(job_id)
            assert job.status == "succeeded", job.error
            # Everything after `running` that is not the dream itself: input fetch and
            # decode, PNG encode, store write, record update, the client's poll.
            to_visible.append((seen - t0) - to_running[-1] - job.metrics["dream_s"])
        ms = lambda v: f"{statistics.median(v) * 1e3:7.1f} ms median, {pct(v, 95) * 1e3:7.1f} ms p95"  # noqa: E731
        print(f"jobs: {args.jobs}, one warm worker (vgg16_hed, 64x64, 1 step), embedded Redis")
        print(f"baseline Redis PING          {ms(pings)}")
        print(f"submit -> running            {ms(to_running)}")
        print(f"dream finished -> visible    {ms(to_visible)}")
    finally:
        svc.stop()
        server.stop()


if __name__ == "__main__":
    main()
