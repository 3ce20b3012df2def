"""The result cache (shared/cache.py): a real Redis and the Flask test client, heartbeats written as a
worker writes them (with its weights fingerprints), jobs finished through Jobs as a worker finishes
them; and one real worker at the end."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from shared import keys
from shared.images import encode_png
from shared.jobs import Jobs
from shared.kinds import get_kind
from shared.kinds.image import RESULT
from shared.store import Store

from ..conftest import QUICK
from ..webutil import make_app, post_job, wait_for

FP, OTHER_FP = "a" * 64, "b" * 64
FIELDS = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": "2", "iterations": "4"}
ALICE, BOB = "alice-" + "a" * 32, "bob-" + "b" * 32


def beat(r, fingerprint: str | None = FP, worker_id: str = "host:1") -> None:
    """A ready worker's heartbeat holding vgg16_hed, with its weights fingerprint."""
    record = {"id": worker_id, "host": "host", "pid": 1, "device": "CPU", "backend": "tensorflow",
              "models": {"vgg16_hed": "ready", "inception_v3": "unavailable: no weights"}, "job": None,
              "bf16": {"native": False}, "ready": True, "started_at": time.time(),
              "fingerprints": {"vgg16_hed": fingerprint} if fingerprint else {}}
    r.set(keys.worker(worker_id), json.dumps(record), ex=30)
    r.sadd(keys.WORKERS, worker_id)


@pytest.fixture
def app_settings(clean_redis):
    """Default settings; the app's tests also get a ready worker's heartbeat (written after the
    flush), so that the web computes cache keys: the engine's identity comes from it."""
    beat(clean_redis)
    return {}


@pytest.fixture(scope="module")
def upload(tiny_photo) -> bytes:
    return encode_png(tiny_photo)


@pytest.fixture(scope="module")
def result_png(tiny_photo) -> bytes:
    return encode_png(255 - tiny_photo)


def state_of(app) -> Jobs:
    return app.extensions["dreamq"].state


def store_of(app) -> Store:
    return app.extensions["dreamq"].store


def submit(client, upload, headers=None, **fields) -> dict:
    r = post_job(client, upload, headers=headers, **{**FIELDS, **fields})
    assert r.status_code == 202, r.get_json()
    return r.get_json()


def run_as_worker(app, job_id: str, result: bytes, worker: str = "host:1", status: str = "succeeded") -> None:
    state = state_of(app)
    assert state.start(job_id, state.get(job_id).dispatch, worker) == "ok"
    url = store_of(app).put(job_id, RESULT, result) if status == "succeeded" else None
    assert state.finish(job_id, worker, status, **({"result_url": url} if url else {})) == "ok"


def entry_of(r, job_id: str) -> str:
    return keys.result_cache(json.loads(r.get(keys.job_cache_key(job_id)))["key"])


def store_root(app) -> Path:
    return Path(store_of(app).root)


def tree_bytes(root: Path) -> int:
    """Bytes of every file under ``root``."""
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def test_an_identical_job_is_answered_at_once_from_the_result(app, client, clean_redis, upload, result_png):
    first = submit(client, upload)
    assert first["status"] == "queued" and "cached" not in first["metrics"]
    run_as_worker(app, first["id"], result_png)
    assert clean_redis.get(entry_of(clean_redis, first["id"])) == first["id"].encode()

    t0 = time.monotonic()
    second = submit(client, upload)
    assert time.monotonic() - t0 < 1
    assert second["id"] != first["id"] and second["status"] == "succeeded"
    assert second["metrics"]["cached"] is True and second["metrics"]["cached_from"] == first["id"]
    assert second["metrics"]["run_s"] == 0 and second["params"] == first["params"]
    assert second["links"]["result"] == f"/api/v1/jobs/{second['id']}/result"
    assert clean_redis.llen("dreamq") == 1  # only the first job's message: no worker runs the second
    # It shares the source's files: no store folder of its own.
    assert not (store_root(app) / second["id"]).exists()
    r = client.get(second["links"]["result"])
    assert r.status_code == 200 and r.data == result_png
    assert client.get(f"/api/v1/jobs/{second['id']}").get_json()["status"] == "succeeded"
    # The counters count it as submitted and succeeded.
    metrics = client.get("/metrics").data.decode()
    assert 'dreamq_jobs_submitted_total{model="vgg16_hed"} 2.0' in metrics, metrics
    # A third identical job is answered from the copy (the entry now names it).
    third = submit(client, upload)
    assert third["status"] == "succeeded" and third["metrics"]["cached_from"] == second["id"]


