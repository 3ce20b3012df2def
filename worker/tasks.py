"""The Celery task: a thin door from a queue message to ``Worker.run``."""
from __future__ import annotations

from shared.queue import TASK

_worker = None  # the process's Worker, set by dreamq.serve before consuming


def bind(worker) -> None:
    global _worker
    _worker = worker


def register(app):
    @app.task(name=TASK, acks_late=True, ignore_result=True)
    def dream(job_id: str, dispatch: str) -> str:
        return _worker.run(job_id, dispatch)

    return dream
