"""Load: many concurrent clients against a real web server, a real Redis and one real worker.

    .venv/bin/python -m bench.load [--submissions 500] [--clients 50] [--pollers 5] [--size 48]

Starts an embedded Redis, a gunicorn web server (gthread) on 127.0.0.1 and one
worker process, then ``--clients`` threads POST ``--submissions`` tiny jobs
(vgg16_hed, block3_conv3=1, 1 octave, 1 iteration) while ``--pollers`` threads
read job status and the job list until every accepted job has finished.  It checks that:

  * every submission answers 202, or 429/503 with a Retry-After header;
  * every accepted job ends ``succeeded`` and no record is lost (the jobs index
    holds exactly the accepted ids, the queue and the Celery list are empty);
  * status polling answers 200 throughout;

and prints p50/p99 latencies of submit and status.  Everything is bounded in
count and time (``--deadline``); all traffic goes to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.machine import print_header

ROOT = Path(__file__).resolve().parent.parent
TINY = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": "1", "iterations": "1"}


def pct(values, q) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


class WebServer:
    """`gunicorn 'web:create_app()'` on 127.0.0.1, as production runs it; restartable on the same port."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None, workers: int = 2,
                 threads: int = 8):
        from dreamq.redis_server import free_port

        self.env = {**os.environ, **env}
        self.port = port or free_port()
        self.log_path = Path(log_path)
        self.workers, self.threads = workers, threads
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "WebServer":
        import requests

        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
             "--threads", str(self.threads), "--timeout", "60", "--graceful-timeout", "5", "--backlog", "256",
             "web:create_app()"],
            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"gunicorn not up in {timeout}s: {self.log_path.read_text()[-2000:]}")

    def stop(self, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            if kill:  # the whole server at once, arbiter and its workers, as a crashed host or container
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def tiny_png(size: int = 48) -> bytes:
    from PIL import Image

    from bench.cluster import SAMPLE

    buf = io.BytesIO()
    Image.open(SAMPLE).convert("RGB").resize((size, size), Image.LANCZOS).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class LoadResult:
    submissions: int
    statuses: dict[int, int] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)
    submit_latency: list[float] = field(default_factory=list)
    status_latency: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # responses outside the contract
    poll_errors: list[str] = field(default_factory=list)
    final: dict[str, int] = field(default_factory=dict)  # status -> jobs, after draining
    lost: list[str] = field(default_factory=list)
    leftover: dict[str, int] = field(default_factory=dict)
    submit_s: float = 0.0
    drain_s: float = 0.0

    def summary(self) -> dict:
        return {"submissions": self.submissions, "responses": dict(sorted(self.statuses.items())),
                "accepted": len(self.accepted), "contract_errors": len(self.errors), "final": self.final,
                "lost": len(self.lost), "leftover": self.leftover,
                "submit_p50_ms": pct(self.submit_latency, 50), "submit_p99_ms": pct(self.submit_latency, 99),
                "status_requests": len(self.status_latency), "status_errors": len(self.poll_errors),
                "status_p50_ms": pct(self.status_latency, 50), "status_p99_ms": pct(self.status_latency, 99),
                "submit_s": round(self.submit_s, 2), "drain_s": round(self.drain_s, 2),
                "jobs_per_s": round(len(self.accepted) / (self.submit_s + self.drain_s), 2)
                if self.accepted else None}