def test_a_changed_parameter_or_cache_false_runs_the_job(app, client, upload, result_png):
    first = submit(client, upload)
    run_as_worker(app, first["id"], result_png)
    assert submit(client, upload, iterations="5")["status"] == "queued"
    assert submit(client, upload, seed="1")["status"] == "queued"
    opted_out = submit(client, upload, cache="false")
    assert opted_out["status"] == "queued" and "cache" not in opted_out["params"]
    assert submit(client, upload, cache="true")["status"] == "succeeded"
    r = post_job(client, upload, **FIELDS, cache="maybe")
    assert r.status_code == 422 and "cache" in r.get_json()["error"]["fields"]


@pytest.mark.parametrize("ending", ["canceled", "failed"])
def test_canceled_and_failed_jobs_are_never_sources(app, client, clean_redis, upload, ending):
    first = submit(client, upload)
    if ending == "canceled":
        assert client.post(f"/api/v1/jobs/{first['id']}/cancel").status_code in (200, 202)
    else:
        run_as_worker(app, first["id"], b"", status="failed")
    assert not clean_redis.exists(entry_of(clean_redis, first["id"]))
    assert submit(client, upload)["status"] == "queued"


def test_a_source_whose_result_is_gone_is_a_miss_and_its_entry_is_removed(app, client, clean_redis, upload,
                                                                          result_png):
    first = submit(client, upload)
    run_as_worker(app, first["id"], result_png)
    entry = entry_of(clean_redis, first["id"])
    store_of(app).delete(first["id"])
    assert submit(client, upload)["status"] == "queued"
    assert not clean_redis.exists(entry)


def test_an_expired_source_is_a_miss(app, client, clean_redis, upload, result_png):
    first = submit(client, upload)
    run_as_worker(app, first["id"], result_png)
    entry = entry_of(clean_redis, first["id"])
    clean_redis.delete(keys.job(first["id"]))  # the record expired before the entry
    assert submit(client, upload)["status"] == "queued"
    assert not clean_redis.exists(entry)


def test_other_weights_are_a_miss(app, client, clean_redis, upload, result_png):
    first = submit(client, upload)
    run_as_worker(app, first["id"], result_png)
    beat(clean_redis, OTHER_FP)  # the worker now runs other weights
    second = submit(client, upload)
    assert second["status"] == "queued"
    # A job keyed for the old weights, finished by a worker with others: no entry.
    beat(clean_redis, FP)
    third = submit(client, upload, iterations="5")
    beat(clean_redis, OTHER_FP)
    run_as_worker(app, third["id"], result_png)
    assert not clean_redis.exists(entry_of(clean_redis, third["id"]))
    beat(clean_redis, FP)
    assert submit(client, upload, iterations="5")["status"] == "queued"


def test_no_agreed_fingerprint_is_a_miss(app, client, clean_redis, upload, result_png):
    first = submit(client, upload)
    run_as_worker(app, first["id"], result_png)
    beat(clean_redis, OTHER_FP, "host:2")  # two ready workers disagree
    second = submit(client, upload)
    assert second["status"] == "queued" and not clean_redis.exists(keys.job_cache_key(second["id"]))
    clean_redis.delete(keys.worker("host:2"))
    beat(clean_redis, None)  # none reports one
    assert submit(client, upload)["status"] == "queued"


def two_token_app(redis_url, tmp_path, **settings):
    app = make_app(redis_url, tmp_path, api_tokens=[ALICE, BOB], **settings)
    alice, bob = ({"Authorization": f"Bearer {t}"} for t in (ALICE, BOB))
    return app, app.test_client(), alice, bob


