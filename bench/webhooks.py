"""Webhook delivery latency: from a job's end to its `completed` POST at the receiver, in one run
against a direct signed POST to the same receiver (the baseline: the HTTP part alone).

    .venv/bin/python -m bench.webhooks [--jobs 200] [--burst 20]

An embedded Redis, a real `dreamq webhooks` process, and a receiver on 127.0.0.1.  Each job is
submitted through the web app (its test client) with a webhook, then started and finished as a
worker does; the latency is from the job's ``finished_at`` (the finish) to the moment the
receiver has read the body.  ``--burst``: that many jobs finish at once, then the next burst, so
the delivery threads (DREAMQ_WEBHOOK_CONCURRENCY) are busy together.  The baseline POSTs the same
kind of signed body straight from this process with shared.delivery.post (resolve, check,
connect, send, read the answer), with no queue.
"""
from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.machine import print_header


def summary(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs) * 1000, xs[int(0.95 * (len(xs) - 1))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--burst", type=int, default=20)
    args = ap.parse_args()
    print_header()

    from bench.cluster import SAMPLE, Service
    from bench.receiver import Receiver
    from shared.delivery import post
    from shared.images import encode_png
    from shared.redis_server import EmbeddedRedis
    from shared.webhooks import new_secret, signed_headers
    from web import create_app

    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    server = EmbeddedRedis(tmp / "redis").start()
    secret = new_secret()
    env = {"DREAMQ_WEBHOOK_SECRET": secret, "DREAMQ_WEBHOOK_ALLOW_PRIVATE": "1", "DREAMQ_MAX_QUEUED": "100000"}
    service = Service(server.url, tmp, env)
    try:
        with Receiver() as rx:
            service.start_webhooks()
            app = create_app(service.settings)
            client = app.test_client()
            png = encode_png(np.asarray(Image.open(SAMPLE).convert("RGB").resize((128, 128))))

            def submit(i: int) -> str:
                r = client.post("/api/v1/jobs", content_type="multipart/form-data",
                                data={"image": (io.BytesIO(png), "p.png"), "webhook": rx.url(f"/job/{i}"),
                                      "seed": str(i), "cache": "false"})
                assert r.status_code == 202, r.get_json()
                return r.get_json()["id"]

            latencies: list[float] = []
            for start in range(0, args.jobs, args.burst):
                batch = [submit(i) for i in range(start, min(start + args.burst, args.jobs))]
                ended = {}
                for i, job_id in zip(range(start, args.jobs), batch):
                    state = service.state
                    state.start(job_id, state.get(job_id).dispatch, "bench:1")
                    state.finish(job_id, "bench:1", "succeeded")
                    ended[i] = state.get(job_id).finished_at  # the moment the record said succeeded
                got = rx.wait(start + len(batch), timeout=60)
                for received in got:
                    i = int(received.path.rsplit("/", 1)[1])
                    if i in ended:
                        latencies.append(received.at - ended[i])

            baseline: list[float] = []
            body = client.get(f"/api/v1/jobs/{batch[-1]}").get_data(as_text=True)
            for n in range(args.jobs):
                t = time.time()
                outcome = post(rx.url(f"/direct/{n}"), body, signed_headers(secret, f"msg_d{n}", body),
                               service.settings)
                assert outcome.ok, outcome.error
                baseline.append(rx.requests_to(f"/direct/{n}")[0].at - t)

        (q50, q95), (d50, d95) = summary(latencies), summary(baseline)
        print(f"{args.jobs} jobs, finishing {args.burst} at a time; one delivery process, "
              f"{service.settings.webhook_concurrency} threads:")
        print(f"  job finished -> `completed` read by the receiver: p50 {q50:.1f} ms, p95 {q95:.1f} ms")
        print(f"  baseline, a direct signed POST (no queue):       p50 {d50:.1f} ms, p95 {d95:.1f} ms")
        print(f"  ratio queued / direct (p50): {q50 / d50:.1f}")
    finally:
        service.stop()
        server.stop()


if __name__ == "__main__":
    main()
