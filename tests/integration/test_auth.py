"""Per-token ownership, tokens and sessions, safe redirects, generic errors and no-store caching,
against the real test Redis through the Flask test client."""
from __future__ import annotations

import io
import re
import uuid

import pytest
from pydantic import ValidationError

from shared import keys
from shared.job import job_json
from shared.settings import Settings
from shared.kinds.image import PREVIEW, RESULT

from ..webutil import encode, make_app, post_job

ALICE = "alice-" + "a" * 32
BOB = "bob-" + "b" * 32
ADMIN = "admin-" + "c" * 32
QUICK = {"model": "vgg16_hed", "octaves": "1", "iterations": "1"}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app_settings():
    return {"api_tokens": [ALICE, BOB], "admin_tokens": [ADMIN], "login_max_failures": 3,
            "allowed_hosts": ["dreamq.example"]}  # the cookie test serves that name too


def submit(client, jpeg, token: str | None) -> str:
    r = post_job(client, jpeg, headers=bearer(token) if token else None, **QUICK)
    assert r.status_code == 202, r.get_json()
    return r.get_json()["id"]


def login(client, token: str, **kw):
    return client.post("/login", data={"token": token, "next": "/jobs"}, **kw)


# -- jobs belong to whoever created them -------------------------------------------------------


def test_another_token_gets_404_on_every_job_route(app, client, clean_redis, jpeg, photo):
    job_id = submit(client, jpeg, ALICE)
    app.extensions["dreamq"].store.put(job_id, PREVIEW, encode(photo))
    base = f"/api/v1/jobs/{job_id}"
    for method, path in (("GET", base), ("GET", f"{base}/events"), ("GET", f"{base}/result"),
                         ("GET", f"{base}/preview"), ("POST", f"{base}/cancel")):
        r = client.open(path, method=method, headers=bearer(BOB), buffered=True)
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found", (method, path)
    assert clean_redis.hget(keys.job(job_id), "status") == b"queued"  # Bob's cancel did nothing
    assert client.get(base, headers=bearer(ALICE)).get_json()["id"] == job_id
    assert client.get(f"{base}/preview", headers=bearer(ALICE)).status_code == 200
    # The record holds a hash of the token, never the token.
    record = clean_redis.hgetall(keys.job(job_id))
    assert re.fullmatch(rb"[0-9a-f]{64}", record[b"owner"])
    dump = b"".join(clean_redis.dump(k) or b"" for k in clean_redis.keys("*"))
    assert ALICE.encode() not in dump
    assert "owner" not in client.get(base, headers=bearer(ALICE)).get_json()


def test_lists_show_only_ones_own_jobs_and_page_through_them(client, jpeg):
    alice = [submit(client, jpeg, ALICE) for _ in range(3)]
    bob = [submit(client, jpeg, BOB) for _ in range(2)]
    listed = client.get("/api/v1/jobs", headers=bearer(BOB)).get_json()
    assert [j["id"] for j in listed["jobs"]] == bob[::-1] and listed["next_cursor"] is None
    first = client.get("/api/v1/jobs?limit=2", headers=bearer(ALICE)).get_json()
    assert [j["id"] for j in first["jobs"]] == alice[:0:-1] and first["next_cursor"]
    rest = client.get(f"/api/v1/jobs?limit=2&cursor={first['next_cursor']}", headers=bearer(ALICE)).get_json()
    assert [j["id"] for j in rest["jobs"]] == alice[:1] and rest["next_cursor"] is None


def test_admin_tokens_see_and_cancel_everything(client, jpeg):
    ids = {submit(client, jpeg, ALICE), submit(client, jpeg, BOB)}
    listed = client.get("/api/v1/jobs", headers=bearer(ADMIN)).get_json()["jobs"]
    assert {j["id"] for j in listed} == ids
    for job_id in ids:
        r = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(ADMIN))
        assert r.status_code == 202 and r.get_json()["status"] == "canceled"


def test_pages_apply_the_same_ownership(app, client, jpeg, photo):
    job_id = submit(client, jpeg, ALICE)
    app.extensions["dreamq"].store.put(job_id, RESULT, encode(photo))
    app.extensions["dreamq"].redis.hset(keys.job(job_id), "status", "succeeded")
    assert login(client, BOB).status_code == 303
    for method, path in (("GET", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}/status.json"),
                         ("GET", f"/jobs/{job_id}/result"), ("GET", f"/jobs/{job_id}/preview"),
                         ("POST", f"/jobs/{job_id}/cancel")):
        assert client.open(path, method=method).status_code == 404, (method, path)
    assert job_id not in client.get("/jobs").get_data(as_text=True)
    assert login(client, ALICE).status_code == 303
    assert job_id in client.get("/jobs").get_data(as_text=True)
    assert client.get(f"/jobs/{job_id}/result").status_code == 200


