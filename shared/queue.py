"""The Celery app both sides share: configuration and how a job is enqueued.

The web only *sends* by task name (it never imports the worker or Keras);
the worker registers the task in ``worker/tasks.py``, and ``worker/celery.py``
builds the worker's app (``celery -A worker worker -Q dreamq``).  Messages carry a job
id and a dispatch token, never image bytes.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

from celery import Celery

from .settings import Settings, get_settings

TASK = "dreamq.dream"
QUEUE = "dreamq"


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    if not settings.redis_url:
        raise RuntimeError("DREAMQ_REDIS_URL is not set: run `dreamq up`, or point it at a Redis server")
    app = Celery("dreamq", broker=settings.redis_url, set_as_current=False)
    transport = {"visibility_timeout": settings.visibility_timeout_s}
    app.conf.update(
        # JSON only: a pickle message is refused, so no one can run code through the queue.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        # Our job record holds results and state; Celery keeps none.
        task_ignore_result=True,
        result_backend=None,
        # Long GPU jobs: acknowledge after the job, take one at a time, and
        # let Redis redeliver only after the longest job could have finished.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        task_time_limit=settings.job_time_limit_s + 60,
        task_soft_time_limit=settings.job_time_limit_s,
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        # A worker never gives up on its broker: exiting would only have its supervisor (or
        # compose) start one that waits again.  Celery logs each attempt, with its delay.
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # The job runs on a pool thread, not on the consumer's: the consumer goes on answering
        # `celery inspect` / `ping` / Flower and sending heartbeats while a job runs.  One
        # thread: one job at a time per worker (one device), as with the solo pool.
        worker_pool="threads",
        worker_concurrency=1,
        # Task events (sent by whoever enqueues, then received/started/succeeded with their
        # runtime by the worker) and worker heartbeats: what Flower and `celery events` show.
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app


def enqueue(app: Celery, job_id: str, dispatch: str) -> None:
    app.send_task(TASK, args=[job_id, dispatch], queue=QUEUE)


def lazy_app(module: str, create: Callable[[], Celery]):
    """A module ``__getattr__`` (PEP 562) that builds ``app`` on first use, which is how
    `celery -A <module>` asks for it; importing the module (as the dreamq commands do) builds none."""
    build = functools.cache(create)

    def __getattr__(name: str):
        if name == "app":
            return build()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