def test_the_cache_across_two_tokens_is_a_miss_by_default(clean_redis, redis_url, tmp_path, upload, result_png):
    beat(clean_redis)
    app, client, alice, bob = two_token_app(redis_url, tmp_path)
    first = submit(client, upload, headers=alice)
    run_as_worker(app, first["id"], result_png)
    # Bob's identical job runs: an instant `succeeded` would tell him that someone sent this photo.
    second = submit(client, upload, headers=bob)
    assert second["status"] == "queued" and "cached" not in second["metrics"]
    assert first["id"] not in json.dumps(second)
    assert client.get(f"/api/v1/jobs/{first['id']}", headers=bob).status_code == 404
    # Once his own has run, he is answered from his own job; Alice still from hers.
    run_as_worker(app, second["id"], result_png)
    again = submit(client, upload, headers=bob)
    assert again["status"] == "succeeded" and again["metrics"]["cached_from"] == second["id"]
    mine = submit(client, upload, headers=alice)
    assert mine["status"] == "succeeded" and mine["metrics"]["cached_from"] == first["id"]


def test_the_cache_across_two_tokens_when_shared_never_shows_the_other_owners_id(
        clean_redis, redis_url, tmp_path, upload, result_png):
    beat(clean_redis)
    app, client, alice, bob = two_token_app(redis_url, tmp_path, cache_shared=True)
    first = submit(client, upload, headers=alice)
    run_as_worker(app, first["id"], result_png)
    second = submit(client, upload, headers=bob)
    assert second["status"] == "succeeded" and second["metrics"]["cached"] is True
    assert "cached_from" not in second["metrics"] and first["id"] not in json.dumps(second)
    shown = client.get(f"/api/v1/jobs/{second['id']}", headers=bob)
    assert shown.status_code == 200 and first["id"] not in shown.get_data(as_text=True)
    assert client.get(f"/api/v1/jobs/{second['id']}", headers=alice).status_code == 404
    assert client.get(f"/api/v1/jobs/{first['id']}", headers=bob).status_code == 404
    r = client.get(f"/api/v1/jobs/{second['id']}/result", headers=bob)
    assert r.status_code == 200 and r.data == result_png
    # The entry now names Bob's job: Alice's next hit does not show his id either.
    third = submit(client, upload, headers=alice)
    assert third["status"] == "succeeded" and "cached_from" not in third["metrics"]
    assert second["id"] not in json.dumps(third)


def test_cache_hits_count_against_the_submission_rate_limit(clean_redis, redis_url, tmp_path, upload, result_png):
    beat(clean_redis)
    app = make_app(redis_url, tmp_path, rate_limit_per_minute=3)
    client = app.test_client()
    first = submit(client, upload)
    run_as_worker(app, first["id"], result_png)
    for _ in range(2):  # the 2nd and 3rd submissions of the minute: hits
        assert submit(client, upload)["metrics"]["cached"] is True
    r = post_job(client, upload, **FIELDS)
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "rate_limited"


ZOOM = {**FIELDS, "kind": "zoom", "frames": "8", "format": "gif", "fps": "8"}


def finish_zoom(app, job_id: str, photo) -> list[bytes]:
    """Run a zoom job as a worker does: each frame stored, a preview, then the video; returns the frames."""
    state, store = state_of(app), store_of(app)
    kind = get_kind("zoom")
    job = state.get(job_id)
    assert state.start(job_id, job.dispatch, "host:1") == "ok"
    frames = []
    for n in range(int(job.params["frames"])):
        frames.append(encode_png(np.roll(photo, 5 * n, axis=1)))
        store.put(job_id, kind.file("frame", n), frames[-1])
    store.put(job_id, kind.file("preview"), frames[-1])
    url = store.put(job_id, kind.result_name(job.params), b"GIF89a" + bytes(50_000))
    assert state.finish(job_id, "host:1", "succeeded", result_url=url,
                        metrics={"frames_done": len(frames)}) == "ok"
    return frames


