"""The Celery app both sides share: configuration and how a job is enqueued.

The web only *sends* by task name (it never imports the worker or Keras);
the worker registers the task in ``worker/tasks.py``, and ``worker/celery.py``
builds the worker's app (``celery -A worker worker -Q dreamq``).  Messages carry a job
id and a dispatch token, never image bytes.
"""
from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable

from celery import Celery

from .settings import Settings, get_settings
from .workers import redis_url_for

log = logging.getLogger("dreamq.queue")

TASK = "dreamq.dream"
QUEUE = "dreamq"


def broker_url(settings: Settings) -> str:
    """DREAMQ_REDIS_URL, else the embedded Redis of a `dreamq up` in the data directory: so that
    `celery -A worker inspect` and Flower, run beside it, find it with nothing exported."""
    url = redis_url_for(settings)
    if not url:
        raise RuntimeError(f"DREAMQ_REDIS_URL is not set and no `dreamq up` Redis is in {settings.data_dir} "
                           "(DREAMQ_DATA_DIR): run `dreamq up`, or point DREAMQ_REDIS_URL at a Redis server")
    return url


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("dreamq", broker=broker_url(settings), set_as_current=False)
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


def task_id(dispatch: str) -> str:
    """The Celery task id of the message sent with this dispatch token (a UUID's hex): each message
    of a job has its own, and whoever knows the token names the task in Celery's events."""
    try:
        return str(uuid.UUID(hex=dispatch))
    except ValueError:
        return dispatch


def enqueue(app: Celery, job_id: str, dispatch: str) -> None:
    app.send_task(TASK, args=[job_id, dispatch], queue=QUEUE, task_id=task_id(dispatch))


def announce_revoked(app: Celery | None, dispatch: str | bytes | None) -> None:
    """Send the `task-revoked` event of a message dropped from the queue (a job canceled while
    queued, shared/jobs.py): no worker sees that message, so without this Flower and `celery events`
    would show its task PENDING for good.  Best effort: the cancel stands whatever happens here."""
    if app is None or not dispatch:
        return
    if isinstance(dispatch, bytes):
        dispatch = dispatch.decode()
    try:
        with app.events.default_dispatcher() as events:
            events.send("task-revoked", uuid=task_id(dispatch), terminated=False, signum=None, expired=False)
    except Exception as exc:  # noqa: BLE001 - kombu, redis and socket errors alike
        log.warning("task %s: no task-revoked event sent: %s", task_id(dispatch), exc)


def lazy_app(module: str, create: Callable[[], Celery]):
    """A module ``__getattr__`` (PEP 562) that builds ``app`` on first use, which is how
    `celery -A <module>` asks for it; importing the module (as the dreamq commands do) builds none."""
    build = functools.cache(create)

    def __getattr__(name: str):
        if name == "app":
            return build()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
