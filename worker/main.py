"""Starting workers: one process per GPU, each warm before it consumes."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from shared.queue import QUEUE, make_celery
from shared.settings import Settings

log = logging.getLogger("dreamq.worker")


def _configure_threads(settings: Settings) -> None:
    import keras

    if keras.backend.backend() == "tensorflow" and (settings.intra_op_threads or settings.inter_op_threads):
        import tensorflow as tf

        # Bounded threads let a worker share a host with the web process.
        if settings.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
        if settings.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)


def run_worker(settings: Settings, device: str = "cpu", loglevel: str = "INFO") -> None:
    """Run one worker in this process until it is told to stop."""
    logging.basicConfig(level=loglevel, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from celery.signals import worker_shutting_down

    from . import tasks
    from .worker import Worker

    app = make_celery(settings)
    tasks.register(app)
    worker = Worker(settings, app, device=device)
    tasks.bind(worker)
    _configure_threads(settings)

    worker.heartbeat()  # visible (not ready) while models load
    worker.start_heartbeat()
    worker.load_models()  # before consuming: no job pays for a model load
    worker.recover_lost_jobs()

    @worker_shutting_down.connect(weak=False)
    def _stop(**_):
        worker.stopping.set()  # the running job is given back at its next step

    try:
        app.worker_main([
            "worker", "--pool=solo", "--concurrency=1", "-Q", QUEUE, "-n", f"dreamq-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat", f"--loglevel={loglevel}",
        ])
    finally:
        worker.stop_heartbeat()


def spawn_workers(gpus: list[str], extra_env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    """One `dreamq worker` process per GPU, each seeing only its own device."""
    procs = []
    for gpu in gpus:
        env = {**os.environ, **(extra_env or {}), "CUDA_VISIBLE_DEVICES": gpu, "DREAMQ_DEVICE": f"gpu:{gpu}"}
        procs.append(subprocess.Popen([sys.executable, "-m", "dreamq.cli", "worker"], env=env))
    return procs


def wait_all(procs: list[subprocess.Popen]) -> int:
    """Forward Ctrl-C / SIGTERM to the children and wait for them."""
    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    while any(p.poll() is None for p in procs):
        time.sleep(0.2)
    return max((p.returncode or 0) for p in procs)