def readable_through(client, job: dict, frames: list[bytes]) -> bool:
    """Every file of the zoom job ``job`` reads through its own links."""
    base = f"/api/v1/jobs/{job['id']}"
    ok = client.get(f"{base}/result").status_code == 200 and client.get(f"{base}/preview").status_code == 200
    ok = ok and client.get(f"/jobs/{job['id']}/input").status_code == 200
    return ok and all(client.get(f"{base}/frames/{n}").data == frame for n, frame in enumerate(frames))


def sweep(app, now: float) -> None:
    """The expiry sweep of a worker, as if the clock said ``now``."""
    from shared.queue import make_celery
    from worker.worker import Worker

    settings = app.extensions["dreamq"].settings
    Worker(settings, make_celery(settings)).sweep_expired(every_s=0, now=now)


def test_repeated_cache_hits_of_a_multi_frame_job(app, client, clean_redis, upload, tiny_photo):
    source = submit(client, upload, **ZOOM)
    frames = finish_zoom(app, source["id"], tiny_photo)
    root = store_root(app)
    folder = tree_bytes(root / source["id"])
    assert folder > 8 * len(upload)

    before, hits = tree_bytes(root), []
    for _ in range(10):
        hit = submit(client, upload, **ZOOM)
        assert hit["status"] == "succeeded" and hit["metrics"]["cached"] is True, hit
        hits.append(hit)
    # A hit costs a record, not bytes: the store did not grow (copies made it 11 times the source's folder).
    assert tree_bytes(root) - before == 0, (before, tree_bytes(root), folder)
    assert sorted(p.name for p in root.iterdir()) == [source["id"]]
    for job in (source, *hits):
        assert readable_through(client, job, frames), job["id"]
    # A hit is finished, so it cannot be canceled: no cancel deletes the shared folder.
    assert client.post(f"/api/v1/jobs/{hits[0]['id']}/cancel").status_code == 409
    assert readable_through(client, source, frames)

    # The files outlive the source while a hit lives, and go with the last hit.
    time.sleep(1.1)
    last = submit(client, upload, **ZOOM)
    assert last["metrics"]["cached_from"] == hits[-1]["id"]
    state = state_of(app)
    created = {j["id"]: state.get(j["id"]).created_at for j in (source, *hits, last)}
    sweep(app, now=max(created[h["id"]] for h in hits) + state.ttl_s + 0.5)  # all but `last` have expired
    for job in (source, *hits):
        assert state.get(job["id"]) is None
    assert readable_through(client, last, frames)
    assert tree_bytes(root / source["id"]) == folder
    sweep(app, now=created[last["id"]] + state.ttl_s + 0.5)
    assert not (root / source["id"]).exists() and state.get(last["id"]) is None
    assert not clean_redis.zcard("dreamq:files:shared")


def test_a_source_about_to_expire_is_a_miss(app, client, clean_redis, upload, result_png):
    first = submit(client, upload)
    run_as_worker(app, first["id"], result_png)
    # Created nearly a TTL ago: the sweep may be deleting its files, so it answers no more jobs.
    old = time.time() - state_of(app).ttl_s + 60
    clean_redis.hset(keys.job(first["id"]), "created_at", old)
    clean_redis.zadd(keys.JOBS, {first["id"]: old})
    assert submit(client, upload)["status"] == "queued"


def test_a_real_worker_fills_the_cache(live_worker, tiny_photo):
    from web import create_app

    client = create_app(live_worker.settings).test_client()
    upload = encode_png(tiny_photo)
    fields = {k: str(v) for k, v in QUICK.items()}
    wait_for(lambda: client.get("/readyz").status_code == 200, 180, "a ready worker")
    first = submit(client, upload, **fields)
    done = live_worker.wait(first["id"], timeout=180)
    assert done.status == "succeeded", done.error
    wait_for(lambda: live_worker.redis.exists(entry_of(live_worker.redis, first["id"])), 10, "the cache entry")
    second = submit(client, upload, **fields)
    assert second["status"] == "succeeded" and second["metrics"]["cached"] is True
    a = client.get(f"/api/v1/jobs/{first['id']}/result")
    b = client.get(f"/api/v1/jobs/{second['id']}/result")
    assert a.status_code == b.status_code == 200 and a.data == b.data and a.data[:8] == b"\x89PNG\r\n\x1a\n"