def test_without_tokens_everyone_sees_every_job(clean_redis, redis_url, tmp_path, jpeg):
    client = make_app(redis_url, tmp_path).test_client()
    ids = [submit(client, jpeg, None) for _ in range(2)]
    assert [j["id"] for j in client.get("/api/v1/jobs").get_json()["jobs"]] == ids[::-1]
    assert client.get(f"/api/v1/jobs/{ids[0]}").status_code == 200
    assert client.get(f"/jobs/{ids[0]}").status_code == 200
    assert clean_redis.hget(keys.job(ids[0]), "owner") in (None, b"")  # no tokens, no owner


# -- tokens and sessions ------------------------------------------------------------------------


@pytest.mark.parametrize("field,variable", [("api_tokens", "DREAMQ_API_TOKENS"),
                                            ("admin_tokens", "DREAMQ_ADMIN_TOKENS")])
def test_short_tokens_are_refused_at_start_up(field, variable, monkeypatch):
    monkeypatch.setenv(variable, f"{'x' * 40},short-secret-31-characters-long")
    with pytest.raises(ValidationError) as info:
        Settings()
    message = str(info.value)
    assert variable in message and "32 characters" in message
    assert "short-secret" not in message  # the refused token never reaches a log
    monkeypatch.setenv(variable, "y" * 32)
    assert getattr(Settings(), field) == ["y" * 32]


