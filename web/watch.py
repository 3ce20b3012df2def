"""Following a job as it runs: one loop that reads its record every POLL_S until it is finished, a
deadline passes or the client hangs up, under both the event stream (``GET /api/v1/jobs/<id>/events``,
server-sent events) and ``Prefer: wait`` (integrations.wait_for).  Under the gevent worker its sleep
yields: a watcher holds a greenlet, not a thread.
"""
from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator

import redis

from shared.job import QUEUED, Job, dumps, job_json
from shared.jobs import Jobs

POLL_S = 0.25
KEEP_ALIVE_S = 4  # an idle event stream sends a comment this often: proxies close silent streams

# What watch() yields besides the record: IDLE before each sleep, and last, when the record could
# not be followed to its end, why: Redis failed, the record expired, or the time ran out.
IDLE, LOST, GONE, TIMEOUT = "idle", "lost", "gone", "timeout"


def watch(state: Jobs, job_id: str, seconds: float, left: Callable[[], bool],
          job: Job | None = None) -> Iterator[Job | str]:
    """Yield the job's record after each read (``job`` first, unread, when the caller has it) and IDLE
    before each sleep, until the job is finished or the client has ``left()``; or, last, LOST, GONE
    or TIMEOUT (``seconds`` passed)."""
    deadline = time.monotonic() + seconds
    while True:
        if job is None:
            try:
                job = state.get(job_id)
            except redis.RedisError:
                yield LOST
                return
            if job is None:
                yield GONE
                return
        yield job
        if job.finished:
            return
        if time.monotonic() >= deadline:
            yield TIMEOUT
            return
        if left():  # stop now, not at the next write that fails
            return
        yield IDLE
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        job = None


def client_left(conn) -> bool:
    """Whether the client of an event stream has closed its end: readable with nothing to read (EOF).

    A client sends nothing after its GET, so a readable socket means EOF or a reset."""
    if conn is None:
        return False
    try:
        if not select.select([conn], [], [], 0)[0]:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # reset, or already closed
        return True


def event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {dumps(data)}\n\n"


ENDINGS = {LOST: event("error", {"error": {"code": "redis_unavailable", "message": "lost the job queue"}}),
           GONE: event("error", {"error": {"code": "not_found", "message": "the job has expired"}}),
           TIMEOUT: event("timeout", {"message": "stream ended; reconnect for more"})}


def event_stream(state: Jobs, job_id: str, seconds: float, conn) -> Iterator[str]:
    """The job's events: ``progress`` at each change (its queue position included), ``end`` once it
    is finished; ``timeout`` after ``seconds``; ``error`` when it expired or Redis failed.

    It runs after the view has returned: only its arguments, no request context."""
    yield "retry: 2000\n\n"
    last, last_sent = None, time.monotonic()
    for seen in watch(state, job_id, seconds, left=lambda: client_left(conn)):
        if isinstance(seen, Job):
            try:
                data = job_json(seen, state.queue_position(seen) if seen.status == QUEUED else None)
            except redis.RedisError:
                yield ENDINGS[LOST]
                return
            if data != last:
                yield event("end" if seen.finished else "progress", data)
                last, last_sent = data, time.monotonic()
        elif seen == IDLE:
            if time.monotonic() - last_sent > KEEP_ALIVE_S:  # a failed write ends the stream
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
        else:
            yield ENDINGS[seen]