def run_load(base_url: str, redis_client, png: bytes, submissions: int, clients: int, pollers: int = 5,
             params: dict | None = None, deadline_s: float = 600) -> LoadResult:
    """Submit concurrently, poll meanwhile, wait for every accepted job; never more than ``deadline_s``."""
    import requests

    from shared import keys
    from shared.queue import QUEUE

    params = params or TINY
    result = LoadResult(submissions)
    lock = threading.Lock()
    counter = iter(range(submissions))
    polling = threading.Event()  # pollers run while jobs are submitted and drained
    polling.set()
    stop_at = time.monotonic() + deadline_s

    def client() -> None:
        s = requests.Session()
        while time.monotonic() < stop_at:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            t0 = time.perf_counter()
            try:
                r = s.post(f"{base_url}/api/v1/jobs", data=params, files={"image": ("photo.png", png, "image/png")},
                           timeout=60)
            except requests.RequestException as exc:
                with lock:
                    result.errors.append(f"submit {n}: {exc!r}")
                continue
            dt = time.perf_counter() - t0
            with lock:
                result.statuses[r.status_code] = result.statuses.get(r.status_code, 0) + 1
                result.submit_latency.append(dt)
                if r.status_code == 202:
                    result.accepted.append(r.json()["id"])
                elif r.status_code in (429, 503) and r.headers.get("Retry-After", "").isdigit():
                    pass
                else:
                    result.errors.append(f"submit {n}: {r.status_code} {r.headers.get('Retry-After')} {r.text[:200]}")

    def poller(seed: int) -> None:
        s = requests.Session()
        rng = random.Random(seed)
        for i in range(100_000):  # bounded; ends once every accepted job has finished
            if not polling.is_set() or time.monotonic() > stop_at:
                return
            with lock:
                ids = list(result.accepted[-200:])
            if i % 10 == 9 or not ids:
                url = f"{base_url}/api/v1/jobs?limit=20"
            else:
                url = f"{base_url}/api/v1/jobs/{rng.choice(ids)}"
            t0 = time.perf_counter()
            try:
                r = s.get(url, timeout=30)
                ok = r.status_code == 200
                why = f"{r.status_code} {r.text[:200]}"
            except requests.RequestException as exc:
                ok, why = False, repr(exc)
            dt = time.perf_counter() - t0
            with lock:
                result.status_latency.append(dt)
                if not ok:
                    result.poll_errors.append(f"{url}: {why}")
            time.sleep(0.01)

    t_start = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    polls = [threading.Thread(target=poller, args=(i,), daemon=True) for i in range(pollers)]
    for t in threads + polls:
        t.start()
    for t in threads:
        t.join(max(0.0, stop_at - time.monotonic()))
    result.submit_s = time.monotonic() - t_start

    # Drain: every accepted job must end succeeded.
    t_drain = time.monotonic()
    statuses: list = []
    while time.monotonic() < stop_at:
        with redis_client.pipeline() as p:
            for job_id in result.accepted:
                p.hget(keys.job(job_id), "status")
            statuses = p.execute()
        if all(s in (b"succeeded", b"failed", b"canceled") for s in statuses):
            break
        time.sleep(0.5)
    result.drain_s = time.monotonic() - t_drain
    polling.clear()
    for t in polls:
        t.join(35)
    for job_id, status in zip(result.accepted, statuses):
        name = status.decode() if status else "missing"
        result.final[name] = result.final.get(name, 0) + 1
    indexed = {raw.decode() for raw in redis_client.zrange(keys.JOBS, 0, -1)}
    result.lost = sorted(set(result.accepted) - indexed) + [i for i, s in zip(result.accepted, statuses) if s is None]
    result.leftover = {"indexed_not_accepted": len(indexed - set(result.accepted)),
                       "queued": redis_client.zcard(keys.QUEUED_JOBS), "running": redis_client.zcard(keys.RUNNING_JOBS),
                       "celery_messages": redis_client.llen(QUEUE)}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--submissions", type=int, default=500)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--pollers", type=int, default=5)
    ap.add_argument("--size", type=int, default=48, help="side of the square test image")
    ap.add_argument("--web-workers", type=int, default=2)
    ap.add_argument("--web-threads", type=int, default=8)
    ap.add_argument("--rate-limit", type=int, default=0, help="DREAMQ_RATE_LIMIT_PER_MINUTE (0: off)")
    ap.add_argument("--max-queued", type=int, default=1000, help="DREAMQ_MAX_QUEUED")
    ap.add_argument("--deadline", type=float, default=600, help="seconds for submitting and draining, at most")
    args = ap.parse_args()
    print_header()

    import json

    from bench.cluster import Service
    from dreamq.redis_server import EmbeddedRedis

    tmp = Path(tempfile.mkdtemp(prefix="dreamq-load-"))
    server = EmbeddedRedis(tmp / "redis").start()
    env = {"DREAMQ_REDIS_URL": server.url, "DREAMQ_DATA_DIR": str(tmp), "DREAMQ_MAX_QUEUED": str(args.max_queued),
           "DREAMQ_RATE_LIMIT_PER_MINUTE": str(args.rate_limit)}
    svc = Service(server.url, tmp, {"DREAMQ_MODELS": "vgg16_hed", "DREAMQ_MAX_QUEUED": str(args.max_queued)})
    web = WebServer(env, tmp / "web.log", workers=args.web_workers, threads=args.web_threads)
    try:
        svc.start_worker()
        web.start()
        result = run_load(web.url, svc.redis, tiny_png(args.size), args.submissions, args.clients, args.pollers,
                          deadline_s=args.deadline)
    finally:
        web.stop()
        svc.stop()
        server.stop()
    summary = result.summary()
    print(json.dumps(summary, indent=2))
    for line in (result.errors + result.poll_errors)[:10]:
        print("error:", line)
    ok = (not result.errors and not result.poll_errors and not result.lost
          and result.final.get("succeeded", 0) == len(result.accepted)
          and not any(result.leftover.values()))
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
