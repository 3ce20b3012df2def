"""POST /api/v1/jobs for integrators: Idempotency-Key (safe retries) and Prefer: wait (a synchronous
answer), through the Flask test client against a real Redis.

No worker runs: a job is moved through its lifecycle with Jobs, as a worker moves it.
"""
from __future__ import annotations

import io
import threading
import time
import uuid

import pytest

from shared import keys
from shared.jobs import Jobs

from ..webutil import make_app, post_job

SECRET, OTHER = "s3cret-" + "x" * 32, "other-" + "y" * 32


@pytest.fixture
def app_settings():
    return {"max_content_length": 2 * 1024 * 1024}


def state_of(app) -> Jobs:
    return app.extensions["dreamq"].state


def idem(key: str, **more) -> dict:
    return {"Idempotency-Key": key, **more}


def error_of(r, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.data[:500])
    error = r.get_json()["error"]
    assert error["code"] == code, error
    return error


def queued_jobs(clean_redis) -> int:
    return clean_redis.zcard(keys.JOBS)


def run_to_the_end(app, clean_redis, job_id: str, status: str = "succeeded", delay: float = 0.5) -> threading.Thread:
    """From a thread, after ``delay``: start the job and finish it, as a worker would."""
    state = state_of(app)

    def work():
        time.sleep(delay)
        dispatch = clean_redis.hget(keys.job(job_id), "dispatch").decode()
        assert state.start(job_id, dispatch, "host:7") == "ok"
        time.sleep(0.2)
        assert state.finish(job_id, "host:7", status) == "ok"

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


# -- Idempotency-Key ---------------------------------------------------------------

def test_a_retry_with_the_same_key_returns_the_same_job_and_creates_none(app, client, clean_redis, jpeg):
    key = str(uuid.uuid4())
    first = post_job(client, jpeg, "photo.jpg", headers=idem(key), iterations="5")
    assert first.status_code == 202, first.get_json()
    job = first.get_json()
    assert "Idempotent-Replayed" not in first.headers
    # The test client picks a new multipart boundary, and the filename differs: the same request still.
    again = post_job(client, jpeg, "other-name.jpg", headers=idem(key), iterations="5")
    assert again.status_code == 202, again.get_json()
    assert again.get_json() == job  # the same 202 body, for the job as it is now
    assert again.headers["Location"] == first.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert queued_jobs(clean_redis) == 1 and clean_redis.llen("dreamq") == 1  # one job, one message

    # As it is now: the replay shows the job's current state.
    client.post(job["links"]["cancel"])
    replay = post_job(client, jpeg, headers=idem(key), iterations="5")
    assert replay.status_code == 202 and replay.get_json()["status"] == "canceled"
    assert replay.get_json()["id"] == job["id"]
    # The key expires with the job (DREAMQ_JOB_TTL_S, 7 days by default).
    stored = [k for k in clean_redis.keys(f"{keys.PREFIX}:idempotency:*")]
    assert len(stored) == 1 and 7 * 24 * 3600 - 100 < clean_redis.ttl(stored[0]) <= 7 * 24 * 3600
    assert key.encode() not in stored[0]  # hashed with its scope, never used raw in a key name


def test_the_sf_string_form_of_a_key_is_the_same_key(client, clean_redis, jpeg):
    a = post_job(client, jpeg, headers=idem("abc-123"))
    b = post_job(client, jpeg, headers=idem('"abc-123"'))
    assert a.status_code == b.status_code == 202 and a.get_json()["id"] == b.get_json()["id"]


def test_without_a_key_every_post_is_a_new_job(client, clean_redis, jpeg):
    ids = {post_job(client, jpeg).get_json()["id"] for _ in range(2)}
    assert len(ids) == 2 and queued_jobs(clean_redis) == 2


def test_the_same_key_with_a_different_request_is_422(client, clean_redis, jpeg, photo):
    from ..webutil import encode

    key = "order-42"
    assert post_job(client, jpeg, headers=idem(key), iterations="5").status_code == 202
    error = error_of(post_job(client, jpeg, headers=idem(key), iterations="6"), 422, "idempotency_key_reused")
    assert "Idempotency-Key" in error["fields"]
    other_image = encode(photo[::-1], "JPEG", quality=90)
    error_of(post_job(client, other_image, headers=idem(key), iterations="5"), 422, "idempotency_key_reused")
    error_of(client.post("/api/v1/jobs", json={"iterations": 5}, headers=idem(key)), 422, "idempotency_key_reused")
    assert queued_jobs(clean_redis) == 1


@pytest.mark.parametrize("value,why", [("", "empty"), ("x" * 256, "256 characters"), ("caf\u00e9", "ASCII"),
                                       ("tab\there", "ASCII"), ('""', "empty")])
