"""The Celery app both sides share: configuration and how a job is enqueued.

The web only *sends* by task name (it never imports the worker or Keras);
the worker registers the task in ``worker/tasks.py``, and ``worker/celery.py``
builds the worker's app (``celery -A worker worker -Q dreamq``).  Messages carry a job
id and a dispatch token, never image bytes.
"""
from __future__ import annotations

import base64
import functools
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable

import redis
from celery import Celery

from .settings import Settings, get_settings

log = logging.getLogger("dreamq.queue")

TASK = "dreamq.dream"
QUEUE = "dreamq"


def broker_url(settings: Settings) -> str:
    """DREAMQ_REDIS_SENTINELS as kombu's ``sentinel://h1:p1/0;sentinel://h2:p2/0`` (the master's name
    goes in the transport options: shared/redis_client.py), else DREAMQ_REDIS_URL, else the embedded
    Redis of a `dreamq up` in the data directory: so that `celery -A worker inspect` and Flower, run
    beside it, find it with nothing exported.  RuntimeError when there is none."""
    from .redis_client import celery_broker

    return celery_broker(settings)[0]


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("dreamq", broker=broker_url(settings), set_as_current=False)
    from .redis_client import celery_broker

    # Under Sentinel: master_name and sentinel_kwargs (kombu's SentinelChannel), for results and events too.
    transport = {"visibility_timeout": settings.visibility_timeout_s, **celery_broker(settings)[1]}
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
    """Send the message that runs ``job_id`` with this dispatch token (and its ``task-sent`` event)."""
    enqueue_many(app, [(job_id, dispatch)])


def enqueue_many(app: Celery, jobs: list[tuple[str, str]], batch: int = 1000) -> None:
    """``enqueue`` for many (job id, dispatch token) pairs, in order: one round trip per ``batch``."""
    publisher = _publisher(app)
    if publisher is None:  # not a Redis broker (or not a Celery app): Celery's own path
        for job_id, dispatch in jobs:
            app.send_task(TASK, args=[job_id, dispatch], queue=QUEUE, task_id=task_id(dispatch))
        return
    for start in range(0, len(jobs), batch):
        publisher.send(jobs[start:start + batch])


# -- the publish path --------------------------------------------------------------------------
# ``app.send_task`` took 1 to 2 ms a message on a 2-core VM, half of a whole submit (bench/scale.py):
# Celery's routing and options, kombu's producer, and a new redis-py client (~0.15 ms each: it
# builds its table of response callbacks) for each of its two commands, the message's LPUSH and its
# task-sent event's PUBLISH.  A job's message is always the same few fields, so it is written here:
# Celery's message protocol 2 in kombu's Redis envelope, as send_task writes it less the headers
# that are empty or at their default (a worker reads each with a default; about 610 bytes in the
# broker list instead of 1,100), and both commands go in one round trip on one client of the
# broker's own connection pool (kombu's channel: a Sentinel-managed pool under Sentinel), held by
# the process.  ``argsrepr`` stays: it is how shared/jobs.py finds a canceled job's message.

class _Publisher:
    """Writes the messages of one Celery app (Redis broker) from this process."""

    def __init__(self, app: Celery, connection):
        from celery.utils.nodenames import anon_nodename

        self.app, self.pid = app, os.getpid()
        self.connection = connection  # held: its channel owns the pool
        channel = connection.default_channel  # connects (a PING)
        self.client = channel._create_client()
        self.list_key = channel._q_for_pri(QUEUE, 0)
        self.events = bool(app.conf.task_send_sent_event)
        self.topics = channel._get_publish_topics(app.conf.event_exchange, "task.sent") if self.events else []
        self.event_exchange = app.conf.event_exchange
        self.hostname = anon_nodename()
        self.retry = app.conf.task_publish_retry
        self.policy = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2,
                       **(app.conf.task_publish_retry_policy or {})}

    def message(self, job_id: str, dispatch: str) -> tuple[str, str | None]:
        """(the task message, its task-sent event), as JSON in kombu's envelope."""
        tid = task_id(dispatch)
        args = [job_id, dispatch]
        argsrepr = repr(args)
        body = base64.b64encode(json.dumps([args, {}, {}], separators=(",", ":")).encode()).decode()
        message = json.dumps({
            "body": body, "content-encoding": "utf-8", "content-type": "application/json",
            "headers": {"lang": "py", "task": TASK, "id": tid, "root_id": tid, "argsrepr": argsrepr,
                        "kwargsrepr": "{}"},
            "properties": {"delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": QUEUE},
                           "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
        }, separators=(",", ":"))
        if not self.events:
            return message, None
        from celery.events.event import Event
        from celery.utils.time import utcoffset

        fields = Event("task-sent", hostname=self.hostname, utcoffset=utcoffset(), pid=self.pid,
                       clock=self.app.clock.forward(), uuid=tid, root_id=tid, parent_id=None, name=TASK,
                       args=argsrepr, kwargs="{}", retries=0, eta=None, expires=None, queue=QUEUE, exchange="",
                       routing_key=QUEUE)
        event = json.dumps({
            "body": base64.b64encode(json.dumps(fields).encode()).decode(), "content-encoding": "utf-8",
            "content-type": "application/json", "headers": {"hostname": self.hostname},
            "properties": {"delivery_mode": 1, "delivery_info": {"exchange": self.event_exchange,
                                                                 "routing_key": "task.sent"},
                           "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
        })
        return message, event

    def send(self, jobs: list[tuple[str, str]]) -> None:
        built = [self.message(job_id, dispatch) for job_id, dispatch in jobs]
        tries = 1 + (int(self.policy["max_retries"]) if self.retry else 0)
        for attempt in range(tries):
            try:
                with self.client.pipeline(transaction=False) as p:
                    p.lpush(self.list_key, *(message for message, _ in built))
                    for _, event in built:
                        for topic in self.topics if event is not None else ():
                            p.publish(topic, event)
                    p.execute()
                return
            except (redis.ConnectionError, redis.TimeoutError):
                if attempt == tries - 1:
                    raise
                time.sleep(min(self.policy["interval_start"] + attempt * self.policy["interval_step"],
                               self.policy["interval_max"]))


# app -> (pid, publisher); None: send_task.  Weak: an app that is gone (a test's) takes its own along.
_publishers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_publishers_lock = threading.Lock()


def _publisher(app) -> _Publisher | None:
    """The process's publisher of ``app``; None when its broker is not Redis (kombu's ``redis`` or
    ``sentinel`` transports) or it is not a Celery app (a test's stand-in): then send_task."""
    try:
        held = _publishers.get(app)
    except TypeError:  # not weakly referable: no Celery app
        return None
    if held is not None and held[0] == os.getpid():
        return held[1]
    with _publishers_lock:
        held = _publishers.get(app)
        if held is None or held[0] != os.getpid():  # a forked child builds its own
            publisher = None
            if isinstance(app, Celery):
                connection = app.connection_for_write()
                try:
                    if connection.transport.driver_type == "redis":
                        publisher = _Publisher(app, connection)
                except (AttributeError, TypeError, KeyError, IndexError) as exc:  # a kombu without what we use
                    log.warning("messages go through send_task: %s", exc)
                finally:
                    if publisher is None:
                        connection.release()
                # Anything else (Redis down) is raised, and the next send tries again.
            held = _publishers[app] = (os.getpid(), publisher)
    return held[1]


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
