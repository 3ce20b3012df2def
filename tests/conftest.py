import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "dreamq" / "samples" / "astronaut.jpg"


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photograph (NASA, public domain), 512x512 RGB."""
    return np.asarray(Image.open(SAMPLE).convert("RGB"))


@pytest.fixture(scope="session")
def small_photo(photo) -> np.ndarray:
    """The photo at 216x288: just above the seed's minimum for 3 octaves of mixed4..7."""
    return np.asarray(Image.fromarray(photo).resize((288, 216), Image.LANCZOS))


@pytest.fixture(scope="session")
def inception_weights_file(tmp_path_factory) -> Path:
    """InceptionV3 with dreamq's fixed-seed random weights, saved as an ordinary weights file."""
    from worker.models import load_model

    path = tmp_path_factory.mktemp("weights") / "inception_v3_random.weights.h5"
    load_model("inception_v3", "random").network.save_weights(str(path))
    return path


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis: $DREAMQ_TEST_REDIS_URL if set (flushed first), else the embedded one."""
    import redis

    url = os.environ.get("DREAMQ_TEST_REDIS_URL")
    if url:
        redis.Redis.from_url(url).flushdb()
        yield url
        return
    from shared.redis_server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def clean_redis(redis_url):
    """The shared Redis, emptied before the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return client


class Service:
    """Real worker processes against the test Redis, and a way to submit to them."""

    def __init__(self, redis_url: str, data_dir: Path, env: dict[str, str]):
        import redis

        from shared.job import JobQueueState
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
        self.state = JobQueueState(self.redis, self.settings.job_ttl_s)
        self.store = open_store(self.settings)
        self.celery = make_celery(self.settings)
        self.procs: list = []
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start_worker(self, wait: bool = True, **env):
        import subprocess
        import sys

        log = open(self.logs / f"worker{len(self.procs)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "dreamq.cli", "worker", "--loglevel", "INFO"],
                                env={**self.env, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        if wait:
            self.wait_ready(proc.pid)
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

        raw = self.redis.get(f"dreamq:worker:{socket.gethostname()}:{pid}")
        return json.loads(raw) if raw else None

    def wait_ready(self, pid: int, timeout: float = 120):
        import time

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

    def submit(self, image: np.ndarray, **params):
        from shared.images import encode_png
        from shared.params import parse_params
        from shared.queue import enqueue
        from shared.store import INPUT

        effective = parse_params(params).model_dump()
        job = self.state.create(effective)
        job.input_url = self.store.put(job.id, INPUT, encode_png(image))
        self.state.save_new(job)
        enqueue(self.celery, job.id, job.dispatch)
        return job.id

    def wait(self, job_id: str, statuses=("succeeded", "failed", "canceled"), timeout: float = 120, seen=None):
        import time

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


@pytest.fixture
def service(clean_redis, redis_url, tmp_path):
    """Start workers with ``service.start_worker()``; they are stopped after the test."""
    svc = Service(redis_url, tmp_path, {})
    yield svc
    svc.stop()


@pytest.fixture
def live_worker(service):
    """One ready worker (vgg16_hed loaded; inception_v3 unavailable: no weights file)."""
    service.start_worker()
    return service


@pytest.fixture(scope="session")
def tiny_photo(photo) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).resize((96, 96), Image.LANCZOS))


@pytest.fixture
def client(app):
    """The Flask test client of the module's ``app`` fixture."""
    return app.test_client()


@pytest.fixture(scope="module")
def jpeg(photo) -> bytes:
    from .webutil import encode

    return encode(photo, "JPEG", quality=90)


# Small, fast jobs for the queue tests: one VGG layer that works from 32 px.
QUICK = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": 2, "iterations": 4}
