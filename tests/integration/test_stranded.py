"""No stranded job: a job whose record says `queued` runs even when its broker message is gone.

One real `dreamq worker` for the module (DREAMQ_HEARTBEAT_TTL_S=3: a job counts as stranded
after 2 x 3 = 6 s with no message reaching an idle worker).  worker/worker.py explains the rule.
"""
from __future__ import annotations

import time

import pytest

from shared.jobs import Jobs
from shared.queue import QUEUE

from ..conftest import QUICK, Service
from .test_queue import in_its_steps

pytestmark = pytest.mark.slow  # a minute or more: scheduled first (tests/conftest.py)

LONG = {**QUICK, "octaves": 8, "octave_scale": 1.0, "iterations": 500, "max_loss": "none"}  # canceled when done
GOAL_S = 90  # a stranded job starts within this of a ready worker becoming idle


def test_redispatch_acts_once_and_only_on_a_job_sent_before_the_cutoff(clean_redis):
    state = Jobs(clean_redis)
    job = state.create({"model": "vgg16_hed"})
    state.save_new(job)
    sent = clean_redis.zscore("dreamq:queued", job.id)
    # Sent after the cutoff (its message may still be on its way): left alone.
    assert state.redispatch(job.id, cutoff=sent - 1)[0] == "recent"
    assert state.get(job.id).dispatch == job.dispatch
    # Sent before it: a new token, and a new dispatch time, so a second decision on the same
    # evidence (another idle worker, the same cutoff) does nothing.
    cutoff = sent + 0.001
    while time.time() <= cutoff:  # the clock must pass the cutoff, as it has for a real decision
        pass
    outcome, token = state.redispatch(job.id, cutoff=cutoff)
    assert outcome == "ok" and state.get(job.id).dispatch == token != job.dispatch
    assert state.redispatch(job.id, cutoff=cutoff)[0] == "recent"
    assert state.get(job.id).dispatch == token
    assert state.get(job.id).enqueued_at == job.enqueued_at  # queue_s still counts the whole wait
    # A job that started, or was canceled, is never dispatched again.
    assert state.start(job.id, token, "w:1") == "ok"
    assert state.redispatch(job.id, cutoff=time.time() + 1)[0] == "running"
    gone = state.create({"model": "vgg16_hed"})
    state.save_new(gone)
    state.cancel(gone.id)
    assert state.redispatch(gone.id, cutoff=time.time() + 1)[0] == "canceled"


@pytest.fixture(scope="module")
def svc(redis_url, tmp_path_factory):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    service = Service(redis_url, tmp_path_factory.mktemp("stranded"), {})
    service.start_worker()
    yield service
    service.stop()


def test_a_queued_job_whose_message_is_deleted_still_runs(svc, tiny_photo):
    busy = svc.submit(tiny_photo, **LONG)
    in_its_steps(svc, busy)
    job_id = svc.submit(tiny_photo, **QUICK)
    first = svc.state.get(job_id)
    # Its message is the only one in the Celery list (the busy job's was taken): delete it.
    assert svc.redis.llen(QUEUE) == 1 and svc.redis.delete(QUEUE) == 1
    assert svc.state.cancel(busy) == "running"
    idle_at = svc.wait(busy).finished_at
    job = svc.wait(job_id, timeout=120)
    assert job.status == "succeeded" and job.attempts == 1
    assert job.dispatch != first.dispatch  # dispatched again, with a new token
    delay = job.started_at - idle_at
    print(f"\nstranded job started {delay:.1f} s after the worker became idle")
    assert delay < GOAL_S


def test_a_job_recorded_but_never_sent_runs_after_the_grace_only(svc, tiny_photo):
    """The web died between writing the record and sending the message."""
    from shared.images import encode_png
    from shared.params import parse_params
    from shared.kinds.image import INPUT

    job = svc.state.create(parse_params(QUICK).model_dump())
    job.input_url = svc.store.put(job.id, INPUT, encode_png(tiny_photo))
    svc.state.save_new(job)  # and no message
    done = svc.wait(job.id, timeout=120)
    assert done.status == "succeeded" and done.attempts == 1 and done.dispatch != job.dispatch
    waited = done.started_at - job.enqueued_at
    grace = 2 * float(svc.env["DREAMQ_HEARTBEAT_TTL_S"])
    print(f"\nnever-sent job started {waited:.1f} s after its record (grace {grace:g} s)")
    assert grace <= waited < GOAL_S
    # A job sent as usual to the same idle worker runs on its own message, not a second one.
    normal = svc.submit(tiny_photo, **QUICK)
    token = svc.state.get(normal).dispatch
    ran = svc.wait(normal)
    assert ran.status == "succeeded" and ran.dispatch == token and ran.metrics["queue_s"] < grace
