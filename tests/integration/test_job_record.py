"""The job model against a real Redis: a record written by the lifecycle (shared/jobs.py) reads back
as the model, and the model written back reads the same (tests/unit/test_job_model.py: the rest)."""
from shared.job import FAILED, QUEUED, Job, dumps, job_json

from ..unit.test_job_model import _frozen_job_json


def test_a_record_written_by_jobs_round_trips(clean_redis):
    from shared import keys
    from shared.jobs import Jobs

    jobs = Jobs(clean_redis, ttl_s=600)
    job = jobs.new({"model": "inception_v3", "octaves": 2}, warnings=["w"], owner="abc")
    job.webhook = {"url": "https://example.com/h", "events_filter": ["completed"]}
    assert jobs.try_save_new(job) == "ok"
    assert clean_redis.hget(keys.job(job.id), "status") == b"queued"  # a Status is written as its string
    got = jobs.get(job.id)
    assert got == Job.from_redis(clean_redis.hgetall(keys.job(job.id)))
    assert (got.id, got.status, got.params, got.created_at, got.warnings, got.owner, got.webhook) == \
        (job.id, QUEUED, job.params, job.created_at, ["w"], "abc", job.webhook)
    assert dumps(job_json(got, 1)) == dumps(_frozen_job_json(got, 1))

    assert jobs.start(job.id, job.dispatch, "w1") == "ok"
    assert jobs.update(job.id, "w1", progress={"octave": 1, "step": 2, "loss": 0.5}, preview_url="s3://p") == "ok"
    assert jobs.finish(job.id, "w1", FAILED, error={"code": "oom", "message": "no memory"}, dream_s=0.25) == "ok"
    done = jobs.get(job.id)
    assert (done.status, done.worker, done.attempts, done.error, done.progress["loss"], done.preview_url) == \
        (FAILED, "w1", 1, {"code": "oom", "message": "no memory"}, 0.5, "s3://p")
    assert done.metrics["dream_s"] == 0.25 and done.started_at and done.finished_at
    assert dumps(job_json(done)) == dumps(_frozen_job_json(done))

    # Written back from the model, read back the same.
    clean_redis.delete(keys.job(job.id))
    clean_redis.hset(keys.job(job.id), mapping=done.to_redis())
    assert jobs.get(job.id) == done