def test_an_invalid_key_is_400_naming_the_header_and_creates_nothing(client, clean_redis, jpeg, value, why):
    error = error_of(post_job(client, jpeg, headers=idem(value)), 400, "invalid_idempotency_key")
    assert "Idempotency-Key" in error["message"] and why in error["fields"]["Idempotency-Key"]
    assert queued_jobs(clean_redis) == 0


def test_a_key_of_255_printable_characters_is_fine(client, jpeg):
    assert post_job(client, jpeg, headers=idem("k" * 254 + "~")).status_code == 202


def test_a_refused_request_does_not_use_up_its_key(client, clean_redis, jpeg):
    key = str(uuid.uuid4())
    error_of(post_job(client, jpeg, headers=idem(key), model="no-such-model"), 422, "invalid_params")
    error_of(post_job(client, None, headers=idem(key)), 422, "invalid_params")  # no image
    assert not clean_redis.keys(f"{keys.PREFIX}:idempotency:*")  # neither record nor lock is left
    ok = post_job(client, jpeg, headers=idem(key), iterations="5")  # the fixed retry succeeds at once
    assert ok.status_code == 202, ok.get_json()
    assert post_job(client, jpeg, headers=idem(key), iterations="5").get_json()["id"] == ok.get_json()["id"]
    assert queued_jobs(clean_redis) == 1


def test_a_failure_of_the_queue_does_not_store_the_key(redis_url, clean_redis, tmp_path, jpeg):
    client = make_app(redis_url, tmp_path, max_queued=1).test_client()
    assert post_job(client, jpeg).status_code == 202  # the queue is now full
    key = "retry-me"
    error_of(post_job(client, jpeg, headers=idem(key)), 503, "queue_full")
    clean_redis.delete(keys.QUEUED_JOBS)  # room again
    assert post_job(client, jpeg, headers=idem(key)).status_code == 202


def test_a_key_arriving_while_the_first_request_is_processed_is_409(app, clean_redis, jpeg):
    state = state_of(app)
    real_submit, entered, release = state.submit, threading.Event(), threading.Event()

    def slow_submit(*args, **kwargs):
        entered.set()
        assert release.wait(10)
        return real_submit(*args, **kwargs)

    state.submit = slow_submit
    key, results = "in-flight", {}
    first = threading.Thread(target=lambda: results.setdefault("first", post_job(app.test_client(), jpeg,
                                                                                 headers=idem(key))))
    first.start()
    try:
        assert entered.wait(10)  # the first request holds the key
        r = post_job(app.test_client(), jpeg, headers=idem(key))
        error = error_of(r, 409, "idempotency_key_in_use")
        assert "Idempotency-Key" in error["fields"] and r.headers["Retry-After"]
        # Another key is not held up.
        state.submit = real_submit
        assert post_job(app.test_client(), jpeg, headers=idem("another")).status_code == 202
    finally:
        release.set()
        first.join(10)
    state.submit = real_submit
    assert results["first"].status_code == 202, results["first"].get_json()
    replay = post_job(app.test_client(), jpeg, headers=idem(key))  # answered: now a replay, not a 409
    assert replay.status_code == 202 and replay.get_json()["id"] == results["first"].get_json()["id"]
    assert queued_jobs(clean_redis) == 2


def test_keys_are_scoped_to_the_caller(redis_url, clean_redis, tmp_path, jpeg):
    client = make_app(redis_url, tmp_path, api_tokens=[SECRET, OTHER]).test_client()
    ids = {}
    for token in (SECRET, OTHER):
        r = post_job(client, jpeg, headers=idem("same-key", Authorization=f"Bearer {token}"))
        assert r.status_code == 202, r.get_json()
        ids[token] = r.get_json()["id"]
    assert ids[SECRET] != ids[OTHER]
    again = post_job(client, jpeg, headers=idem("same-key", Authorization=f"Bearer {SECRET}"))
    assert again.get_json()["id"] == ids[SECRET]


