"""What running jobs on a pool thread costs per job: the threads pool next to the solo pool.

    .venv/bin/python -m bench.pool [--jobs 20] [--rounds 2]

dreamq workers run each job on one pool thread (``worker_pool="threads"``, concurrency 1)
instead of on Celery's consumer thread (the solo pool), so that the consumer answers
``celery inspect`` / ``ping`` and sends heartbeats while a job runs.  This measures what
that costs, with real processes: two warm workers started by the real CLI
(``celery -A worker worker -P solo|threads``), each on its own embedded Redis, both idle
but one, in alternating rounds (solo, threads, threads, solo, ...) so that the load of the
machine drifts on both alike.  Tiny jobs (64x64, 1 octave, 1 iteration), so that the queue
and the pool, not the dream, dominate:

  round trip   client submit -> client sees `succeeded` (1 ms polls), one job at a time
  burst        N jobs submitted at once: (last finished - first started) / N
  handoff      in the burst, one job's finish to the next one's start (ack, next message, start)
  ping         a control ping sent while a 2-octave job runs: answered, and how fast
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import print_header
from shared import keys

ROOT = Path(__file__).resolve().parent.parent
TINY = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": 1, "iterations": 1}
BUSY = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": 2, "octave_scale": 1.0, "iterations": 200,
        "max_loss": "none"}
POOLS = ("solo", "threads")


@contextlib.contextmanager
def pool_worker(pool: str, tmp: Path):
    """A warm `celery -A worker worker -P <pool>` on an embedded Redis of its own."""
    from bench.cluster import Service
    from dreamq.redis_server import EmbeddedRedis

    server = EmbeddedRedis(tmp / "redis").start()
    svc = Service(server.url, tmp, {"DREAMQ_MODELS": "vgg16_hed"})
    svc.node = f"{pool}@{socket.gethostname()}"
    log = (svc.logs / f"{pool}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "dreamq", "-P", pool,
                             "-n", f"{pool}@%h", "--loglevel", "WARNING"],
                            env=svc.env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    svc.procs.append(proc)
    try:
        yield svc
    finally:
        svc.stop()
        server.stop()


def wait_warm(svc, image) -> None:
    deadline = time.monotonic() + 300
    while not (svc.worker_info(svc.procs[0].pid) or {}).get("ready"):
        if svc.procs[0].poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start: {svc.read_logs()}")
        time.sleep(0.1)
    for _ in range(3):  # the first jobs pay for graph tracing
        assert svc.wait(svc.submit(image, **TINY), timeout=120).status == "succeeded"


def round_trip(svc, image) -> float:
    t0 = time.perf_counter()
    job_id = svc.submit(image, **TINY)
    key = keys.job(job_id)
    while svc.redis.hget(key, "status") != b"succeeded":
        time.sleep(0.001)
    return time.perf_counter() - t0


def burst(svc, image, n: int) -> tuple[float, list[float]]:
    ids = [svc.submit(image, **TINY) for _ in range(n)]
    jobs = sorted((svc.wait(i, timeout=300) for i in ids), key=lambda j: j.started_at)
    assert all(j.status == "succeeded" for j in jobs)
    per_job = (jobs[-1].finished_at - jobs[0].started_at) / n
    handoffs = [b.started_at - a.finished_at for a, b in itertools.pairwise(jobs)]
    return per_job, handoffs


def ping_while_busy(svc, image) -> float | None:
    """Seconds to a ping reply while a job runs; None: no reply within 1 s."""
    job_id = svc.submit(image, **BUSY)
    while svc.state.get(job_id).status != "running":
        time.sleep(0.01)
    t0 = time.perf_counter()
    with svc.celery.connection_for_write() as conn:
        replies = svc.celery.control.ping(destination=[svc.node], timeout=1, connection=conn)
    took = time.perf_counter() - t0
    was_running = svc.state.get(job_id).status == "running"
    svc.state.cancel(job_id)
    svc.wait(job_id, timeout=300)
    return took if replies and was_running else None


def ms(values) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms (min {min(values) * 1000:.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20, help="jobs per round, one at a time and in a burst")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per pool, alternating")
    args = ap.parse_args()
    print_header()

    from PIL import Image

    from bench.cluster import SAMPLE

    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((64, 64)))
    tmp = Path(tempfile.mkdtemp(prefix="dreamq-pool-"))
    trips = {p: [] for p in POOLS}
    bursts = {p: [] for p in POOLS}
    handoffs = {p: [] for p in POOLS}
    pings = {p: [] for p in POOLS}
    with contextlib.ExitStack() as stack:
        workers = {p: stack.enter_context(pool_worker(p, tmp / p)) for p in POOLS}
        for svc in workers.values():
            wait_warm(svc, image)
        order = [p for r in range(args.rounds) for p in (POOLS if r % 2 == 0 else POOLS[::-1])]
        for pool in order:
            svc = workers[pool]
            trips[pool] += [round_trip(svc, image) for _ in range(args.jobs)]
            per_job, gaps = burst(svc, image, args.jobs)
            bursts[pool].append(per_job)
            handoffs[pool] += gaps
            pings[pool].append(ping_while_busy(svc, image))
    print(f"{args.rounds} rounds per pool ({' '.join(order)}), {args.jobs} jobs each way per round; "
          f"64x64, 1 octave, 1 iteration; one TensorFlow thread per worker")
    print(f"{'pool':8} {'round trip, median':28} {'burst, per job':28} {'handoff, median':28} ping while busy")
    for pool in POOLS:
        answered = [p for p in pings[pool] if p is not None]
        ping = (f"{len(answered)}/{len(pings[pool])} answered" +
                (f", median {statistics.median(answered) * 1000:.0f} ms" if answered else " (1 s timeout)"))
        print(f"{pool:8} {ms(trips[pool]):28} {ms(bursts[pool]):28} {ms(handoffs[pool]):28} {ping}")
    solo, threads = statistics.median(trips["solo"]), statistics.median(trips["threads"])
    print(f"threads - solo, per job: round trip {(threads - solo) * 1000:+.1f} ms, burst "
          f"{(statistics.median(bursts['threads']) - statistics.median(bursts['solo'])) * 1000:+.1f} ms")


if __name__ == "__main__":
    main()
