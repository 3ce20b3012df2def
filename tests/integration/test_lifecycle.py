"""The job lifecycle (shared/jobs.py) and job kinds (shared/kinds/), against a real Redis.

Transitions are made as the web and a worker make them, through ``Jobs``; no worker
process runs here except in the last test.
"""
from __future__ import annotations

import io

import pytest

from shared import hooks, keys
from shared.images import encode_png
from shared.jobs import Jobs, SubmitRefused, job_finished, job_progress, job_started, job_submitted
from shared.kinds import KINDS
from shared.params import ParamsError
from shared.queue import QUEUE, make_celery
from shared.settings import Settings
from shared.stats import FINISHED_COUNT, PENDING
from shared.store import Store

from ..conftest import QUICK
from ..webutil import make_app


@pytest.fixture
def jobs(clean_redis, redis_url, tmp_path):
    settings = Settings(_env_file=None, redis_url=redis_url, data_dir=tmp_path)
    hooks.install(settings)  # as every process of ours does: the metrics hear the transitions
    return Jobs(clean_redis, 3600, store=Store(f"file://{tmp_path}/store"), celery=make_celery(settings))


@pytest.fixture
def heard():
    """Every lifecycle signal sent in this process during the test, in order."""
    seen = []

    def listener(name):
        def receive(sender, **kw):
            seen.append((name, kw.get("job_id") or kw["job"].id, kw.get("status")))
        return receive

    receivers = {signal: listener(name) for name, signal in
                 [("submitted", job_submitted), ("started", job_started), ("progress", job_progress),
                  ("finished", job_finished)]}
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    yield seen
    for signal, receiver in receivers.items():
        signal.disconnect(receiver)


@pytest.fixture(scope="module")
def png(tiny_photo) -> bytes:
    return encode_png(tiny_photo)


def test_submit_stores_writes_and_sends_once(jobs, heard, png):
    job = jobs.submit(dict(QUICK), png)
    assert job.kind == "image" and job.status == "queued"
    assert jobs.store.get(job.id, KINDS["image"].file("input")) == png
    record = jobs.get(job.id)
    assert record.kind == "image" and record.params["layers"] == {"block3_conv3": 1.0}
    assert jobs.r.llen(QUEUE) == 1 and jobs.queue_depth() == 1
    assert heard == [("submitted", job.id, None)]
    assert jobs.r.sismember(PENDING, job.id)  # the metrics counted the submission


def test_submit_refuses_bad_params_and_full_queues_keeping_nothing(jobs, png):
    with pytest.raises(ParamsError) as bad:
        jobs.submit({"octaves": 0}, png)
    assert "octaves" in bad.value.fields
    with pytest.raises(ParamsError) as unknown:
        jobs.submit(dict(QUICK), png, kind="movie")
    assert unknown.value.fields == {"kind": "unknown kind 'movie'"}
    jobs.submit(dict(QUICK), png, max_queued=1)
    with pytest.raises(SubmitRefused) as full:
        jobs.submit(dict(QUICK), png, max_queued=1)
    assert full.value.reason == "queue_full"
    assert jobs.queue_depth() == 1 and jobs.r.llen(QUEUE) == 1 and jobs.r.zcard(keys.JOBS) == 1
    stored = list((jobs.store.fs.ls(jobs.store.root)))
    assert len(stored) == 1  # the refused job's input was removed


def test_job_finished_is_sent_once_for_every_way_a_job_ends(jobs, heard, png):
    done = jobs.submit(dict(QUICK), png)
    assert jobs.start(done.id, done.dispatch, "w:1") == "ok"
    assert jobs.start(done.id, done.dispatch, "w:2") == "running"  # a duplicate delivery: nothing sent
    assert jobs.update(done.id, "w:1", progress={"fraction": 0.5}) == "ok"
    assert jobs.finish(done.id, "w:1", "succeeded", result_url="x") == "ok"
    assert jobs.finish(done.id, "w:1", "failed") == "succeeded"  # already final: nothing sent

    canceled = jobs.submit(dict(QUICK), png)
    assert jobs.cancel(canceled.id) == "canceled"
    assert jobs.cancel(canceled.id) == "canceled"  # again: already final, nothing sent

    lost = jobs.submit(dict(QUICK), png)
    assert jobs.start(lost.id, lost.dispatch, "w:3") == "ok"
    assert jobs.requeue_lost(lost.id, "w:3", max_attempts=1)[0] == "failed"

    assert [h for h in heard if h[0] == "finished"] == [
        ("finished", done.id, "succeeded"), ("finished", canceled.id, "canceled"), ("finished", lost.id, "failed")]
    assert [h[0] for h in heard if h[1] == done.id] == ["submitted", "started", "progress", "finished"]
    # The metrics subscriber counted each at once, before any scrape.
    counts = {k.decode(): int(v) for k, v in jobs.r.hgetall(FINISHED_COUNT).items()}
    assert counts == {"succeeded|vgg16_hed": 1, "canceled|vgg16_hed": 1, "failed|vgg16_hed": 1}
    assert not jobs.r.smembers(PENDING)


def test_a_failing_subscriber_does_not_undo_a_transition(jobs, png):
    def broken(sender, **_):
        raise RuntimeError("a subscriber's bug")

    job_finished.connect(broken)
    try:
        job = jobs.submit(dict(QUICK), png)
        assert jobs.cancel(job.id) == "canceled"
    finally:
        job_finished.disconnect(broken)
    assert jobs.get(job.id).status == "canceled"


def test_the_api_names_kind_and_refuses_an_unknown_one(redis_url, clean_redis, tmp_path, png):
    client = make_app(redis_url, tmp_path).test_client()

    def post(**fields):
        return client.post("/api/v1/jobs", data={"image": (io.BytesIO(png), "p.png"), **fields},
                           content_type="multipart/form-data")

    r = post(kind="movie", octaves="0")
    assert r.status_code == 422
    assert set(r.get_json()["error"]["fields"]) == {"kind", "octaves"}  # both named at once
    r = post(kind="image", **{k: str(v) for k, v in QUICK.items()})
    assert r.status_code == 202 and r.get_json()["kind"] == "image"
    assert client.get(f"/api/v1/jobs/{r.get_json()['id']}").get_json()["kind"] == "image"
    spec = client.get("/api/openapi.json").get_json()
    assert spec["components"]["schemas"]["Job"]["properties"]["kind"]["enum"] == list(KINDS)


def test_a_worker_fails_a_job_of_a_kind_it_does_not_know(live_worker, png):
    svc = live_worker
    job = svc.state.new({"model": "vgg16_hed"}, kind="movie")
    svc.state.save_new(job)
    svc.state.send(job.id, job.dispatch)
    done = svc.wait(job.id, timeout=60)
    assert done.status == "failed" and done.error["code"] == "invalid_params"
    assert "movie" in done.error["message"]
    # The worker goes on: the next job runs.
    assert svc.wait(svc.submit(svc_photo(png), **QUICK), timeout=120).status == "succeeded"


def svc_photo(png: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
