"""The harness that runs dreamq for real: real Redis, real ``dreamq worker`` processes.

``Service`` starts worker processes against a given Redis (the tests' shared one,
or an embedded one a benchmark starts and may kill), submits jobs to them the way
the web does, and waits for their outcome; ``wait_for`` polls any condition.  The
tests (tests/conftest.py's fixtures, tests/integration/test_reliability.py) and the benchmarks
(bench/faults.py, bench/load.py, ...) both use it.

It lives in bench, not in tests, so that the dependency goes one way only:
tests import bench, bench never imports tests.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "dreamq" / "samples" / "astronaut.jpg"


def wait_for(condition, timeout: float, what: str, every: float = 0.05):
    """``condition()``'s first truthy value, polled every ``every`` s; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"no {what} within {timeout} s")


class Service:
    """Real worker processes against the test Redis, and a way to submit to them."""

    def __init__(self, redis_url: str, data_dir: Path, env: dict[str, str]):
        import redis

        from shared.jobs import Jobs
        from shared.queue import make_celery
        from shared.settings import Settings
        from shared.store import open_store

        self.env = {**os.environ, "DREAMQ_REDIS_URL": redis_url, "DREAMQ_DATA_DIR": str(data_dir),
                    "DREAMQ_MODELS": "vgg16_hed,inception_v3",
                    "DREAMQ_INCEPTION_V3_WEIGHTS": str(data_dir / "no-such-weights.h5"),
                    "DREAMQ_HEARTBEAT_S": "0.5", "DREAMQ_HEARTBEAT_TTL_S": "3", "TF_CPP_MIN_LOG_LEVEL": "3",
                    "DREAMQ_INTRA_OP_THREADS": "1", "DREAMQ_INTER_OP_THREADS": "1", **env}
        self.settings = Settings(redis_url=redis_url, data_dir=data_dir,
                                 **{k[7:].lower(): v for k, v in env.items() if k.startswith("DREAMQ_")})
        self.redis = redis.Redis.from_url(redis_url)
        self.store = open_store(self.settings)
        self.celery = make_celery(self.settings)
        self.state = Jobs(self.redis, self.settings.job_ttl_s, store=self.store, celery=self.celery)
        self.procs: list = []
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start_worker(self, wait: bool = True, piped: bool = False, **env):
        """A `dreamq worker` process, its output in ``logs/worker<n>.log``; ``env`` added to its environment.

        ``piped``: the output goes through a pipe that a thread of this process copies
        into the log, so that limits put on the worker (a file size limit) never hit its log.
        """
        import subprocess
        import sys
        import threading

        log = open(self.logs / f"worker{len(self.procs)}.log", "wb" if piped else "w")
        proc = subprocess.Popen([sys.executable, "-m", "dreamq.cli", "worker", "--loglevel", "INFO"],
                                env={**self.env, **env}, cwd=ROOT,
                                stdout=subprocess.PIPE if piped else log, stderr=subprocess.STDOUT)
        if piped:
            def drain():
                with log:
                    for line in iter(proc.stdout.readline, b""):
                        log.write(line)
                        log.flush()

            threading.Thread(target=drain, daemon=True).start()
        self.procs.append(proc)
        if wait:
            self.wait_ready(proc.pid)
        return proc

    def start_webhooks(self, timeout: float = 60, **env):
        """A `dreamq webhooks` process (the delivery process), once its consumer answers a ping."""
        import socket
        import subprocess
        import sys

        log = open(self.logs / f"webhooks{len(self.procs)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "dreamq.cli", "webhooks", "--loglevel", "INFO"],
                                env={**self.env, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        node = f"dreamq-webhooks@{socket.gethostname()}"

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"dreamq webhooks exited: {self.read_logs()}")
            with self.celery.connection_for_write() as conn:
                return bool(self.celery.control.ping(destination=[node], timeout=0.5, connection=conn))

        wait_for(answers, timeout, "the webhook delivery process to answer a ping")
        return proc

    def start_workers(self, n: int) -> list:
        """Start ``n`` workers side by side (they load their models in parallel)."""
        procs = [self.start_worker(wait=False) for _ in range(n)]
        for proc in procs:
            self.wait_ready(proc.pid)
        return procs

    def worker_info(self, pid: int):
        import json
        import socket
        from shared import keys

        raw = self.redis.get(keys.worker(f"{socket.gethostname()}:{pid}"))
        return json.loads(raw) if raw else None

    def wait_ready(self, pid: int, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.worker_info(pid)
            # Celery's consumer starts after the models: ready once it answers a ping.
            if info and info["ready"] and self.consuming(pid):
                return info
            if any(p.pid == pid and p.poll() is not None for p in self.procs):
                raise RuntimeError(f"worker {pid} exited: {self.read_logs()}")
            time.sleep(0.1)
        raise TimeoutError(f"worker {pid} not ready: {self.read_logs()}")

    def consuming(self, pid: int) -> bool:
        """The worker's Celery consumer answers a ping: its event loop runs, it takes messages."""
        import socket

        # A fresh broker connection each time: a pooled one may predate a Redis restart.
        with self.celery.connection_for_write() as conn:
            return bool(self.celery.control.ping(destination=[f"dreamq-{pid}@{socket.gethostname()}"], timeout=1,
                                                 connection=conn))

    def read_logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.logs.glob("*.log")))

    def submit(self, image: np.ndarray, before_enqueue=None, owner: str | None = None,
               priority: str = "interactive", **params):
        """Submit through the jobs module, as the web does; ``before_enqueue(job_id)`` runs
        between writing the record and sending the message."""
        from shared.images import encode_png

        return self.state.submit(params, encode_png(image), before_enqueue=before_enqueue, owner=owner,
                                 priority=priority).id

    def wait(self, job_id: str, statuses=("succeeded", "failed", "canceled"), timeout: float = 120, seen=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.state.get(job_id)
            if seen is not None and job is not None:
                seen.append(job)
            if job is not None and job.status in statuses:
                return job
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id} still {job.status if job else None}: {self.read_logs()}")

    def stop(self):
        import signal

        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except Exception:
                p.kill()
