"""The Celery task: a thin door from a queue message to ``Worker.run``."""
from __future__ import annotations

import logging
import time

from celery.exceptions import Reject

from shared.job import FAILED
from shared.queue import TASK

log = logging.getLogger("dreamq.worker")

# How long a process with no Worker holds a message before it gives it back: without
# a pause, it would take the same message again at once, in a loop.
UNBOUND_REJECT_DELAY_S = 1.0

_worker = None  # the process's Worker, bound by worker/celery.py once its models are warm


class JobFailedError(Exception):
    """Raised once a failed job is recorded, so that Celery reports its task FAILURE (events,
    Flower).  Expected (the task's ``throws``): logged in one line, never retried; the message
    is acked as after any end (acks_late, task_acks_on_failure_or_timeout)."""


def bind(worker) -> None:
    global _worker
    _worker = worker


def bound():
    """The process's Worker, or None."""
    return _worker


def register(app):
    @app.task(name=TASK, acks_late=True, ignore_result=True, throws=(JobFailedError,))
    def dream(job_id: str, dispatch: str) -> str:
        worker = _worker
        if worker is None:
            # A Celery worker started on an app without ours (e.g. `celery -A <module
            # that calls make_celery()> worker`): it cannot run the job, so the message goes
            # back to the queue for a real worker; acked here, the job would wait for good.
            log.error("job %s: this process has no dreamq Worker (start workers with `dreamq worker` or "
                      "`celery -A worker worker -Q dreamq`); message rejected back to the queue", job_id)
            time.sleep(UNBOUND_REJECT_DELAY_S)
            raise Reject("no dreamq Worker in this process", requeue=True)
        if worker.stopping.is_set():
            # Shutting down: give the message back unstarted, so a job handed back by a
            # neighbour that is stopping too does not count one more attempt here.
            raise Reject("this worker is stopping", requeue=True)
        outcome = worker.run(job_id, dispatch)
        if outcome == FAILED:  # the record says why; the detail is in this worker's log
            raise JobFailedError(f"job {job_id} failed")
        return outcome

    return dream