def test_failed_logins_are_limited_per_address_across_processes(app, redis_url, tmp_path):
    client = app.test_client()
    for _ in range(3):
        assert login(client, "wrong-" + "w" * 32).status_code == 401
    blocked = login(client, ALICE)  # even the right token waits
    assert blocked.status_code == 429 and 1 <= int(blocked.headers["Retry-After"]) <= 300
    # Another gunicorn process (another app on the same Redis) holds the same count.
    other_process = make_app(redis_url, tmp_path, api_tokens=[ALICE], login_max_failures=3).test_client()
    assert login(other_process, ALICE).status_code == 429
    # Another address is not affected.
    assert login(client, ALICE, environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 303


def test_logout_clears_the_cookie(client):
    assert login(client, ALICE).status_code == 303
    assert client.get("/jobs").status_code == 200
    assert "Log out" in client.get("/jobs").get_data(as_text=True)
    r = client.post("/logout")
    assert r.status_code == 303 and r.headers["Location"] == "/login"
    assert "dreamq_token=;" in r.headers["Set-Cookie"] and "Expires=Thu, 01 Jan 1970" in r.headers["Set-Cookie"]
    r = client.get("/jobs")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")


@pytest.mark.parametrize("base_url,secure", [("http://localhost", False), ("http://127.0.0.1:5000", False),
                                             ("http://[::1]:5000", False), ("https://localhost", True),
                                             ("https://dreamq.example", True), ("http://dreamq.example", True)])
def test_the_cookie_is_secure_except_on_plain_http_localhost(client, base_url, secure):
    r = client.post("/login", data={"token": ALICE}, base_url=base_url)
    assert r.status_code == 303
    assert ("Secure" in r.headers["Set-Cookie"]) is secure


def test_the_api_takes_the_bearer_header_only(client, jpeg):
    assert login(client, ALICE).status_code == 303
    assert client.get("/jobs").status_code == 200  # the cookie works for the pages...
    r = client.get("/api/v1/jobs")  # ...not for the API
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
    assert post_job(client, jpeg, **QUICK).status_code == 401
    assert client.get("/api/v1/jobs", headers=bearer(ALICE)).status_code == 200


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Origin": "null"},
                                     {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                                     {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"}])
def test_cross_site_posts_from_pages_are_refused(client, jpeg, headers):
    assert login(client, ALICE).status_code == 303
    job_id = submit(client, jpeg, ALICE)
    for path, data in (("/submit", None), ("/submit.json", None), (f"/jobs/{job_id}/cancel", None),
                       ("/logout", None), ("/login", {"token": ALICE})):
        r = client.post(path, data=data, headers=headers)
        assert r.status_code == 403, (path, r.status_code)
    assert client.get(f"/jobs/{job_id}/status.json").get_json()["status"] == "queued"


@pytest.mark.parametrize("headers", [{"Origin": "http://localhost"}, {"Sec-Fetch-Site": "same-origin"}, {}])
def test_same_origin_posts_from_pages_pass(client, jpeg, headers):
    assert login(client, ALICE, headers=headers).status_code == 303
    job_id = submit(client, jpeg, ALICE)
    assert client.post(f"/jobs/{job_id}/cancel", headers=headers).status_code == 303


# -- redirects --------------------------------------------------------------------------------

HOSTILE_NEXT = ["/%09/evil.example", "//evil", "/%5Cevil", "/\\evil", "/%0D%0ASet-Cookie:%20x=1", "/a%0Ab",
                "https://evil.example/", "http:/evil", "javascript:alert(1)", "%2F%2Fevil", "/%00x", "/%E2%80%8Bx",
                "/%20/evil", "evil", ""]


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_next_outside_this_site_falls_back_to_root(clean_redis, redis_url, tmp_path, target):
    # No tokens: /login redirects every visitor straight to next.
    r = make_app(redis_url, tmp_path).test_client().get(f"/login?next={target}")
    assert r.status_code == 302 and r.headers["Location"] == "/", r.headers.get("Location")
    # Tokens: after a good login.
    client = make_app(redis_url, tmp_path, api_tokens=[ALICE]).test_client()
    r = client.post(f"/login?next={target}", data={"token": ALICE})
    assert r.status_code == 303 and r.headers["Location"] == "/", r.headers.get("Location")


def test_a_local_next_is_kept(app, client):
    r = app.test_client().get("/jobs?limit=3")
    assert r.status_code == 302 and r.headers["Location"] == "/login?next=/jobs?limit%3D3"
    r = client.post("/login", data={"token": ALICE, "next": "/jobs?limit=5"})
    assert r.status_code == 303 and r.headers["Location"] == "/jobs?limit=5"


# -- generic errors -----------------------------------------------------------------------------


def test_readyz_does_not_tell_the_redis_address(tmp_path):
    from dreamq.redis_server import free_port

    port = free_port()
    client = make_app(f"redis://127.0.0.1:{port}/0", tmp_path).test_client()
    r = client.get("/readyz")
    assert r.status_code == 503 and r.get_json() == {"status": "unready", "reason": "Redis unreachable"}
    assert str(port) not in r.get_data(as_text=True) and "127.0.0.1" not in r.get_data(as_text=True)


def test_a_failed_enqueue_shows_no_exception_text(clean_redis, redis_url, tmp_path, jpeg):
    from web import create_app

    class BrokenBroker:
        def send_task(self, *args, **kwargs):
            raise OSError("connect to secret-broker.internal:6379 refused")

    app = create_app(Settings(redis_url=redis_url, data_dir=tmp_path / "data"), celery=BrokenBroker())
    r = post_job(app.test_client(), jpeg, **QUICK)
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "redis_unavailable"
    assert "secret-broker" not in r.get_data(as_text=True)


def test_an_internal_error_gives_the_job_id_and_no_detail(clean_redis, redis_url, tmp_path):
    app = make_app(redis_url, tmp_path)

    @app.get("/api/v1/jobs/<job_id>/boom")
    def boom(job_id):
        raise RuntimeError("detail from /srv/secret.py")

    job_id = str(uuid.uuid4())
    r = app.test_client().get(f"/api/v1/jobs/{job_id}/boom")
    assert r.status_code == 500 and r.get_json()["error"]["code"] == "internal_error"
    assert job_id in r.get_json()["error"]["message"] and "secret" not in r.get_data(as_text=True)
    r = app.test_client().get("/api/v1/jobs/not-an-id<b>/boom")
    assert "not-an-id" not in r.get_data(as_text=True)  # only a real job id is echoed


def test_worker_failures_show_clients_no_store_url_or_exception_text(clean_redis, redis_url, tmp_path, jpeg):
    """The worker's failure messages, through its real ``_run`` against the test Redis."""
    import threading

    from shared.jobs import Jobs
    from shared.store import StoreError
    from worker.device import Bf16Support
    from worker.worker import Worker

    class SecretStore:
        def get(self, job_id, kind):
            raise StoreError("s3://secret-bucket/prefix: AccessDenied for key AKIASECRET")

        def put(self, job_id, kind, data):
            raise StoreError("s3://secret-bucket/prefix: AccessDenied for key AKIASECRET")

    client = make_app(redis_url, tmp_path).test_client()
    job_id = submit(client, jpeg, None)
    worker = Worker.__new__(Worker)
    worker.r, worker.id = clean_redis, "host:1"
    worker.jobs = Jobs(clean_redis)
    worker.store, worker.dreamers, worker.unavailable = SecretStore(), {"vgg16_hed": object()}, {}
    worker.fingerprints = {}
    worker.settings, worker.stopping = Settings(redis_url=redis_url), threading.Event()
    worker.bf16 = Bf16Support(native=False, device="cpu", reason="test")
    job = worker.jobs.get(job_id)
    assert worker.jobs.start(job_id, job.dispatch, worker.id) == "ok"
    assert worker._run(job_id) == "failed"
    # What a client sees (the operator's detail stays on the record, for admins and the log).
    error = job_json(worker.jobs.get(job_id))["error"]
    assert error["code"] == "input_unreadable" and "secret" not in str(error).lower()

    # A crash in the dream, and a store that fails on the result: the job id, no detail.
    class InputOnlyStore(SecretStore):
        def get(self, job_id, kind):
            return jpeg

    class Crashing:
        def dream(self, *args, **kwargs):
            raise RuntimeError("CUDA error at /secret/path.cu")

    class Finishing:
        def dream(self, image, *args, **kwargs):
            return image

    worker.store = InputOnlyStore()
    for dreamer, code in ((Crashing(), "internal_error"), (Finishing(), "store_error")):
        worker.dreamers = {"vgg16_hed": dreamer}
        job_id = submit(client, jpeg, None)
        assert worker.jobs.start(job_id, worker.jobs.get(job_id).dispatch, worker.id) == "ok"
        assert worker._run(job_id) == "failed"
        error = job_json(worker.jobs.get(job_id))["error"]
        assert error["code"] == code and job_id in error["message"], error
        assert "secret" not in str(error).lower() and "Error" not in error["message"]


# -- caching --------------------------------------------------------------------------------------


def test_json_and_pages_are_no_store_results_keep_private_caching(app, client, jpeg, photo):
    job_id = submit(client, jpeg, ALICE)
    app.extensions["dreamq"].store.put(job_id, PREVIEW, encode(photo))
    app.extensions["dreamq"].store.put(job_id, RESULT, encode(photo))
    app.extensions["dreamq"].redis.hset(keys.job(job_id), "status", "succeeded")
    for path in ("/api/v1/jobs", f"/api/v1/jobs/{job_id}", "/api/v1/jobs/nope", "/api/v1/models", "/healthz"):
        assert client.get(path, headers=bearer(ALICE)).headers["Cache-Control"] == "no-store", path
    assert client.get("/login").headers["Cache-Control"] == "no-store"
    assert client.get(f"/api/v1/jobs/{job_id}/result", headers=bearer(ALICE)).headers["Cache-Control"] \
        == "private, max-age=86400"
    assert client.get(f"/api/v1/jobs/{job_id}/preview", headers=bearer(ALICE)).headers["Cache-Control"] == "no-cache"
    assert login(client, ALICE).status_code == 303
    for path in ("/", "/jobs", f"/jobs/{job_id}", f"/jobs/{job_id}/status.json"):
        assert client.get(path).headers["Cache-Control"] == "no-store", path
    assert client.get(f"/jobs/{job_id}/result").headers["Cache-Control"] == "private, max-age=86400"


def test_the_pages_json_routes_serve_the_scripts_with_the_cookie(client, jpeg):
    assert login(client, ALICE).status_code == 303
    r = client.post("/submit.json", data={"image": (io.BytesIO(jpeg), "p.jpg"), **QUICK},
                    content_type="multipart/form-data", headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 202
    job = r.get_json()
    assert job["links"]["self"] == f"/jobs/{job['id']}/status.json" and job["links"]["cancel"].startswith("/jobs/")
    bad = client.post("/submit.json", data={"octaves": "99"}, content_type="multipart/form-data")
    assert bad.status_code == 422 and bad.get_json()["error"]["fields"]["octaves"]  # errors as JSON too
    assert client.get(job["links"]["self"]).get_json()["status"] == "queued"
