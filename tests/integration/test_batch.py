"""Same-shape batching (shared/jobs.py, "Batching"): the pick on a real Redis, then real workers
with DREAMQ_BATCH=4 (engine-level equality: tests/unit/test_engine_batch.py)."""
import os
import signal

import pytest

from bench.cluster import wait_for
from shared.images import encode_png
from shared.jobs import Jobs
from shared.kinds import get_kind
from shared.params import parse_params

from ..conftest import QUICK
from ..webutil import post_job
from .test_fairness import A, B, queue

KEY, OTHER = "k" * 16, "o" * 16


@pytest.fixture
def jobs(clean_redis):
    return Jobs(clean_redis)


def keyed(jobs: Jobs, owner: str, n: int, key: str | None) -> list[str]:
    ids = queue(jobs, owner, n)
    for job_id in ids:
        jobs.r.hset(f"dreamq:job:{job_id}", "batch_key", key or "")
    return ids


def test_a_batch_takes_jobs_in_fair_order_while_they_share_the_key(jobs):
    a = keyed(jobs, A, 3, KEY)
    b = keyed(jobs, B, 1, KEY)
    assert jobs.pick_batch("w:1", 4) == [a[0], b[0], a[1], a[2]]  # fair order: A, B, then A's next
    for job_id in [*a, *b]:
        job = jobs.get(job_id)
        assert job.status == "running" and job.attempts == 1 and job.worker == "w:1"
    assert jobs.pick_batch("w:1", 4) == [] and jobs.queue_depth() == 0

    a = keyed(jobs, A, 3, KEY)
    b = keyed(jobs, B, 2, OTHER)
    # Turns alternate A, B, A...: the next fair pick has another key each time, so each batch stops at one.
    assert jobs.pick_batch("w:1", 4) == [a[0]]
    assert jobs.pick_batch("w:1", 4) == [b[0]]
    assert jobs.pick_batch("w:1", 4) == [a[1]]


def test_jobs_without_a_key_never_batch(jobs):
    a = keyed(jobs, A, 3, None)
    assert jobs.pick_batch("w:1", 4) == [a[0]]
    assert jobs.pick("w:1") == a[1]


def test_the_web_gives_a_job_its_batch_key(client, clean_redis, jpeg):
    def key_of(**fields):
        r = post_job(client, jpeg, "photo.jpg", model="vgg16_hed", iterations="5", **fields)
        assert r.status_code == 202, r.get_json()
        return Jobs(clean_redis).get(r.get_json()["id"]).batch_key

    plain = key_of()
    assert plain and key_of(seed="3") == plain  # the plain step draws nothing from the seed
    assert key_of(jitter="8") is None
    assert key_of(octaves="2") not in (None, plain)


def submit_keyed(svc, image, **params) -> str:
    """Submit as the web does, with the kind's batch key of the picture's shape."""
    kind = get_kind("image")
    parsed = parse_params(params)
    key = kind.batch_key_of(parsed, image.shape[0], image.shape[1], False)
    return svc.state.submit(params, encode_png(image), batch_key=key).id


def until(predicate, timeout: float = 60, what: str = "a condition"):
    return wait_for(predicate, timeout, what)


def stepping(svc, job_id: str):
    job = svc.state.get(job_id)
    return job if job.status == "running" and job.progress.get("fraction", 0) > 0 else None


def test_a_worker_runs_four_jobs_as_one_batch_and_a_cancel_stops_only_its_job(service, tiny_photo):
    first = [submit_keyed(service, tiny_photo, **QUICK) for _ in range(4)]  # queued before the worker starts
    service.start_worker(DREAMQ_BATCH="4")
    for job_id in first:
        job = service.wait(job_id)
        assert job.status == "succeeded", job.error
        assert job.metrics["batch"] == 4 and job.attempts == 1
        assert job.progress["fraction"] == 1.0 and job.preview_url and job.result_url
        assert job.metrics["timings"]["steps_s"] > 0
    assert len({service.state.get(i).worker for i in first}) == 1

    # A second batch, one of whose jobs is canceled while the batch runs.  Queued while the worker runs
    # another job (another key): an idle worker would start the first before the others are queued.
    blocker = submit_keyed(service, tiny_photo, **{**QUICK, "iterations": 30})
    until(lambda: stepping(service, blocker), what="the first job in its steps")
    second = [submit_keyed(service, tiny_photo, **{**QUICK, "iterations": 40}) for _ in range(4)]
    until(lambda: all(stepping(service, i) for i in second), what="the batch in its steps")
    assert service.state.cancel(second[1]) == "running"
    canceled = service.wait(second[1])
    assert canceled.status == "canceled"
    for job_id in (second[0], second[2], second[3]):
        job = service.wait(job_id)
        assert job.status == "succeeded" and job.metrics["batch"] == 4 and job.progress["fraction"] == 1.0


def test_a_batch_whose_worker_is_killed_runs_again_and_succeeds(service, tiny_photo):
    ids = [submit_keyed(service, tiny_photo, **{**QUICK, "iterations": 40}) for _ in range(4)]
    service.start_worker(DREAMQ_BATCH="4")
    running = until(lambda: all(stepping(service, i) for i in ids) and [service.state.get(i) for i in ids],
                    what="the batch in its steps")
    assert len({job.worker for job in running}) == 1
    victim = int(running[0].worker.rsplit(":", 1)[1])
    os.kill(victim, signal.SIGKILL)
    service.start_worker(DREAMQ_BATCH="4")  # requeues the batch once the victim's heartbeat expires
    for job_id in ids:
        job = service.wait(job_id, timeout=120)
        assert job.status == "succeeded" and job.attempts == 2
        assert int(job.worker.rsplit(":", 1)[1]) != victim


def test_jobs_picked_together_that_cannot_batch_run_one_by_one(service, tiny_photo):
    """A key that lies (two shapes): the worker sees it and runs each job alone, as ``_run`` would."""
    from shared.settings import Settings
    from worker.dream import Dreamer
    from worker.models import load_model
    from worker.worker import Worker

    params = {**QUICK, "iterations": 2}
    ids = [service.state.submit(params, encode_png(image), batch_key=KEY).id
           for image in (tiny_photo, tiny_photo[:80, :90])]
    settings = Settings(_env_file=None, redis_url=service.settings.redis_url, data_dir=service.settings.data_dir,
                        batch=4)
    worker = Worker(settings, service.celery)
    worker.dreamers["vgg16_hed"] = Dreamer(load_model("vgg16_hed"))
    job = service.state.get(ids[0])
    assert worker.run(job.id, job.dispatch) == "batch:2:succeeded,succeeded"
    for job_id in ids:
        job = service.state.get(job_id)
        assert job.status == "succeeded" and job.attempts == 1 and "batch" not in job.metrics
