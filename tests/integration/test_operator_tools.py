"""Operators' tools without surprises (issue 21): `celery -A worker inspect` finds the embedded Redis
of a `dreamq up` with nothing exported, and Celery's task events (what Flower shows) say FAILURE for a
failed dream and REVOKED for a job canceled while queued.  Real CLI, Redis, worker and events.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from contextlib import contextmanager

import pytest

from shared.queue import announce_revoked, task_id

from ..conftest import QUICK, ROOT
from ..webutil import _stop, _up, _wait_ready
from .test_celery_tools import Events, celery
from .test_queue import until


def probe(app, hostname: str) -> None:
    with app.events.default_dispatcher(hostname=hostname) as dispatcher:
        dispatcher.send("dreamq-probe")  # a type of no Celery group: the state ignores it


@contextmanager
def listening(app):
    """Celery's events as Flower gets them, once the receiver hears them (probes until one comes back)."""
    events, name = Events(app), f"dreamq-probe@{uuid.uuid4().hex[:8]}"

    def heard() -> bool:
        probe(app, name)
        return any(e["hostname"] == name for e in events.of_type("dreamq-probe"))

    until(heard, timeout=30, what="the event receiver subscribed")
    try:
        yield events
    finally:
        events.stop()
        probe(app, name)  # wakes the receiver, which sees that it must stop and lets go of Redis


def task_state(events: Events, dispatch: str, state: str, timeout: float = 60):
    """The task of the message sent with ``dispatch``, once the events have put it in ``state``."""
    return until(lambda: (t := events.state.tasks.get(task_id(dispatch))) is not None and t.state == state and t,
                 timeout=timeout, what=f"task {task_id(dispatch)} {state}")


# -- celery inspect beside `dreamq up` ---------------------------------------------------------

@pytest.mark.slow  # `dreamq up` starts Redis, the delivery process and gunicorn
def test_celery_inspect_finds_the_embedded_redis_of_dreamq_up(tmp_path):
    from dreamq.redis_server import free_port

    port, log = free_port(), tmp_path / "up.log"
    # --workers 0: the delivery process is the Celery node that answers (no model to load).
    proc = _up(tmp_path / "data", port, log.open("w"), workers=0)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", proc, path="/healthz", log=log)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMQ_")}
        node = f"dreamq-webhooks@{socket.gethostname()}"

        def ping(cwd, **extra) -> dict:
            """The nodes' answers; {} when none answered (the delivery process may still be starting)."""
            out = subprocess.run(celery("-A", "worker", "inspect", "ping", "--json", "--timeout", "5"),
                                 env={**env, "PYTHONPATH": str(ROOT), **extra}, cwd=cwd, capture_output=True,
                                 text=True, timeout=120, check=False)
            assert "Traceback" not in out.stderr, out.stderr  # e.g. no Redis URL: the app would not build
            return json.loads(out.stdout.strip().splitlines()[0]) if out.returncode == 0 else {}

        # From a directory whose ./data is the data directory, then from anywhere with DREAMQ_DATA_DIR.
        assert until(lambda: ping(tmp_path).get(node), timeout=60, what="a pong") == {"ok": "pong"}
        assert ping(ROOT, DREAMQ_DATA_DIR=str(tmp_path / "data"))[node] == {"ok": "pong"}
    finally:
        _stop(proc)


# -- what Flower shows: FAILURE and REVOKED ----------------------------------------------------

@pytest.mark.slow  # a real worker loads its model
def test_a_failed_dream_is_a_failure_in_the_task_events(live_worker, tiny_photo, clean_redis):
    with listening(live_worker.celery) as events:
        job_id = live_worker.submit(tiny_photo, model="inception_v3", iterations=1)  # no weights on this worker
        task = task_state(events, live_worker.state.get(job_id).dispatch, "FAILURE")
        assert job_id in task.exception and task.name == "dreamq.dream"
        job = live_worker.wait(job_id)
        assert job.status == "failed" and job.error["code"] == "model_unavailable" and job.attempts == 1
        # Acked and never retried: the next job runs, and the failed one's record is as it was written.
        ok = live_worker.submit(tiny_photo, **QUICK)
        task_state(events, live_worker.state.get(ok).dispatch, "SUCCESS")
        assert live_worker.state.get(job_id) == job and not events.of_type("task-retried")
        assert clean_redis.llen("dreamq") == 0 and clean_redis.hlen("unacked") == 0
        assert "Traceback" not in live_worker.read_logs()  # an expected failure: one line in the log


def test_a_job_canceled_while_queued_is_revoked_in_the_task_events(service, tiny_photo):
    with listening(service.celery) as events:  # no worker: the job stays queued
        job_id = service.submit(tiny_photo, **QUICK)
        dispatch = service.state.get(job_id).dispatch
        task_state(events, dispatch, "PENDING")  # its task-sent event, under the same task id
        assert service.state.cancel(job_id) == "canceled"
        announce_revoked(service.celery, dispatch)  # what Jobs.cancel is to do (below)
        assert task_state(events, dispatch, "REVOKED").revoked


def test_cancel_itself_announces_the_revoke(service, tiny_photo):
    with listening(service.celery) as events:
        job_id = service.submit(tiny_photo, **QUICK)
        dispatch = service.state.get(job_id).dispatch
        task_state(events, dispatch, "PENDING")
        service.state.cancel(job_id)
        task_state(events, dispatch, "REVOKED", timeout=5)