def test_without_tokens_keys_are_scoped_to_the_client_address(client, clean_redis, jpeg):
    a = post_job(client, jpeg, headers=idem("k1"))
    other = client.post("/api/v1/jobs", data={"image": (io.BytesIO(jpeg), "p.jpg")},
                        content_type="multipart/form-data", headers=idem("k1"),
                        environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert a.status_code == other.status_code == 202 and a.get_json()["id"] != other.get_json()["id"]


def test_a_too_large_body_with_a_key_is_still_413(client, clean_redis, jpeg):
    key = "big"
    assert post_job(client, jpeg, headers=idem(key)).status_code == 202
    huge = b"\xff\xd8" + b"\0" * (3 * 1024 * 1024)  # over the 2 MB limit: refused before it is hashed
    r = post_job(client, huge, headers=idem(key))
    assert r.status_code == 413, r.get_json()


# -- Prefer: wait --------------------------------------------------------------------

def test_prefer_wait_answers_201_once_the_job_finishes(app, client, clean_redis, jpeg, monkeypatch):
    from shared.jobs import Jobs as JobsClass

    # The worker's thread needs the job's id before it can move it: learn it from submit.
    submitted: list[str] = []
    real = JobsClass.submit

    def spy(self, *args, **kwargs):
        job = real(self, *args, **kwargs)
        submitted.append(job.id)
        run_to_the_end(app, clean_redis, job.id, delay=0.5)
        return job

    monkeypatch.setattr(JobsClass, "submit", spy)
    t0 = time.monotonic()
    r = post_job(client, jpeg, headers={"Prefer": "wait=30"})
    took = time.monotonic() - t0
    assert r.status_code == 201, r.get_json()
    job = r.get_json()
    assert job["id"] == submitted[0] and job["status"] == "succeeded" and job["links"]["result"]
    assert r.headers["Preference-Applied"] == "wait=30"
    assert r.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert 0.5 < took < 10


def test_prefer_wait_gives_up_after_n_seconds_with_202(client, jpeg):
    t0 = time.monotonic()
    r = post_job(client, jpeg, headers={"Prefer": "wait=1"})
    took = time.monotonic() - t0
    assert r.status_code == 202 and r.get_json()["status"] == "queued"
    assert r.headers["Preference-Applied"] == "wait=1"
    assert 0.9 <= took < 5, took


def test_a_replay_of_a_finished_job_with_prefer_wait_is_201_at_once(app, client, clean_redis, jpeg):
    job = post_job(client, jpeg, headers=idem("done")).get_json()
    run_to_the_end(app, clean_redis, job["id"], status="failed", delay=0).join(10)
    plain = post_job(client, jpeg, headers=idem("done"))  # without Prefer: the 202 of before, as the job is now
    assert plain.status_code == 202 and plain.get_json()["status"] == "failed"
    t0 = time.monotonic()
    r = post_job(client, jpeg, headers=idem("done", Prefer="wait=5"))
    assert r.status_code == 201 and r.get_json()["status"] == "failed" and r.get_json()["id"] == job["id"]
    assert time.monotonic() - t0 < 2


def test_prefer_wait_with_a_replayed_key_waits_for_the_same_job(app, client, clean_redis, jpeg):
    first = post_job(client, jpeg, headers=idem("w1")).get_json()
    thread = run_to_the_end(app, clean_redis, first["id"], status="failed", delay=0.3)
    r = post_job(client, jpeg, headers=idem("w1", Prefer="wait"))
    thread.join(10)
    assert r.status_code == 201 and r.get_json()["id"] == first["id"] and r.get_json()["status"] == "failed"
    assert r.headers["Preference-Applied"] == "wait=60" and r.headers["Idempotent-Replayed"] == "true"
    assert queued_jobs(clean_redis) == 1


@pytest.mark.parametrize("prefer,applied", [("wait=600", "wait=60"), ("wait", "wait=60"), ("wait=7", "wait=7"),
                                            ("respond-async, wait=0", "wait=0"), ('WAIT="3"; foo=bar', "wait=3"),
                                            ("handling=lenient", None), ("wait=soon", None), ("wait=-1", None),
                                            ("wait=\u0661", None)])
def test_prefer_parsing(client, jpeg, monkeypatch, prefer, applied):
    import web.api

    seen = []

    def no_wait(job, seconds, left=None):
        seen.append(seconds)
        return job

    monkeypatch.setattr(web.api, "wait_for", no_wait)  # the parsing only: no real waiting here
    r = post_job(client, jpeg, headers={"Prefer": prefer})
    assert r.status_code == 202, r.get_json()
    assert r.headers.get("Preference-Applied") == applied
    assert seen == ([int(applied.split("=")[1])] if applied else [])


def test_twenty_concurrent_requests_with_one_key_make_one_job(app, clean_redis, jpeg):
    """Over real HTTP, 20 clients at once with one key: one job; every 202 names it, the others
    are 409 `idempotency_key_in_use` (the first was still being processed)."""
    from concurrent.futures import ThreadPoolExecutor

    import requests
    from werkzeug.serving import make_server

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_port}/api/v1/jobs"
    key = str(uuid.uuid4())
    barrier = threading.Barrier(20)

    def post(_):
        barrier.wait()
        return requests.post(url, files={"image": ("p.jpg", jpeg)}, data={"iterations": "5"},
                             headers={"Idempotency-Key": key}, timeout=60)

    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(post, range(20)))
    finally:
        httpd.shutdown()
    created = [r.json()["id"] for r in answers if r.status_code == 202]
    in_use = [r for r in answers if r.status_code == 409]
    assert created and len(created) + len(in_use) == 20, [r.status_code for r in answers]
    assert all(r.json()["error"]["code"] == "idempotency_key_in_use" for r in in_use)
    assert len(set(created)) == 1 and clean_redis.zcard(keys.JOBS) == 1
