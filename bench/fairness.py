"""Fair share with one worker: owner A queues many short jobs, then owner B queues one.

    .venv/bin/python -m bench.fairness [--jobs 200]

One embedded Redis, one real worker (vgg16_hed, 64x64, 1 octave x 2 steps).  Two runs:
  baseline  B's job is A's own (the same owner): it waits behind A's queue, which is what every
            job got before fair share (one queue, submission order)
  fair      B is another owner
Prints how long B's job waited to start, in seconds and in job-times (one job's share of the run,
its overhead between jobs included), how many of A's jobs started before it, and checks that A's
jobs ran in A's order, each once.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import print_header

A, B = "a" * 64, "b" * 64


def run(svc, image, params, n: int, b_owner: str) -> dict:
    a = [svc.submit(image, owner=A, **params) for _ in range(n)]
    svc.wait(a[0], statuses=("running", "succeeded"))
    time.sleep(1.0)  # A's jobs are running, one after the other
    b = svc.submit(image, owner=b_owner, **params)
    done_b = svc.wait(b, timeout=600)
    done_a = [svc.wait(i, timeout=600) for i in a]
    everything = done_a + [done_b]
    assert all(j.status == "succeeded" for j in everything), [j.error for j in everything if j.error]
    assert all(j.attempts == 1 for j in everything), "a job ran twice"
    started = [j.started_at for j in done_a]
    assert started == sorted(started), "A's jobs ran out of A's order"
    job_time = (max(j.finished_at for j in everything) - min(j.started_at for j in everything)) / len(everything)
    waited = done_b.started_at - done_b.created_at
    ahead = sum(j.started_at < done_b.started_at and j.started_at > done_b.created_at for j in done_a)
    return {"waited_s": waited, "job_time_s": job_time, "job_times": waited / job_time, "a_started_meanwhile": ahead}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=200, help="A's jobs")
    args = ap.parse_args(argv)
    print_header()
    from PIL import Image

    from bench.cluster import SAMPLE, Service
    from dreamq.redis_server import EmbeddedRedis

    tmp = Path(tempfile.mkdtemp())
    server = EmbeddedRedis(tmp / "redis").start()
    svc = Service(server.url, tmp, {"DREAMQ_MODELS": "vgg16_hed"})
    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((64, 64)))
    params = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": 1, "iterations": 2}
    try:
        svc.start_worker()
        svc.wait(svc.submit(image, **params))  # warm the path once
        base = run(svc, image, params, args.jobs, b_owner=A)
        fair = run(svc, image, params, args.jobs, b_owner=B)
    finally:
        svc.stop()
        server.stop()
    print(f"one worker; A queues {args.jobs} jobs, then B queues 1 (vgg16_hed 64x64, 1 octave x 2 steps)")
    print(f"{'run':<10} {'B waited':>10} {'job-time':>10} {'in job-times':>13} {'A jobs started meanwhile':>25}")
    for name, r in (("baseline", base), ("fair", fair)):
        print(f"{name:<10} {r['waited_s']:>9.2f}s {r['job_time_s']:>9.3f}s {r['job_times']:>13.1f} "
              f"{r['a_started_meanwhile']:>25}")
    print(f"B's wait, fair / baseline: {fair['waited_s'] / base['waited_s']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
