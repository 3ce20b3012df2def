"""Starting workers: one process per GPU, each warm before it consumes."""
from __future__ import annotations

import logging
import os
import sys

from shared.queue import QUEUE
from shared.settings import Settings

log = logging.getLogger("dreamq.worker")


def run_worker(settings: Settings, device: str = "cpu", loglevel: str = "INFO") -> None:
    """Run one worker in this process until it is told to stop.

    The same as `celery -A worker worker -Q dreamq` (worker/celery.py), with our log
    format and a node name per process, so that several workers on a host (one per
    GPU) are told apart by `celery inspect` and Flower.
    """
    logging.basicConfig(level=loglevel, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .celery import create_app

    app = create_app(settings, device=device)
    app.worker_main(["worker", "-Q", QUEUE, "-n", f"dreamq-{os.getpid()}@%h", f"--loglevel={loglevel}"])


def gpu_children(gpus: list[str], extra_env: dict[str, str] | None = None) -> list:
    """One `dreamq worker` process per GPU, each seeing only its own device."""
    from dreamq.supervisor import Child

    return [Child(f"worker gpu:{gpu}", [sys.executable, "-m", "dreamq.cli", "worker"], group="workers",
                  env={**os.environ, **(extra_env or {}), "CUDA_VISIBLE_DEVICES": gpu, "DREAMQ_DEVICE": f"gpu:{gpu}"})
            for gpu in gpus]


def supervise_gpus(gpus: list[str]) -> int:
    """`dreamq worker --gpus 0,1`: the workers under the supervisor of `dreamq up` (restarted when
    they die, with backoff; Ctrl-C or SIGTERM stops them, each giving its running job back)."""
    from dreamq.supervisor import Supervisor, configure_logging

    configure_logging()
    return Supervisor(gpu_children(gpus)).run()
