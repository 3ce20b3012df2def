"""Webhook delivery latency: from a job's end to its `completed` POST at the receiver, in one run
against a direct signed POST to the same receiver (the baseline: the HTTP part alone).

    .venv/bin/python -m bench.webhooks [--jobs 200] [--burst 20]

An embedded Redis, a real `dreamq webhooks` process, and a receiver on 127.0.0.1.  Each job is
submitted through the web app (its test client) with a webhook, then started and finished as a
worker does; the latency is from the job's ``finished_at`` (the finish) to the moment the
receiver has read the body.  ``--burst``: that many jobs finish at once, then the next burst, so
the delivery threads (DREAMQ_WEBHOOK_CONCURRENCY) are busy together.  The baseline POSTs the same
kind of signed body straight from this process with dreamq.delivery.post (resolve, check,
connect, send, read the answer), with no queue.

    .venv/bin/python -m bench.webhooks slow [--receivers 10] [--every 3] [--hold 60]

Another tenant's webhook beside slow receivers: ``--receivers`` events go to receivers on
127.0.0.1 that answer one byte every ``--every`` s (the whole answer after ``--hold`` s), then
one event to a normal receiver; its latency is from its job's finish to the receiver reading it.
Twice, each with its own Redis and delivery process: the slow receivers on as many origins
(ports) as events, then all on one origin.
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
    ap.add_argument("scenario", nargs="?", choices=["latency", "slow"], default="latency")
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--receivers", type=int, default=10, help="slow: events to slow receivers")
    ap.add_argument("--every", type=float, default=3.0, help="slow: seconds between two bytes of their answer")
    ap.add_argument("--hold", type=float, default=60.0, help="slow: seconds until their whole answer is sent")
    args = ap.parse_args()
    print_header()
    if args.scenario == "slow":
        for one_origin in (False, True):
            slow_receivers(args, one_origin)
        return

    from bench.cluster import SAMPLE, Service
    from bench.receiver import Receiver
    from dreamq.delivery import post
    from shared.images import encode_png
    from dreamq.redis_server import EmbeddedRedis
    from shared.signing import new_secret, signed_headers
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


def slow_receivers(args, one_origin: bool) -> None:
    """Another tenant's webhook latency beside ``args.receivers`` events to slow receivers."""
    import contextlib

    from bench.cluster import SAMPLE, Service
    from bench.receiver import DripReceiver, Receiver
    from shared.images import encode_png
    from dreamq.redis_server import EmbeddedRedis
    from shared.signing import new_secret
    from web import create_app

    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-slow-"))
    server = EmbeddedRedis(tmp / "redis").start()
    env = {"DREAMQ_WEBHOOK_SECRET": new_secret(), "DREAMQ_WEBHOOK_ALLOW_PRIVATE": "1"}
    service = Service(server.url, tmp, env)
    try:
        with contextlib.ExitStack() as stack:  # the receivers close first: no attempt left hanging at the stop
            rx = stack.enter_context(Receiver())
            slow = [stack.enter_context(DripReceiver(every_s=args.every, hold_s=args.hold))
                    for _ in range(1 if one_origin else args.receivers)]
            service.start_webhooks()
            client = create_app(service.settings).test_client()
            png = encode_png(np.asarray(Image.open(SAMPLE).convert("RGB").resize((128, 128))))

            def event(url: str) -> float:
                """A job with this webhook, submitted and finished: its `completed` is queued; when it finished."""
                r = client.post("/api/v1/jobs", content_type="multipart/form-data",
                                data={"image": (io.BytesIO(png), "p.png"), "webhook": url, "cache": "false"})
                assert r.status_code == 202, r.get_json()
                job_id, state = r.get_json()["id"], service.state
                state.start(job_id, state.get(job_id).dispatch, "bench:1")
                state.finish(job_id, "bench:1", "succeeded")
                return state.get(job_id).finished_at

            for i in range(args.receivers):
                event(slow[i % len(slow)].url(f"/slow/{i}"))
            time.sleep(0.5)  # their attempts have started
            finished = event(rx.url("/normal"))
            (got,) = rx.wait(1, "/normal", timeout=args.hold + 300)
            latency = got.at - finished
            closed = [h.held_s for s in slow for h in s.held if h.closed is not None]
            opened = sum(len(s.held) for s in slow)
        settings = service.settings
        where = "1 origin" if one_origin else f"{args.receivers} origins"
        print(f"{args.receivers} events to receivers answering 1 byte per {args.every:g} s (whole answer after "
              f"{args.hold:g} s) on {where}, one delivery process of {settings.webhook_concurrency} threads:")
        print(f"  another tenant's webhook, job finished -> read by its receiver: {latency:.2f} s")
        print(f"  slow connections by then: {opened} opened, {len(closed)} closed"
              + (f", held {min(closed):.1f}-{max(closed):.1f} s" if closed else ""), flush=True)
    finally:
        service.stop()
        server.stop()


if __name__ == "__main__":
    main()
