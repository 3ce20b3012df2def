"""Starting a worker in this process, warm before it consumes (`dreamq worker`; dreamq/supervisor.py
starts one per GPU)."""
from __future__ import annotations

import logging
import os

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
