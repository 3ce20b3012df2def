"""Security properties, checked against real Redis, real workers and a real gunicorn where it matters:
no pickle through the queue, UUID4 ids, tokens on every API route, security headers, generated
store names only, no debug, a Redis password that never leaks (the schemathesis fuzz of the
OpenAPI contract is in test_fuzz.py)."""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from shared.queue import QUEUE, TASK, make_celery
from dreamq.redis_server import free_port, redis_server_binary
from shared.settings import Settings

from ..conftest import QUICK, Service
from ..webutil import encode, make_app, post_job

pytestmark = pytest.mark.slow  # a minute or more: scheduled first (tests/conftest.py)

TOKEN = "tok-" + "a1b2c3d4e5f6a7b8" * 2


# -- the queue runs no pickle ----------------------------------------------------------------


def test_celery_accepts_json_only():
    conf = make_celery(Settings(redis_url="redis://127.0.0.1:1/0")).conf
    assert list(conf.accept_content) == ["json"]
    assert conf.task_serializer == conf.result_serializer == conf.event_serializer == "json"
    assert conf.result_accept_content in (None, ["json"])  # None: the same as accept_content


class Pwn:
    """Unpickling this creates a directory: proof that pickle was executed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickle_message_is_refused_and_runs_nothing(service, tiny_photo, tmp_path):
    from shared.images import encode_png
    from shared.params import parse_params
    from shared.kinds.image import INPUT

    job = service.state.create(parse_params(QUICK).model_dump())
    job.input_url = service.store.put(job.id, INPUT, encode_png(tiny_photo))
    service.state.save_new(job)
    marker = tmp_path / "pickle-was-executed"
    # Sent before any worker runs, so we can see what is on the wire.
    service.celery.send_task(TASK, args=[job.id, job.dispatch], queue=QUEUE, serializer="pickle")
    service.celery.send_task(TASK, args=[job.id, job.dispatch, Pwn(str(marker))], queue=QUEUE, serializer="pickle")
    wire = [json.loads(raw) for raw in service.redis.lrange(QUEUE, 0, -1)]
    assert [m["content-type"] for m in wire] == ["application/x-python-serialize"] * 2

    service.start_worker()
    later = service.submit(tiny_photo, **{**QUICK, "octaves": 1, "iterations": 1})
    assert service.wait(later, timeout=120).status == "succeeded"
    assert service.redis.llen(QUEUE) == 0  # the worker took both pickle messages off the queue...
    assert not marker.exists()  # ...and never unpickled the payload
    assert service.procs[0].poll() is None
    log = service.read_logs()
    assert "ContentDisallowed" in log or "untrusted content" in log, log[-2000:]
    # A refused message is as good as lost: its job stays in its owner's queue, and a JSON message
    # starts it (fair share picks the job, not the message: shared/jobs.py), once, and only as JSON.
    done = service.wait(job.id, timeout=60)
    assert done.status == "succeeded" and done.attempts == 1 and not marker.exists()


# -- ids, tokens, headers, uploads, debug -------------------------------------------------------




@pytest.fixture(scope="module")
def png_bytes(tiny_photo) -> bytes:
    return encode(tiny_photo)


def test_job_ids_are_random_uuid4(app, png_bytes, clean_redis):
    client = app.test_client()
    ids = []
    for _ in range(20):
        r = post_job(client, png_bytes, **QUICK)
        assert r.status_code == 202, r.get_json()
        ids.append(r.get_json()["id"])
        assert r.headers["Location"] == f"/api/v1/jobs/{ids[-1]}"
    assert len(set(ids)) == 20
    for job_id in ids:
        parsed = uuid.UUID(job_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == job_id
    # Anything else is simply not a job: never a key or a path.
    for other in (str(uuid.uuid1()), ids[0].upper(), ids[0].replace("-", ""), "../" + ids[0], ids[0] + "/.."):
        assert client.get(f"/api/v1/jobs/{other}").status_code == 404, other


PUBLIC = {"ops.healthz", "ops.readyz", "metrics.metrics", "ops.openapi_json", "static", "pages.login",
          "pages.logout"}


def _url(rule, job_id: str) -> str:
    return rule.rule.replace("<job_id>", job_id).replace("<path:filename>", "css/app.css")


def test_with_api_tokens_every_route_but_health_requires_one(clean_redis, redis_url, tmp_path, png_bytes):
    app = make_app(redis_url, tmp_path, api_tokens=[TOKEN, "second-token-xyz-" + "0" * 32])
    client = app.test_client()
    job_id = post_job(client, png_bytes, headers={"Authorization": f"Bearer {TOKEN}"}, **QUICK) \
        .get_json()["id"]
    open_without_token, checked = set(), 0
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            url = _url(rule, job_id)
            anonymous = client.open(url, method=method, buffered=True)
            wrong = client.open(url, method=method, buffered=True, headers={"Authorization": "Bearer wrong"})
            right = client.open(url, method=method, buffered=True, headers={"Authorization": f"Bearer {TOKEN}"})
            checked += 1
            if rule.rule.startswith("/api/v1/"):
                for r in (anonymous, wrong):
                    assert r.status_code == 401, (method, url, r.status_code)
                    assert r.get_json()["error"]["code"] == "unauthorized"
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert right.status_code != 401, (method, url)
            elif rule.endpoint.startswith("pages.") and rule.endpoint not in ("pages.login", "pages.logout"):
                for r in (anonymous, wrong):
                    assert r.status_code == 302 and "/login" in r.headers["Location"], (method, url, r.status_code)
                assert right.status_code != 302 or "/login" not in right.headers.get("Location", ""), url
            if anonymous.status_code not in (401, 302):
                open_without_token.add(rule.endpoint)
    # The only doors without a token: liveness/readiness, metrics, the contract, static files, login and logout.
    assert open_without_token == PUBLIC, open_without_token
    assert checked >= 19
    # Tokens are compared in full: a prefix, a suffix or a padded one is no token.
    for bad in (TOKEN[:-1], TOKEN + "x", " " + TOKEN[1:], TOKEN.upper()):
        assert client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {bad}"}).status_code == 401, bad


def test_login_cookie_is_httponly_strict_and_next_is_local(clean_redis, redis_url, tmp_path):
    client = make_app(redis_url, tmp_path, api_tokens=[TOKEN]).test_client()
    r = client.post("/login", data={"token": TOKEN, "next": "//evil.example/x"})
    assert r.status_code == 303 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.post("/login", data={"token": "nope"}).status_code == 401


HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"}


def test_security_headers_on_every_page_and_response(app, png_bytes):
    client = app.test_client()
    job_id = post_job(client, png_bytes, **QUICK).get_json()["id"]
    for url in ("/", "/jobs", f"/jobs/{job_id}", "/jobs/not-a-job", "/login", "/no-such-page", "/api/v1/jobs",
                f"/api/v1/jobs/{job_id}", "/api/v1/jobs/nope", "/healthz", "/static/css/app.css"):
        r = client.get(url)
        for name, value in HEADERS.items():
            assert r.headers.get(name) == value, (url, name)
        csp = r.headers.get("Content-Security-Policy", "")
        for directive in ("default-src 'self'", "script-src 'self'", "object-src 'none'", "frame-ancestors 'none'"):
            assert directive in csp, (url, directive)
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_uploads_are_stored_under_generated_names_only(app, png_bytes, tmp_path, clean_redis):
    client = app.test_client()
    names = ["../../../../tmp/evil1.png", "..\\..\\evil2.png", "<script>evil3</script>.png", "/etc/evil4.png",
             "evil5.png;rm -rf ~", "%2e%2e%2fevil6.png", "e" * 300 + "vil7.png", "évil8 ☃.png"]
    ids = []
    for name in names:
        r = post_job(client, png_bytes, filename=name, **QUICK)
        assert r.status_code == 202, (name, r.get_json())
        ids.append(r.get_json()["id"])
    store = tmp_path / "data" / "store"
    files = sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())
    assert files == sorted(f"{i}/input.png" for i in ids)
    assert all(re.fullmatch(r"[0-9a-f-]{36}", p.name) for p in store.iterdir())
    # No trace of a client's file name on disk (anywhere under the test dir) or in Redis.
    assert not [p for p in tmp_path.rglob("*") if "vil" in p.name]
    dump = b"".join(clean_redis.dump(k) or b"" for k in clean_redis.keys("*"))
    assert b"vil" not in dump and b"script" not in dump


def test_debug_is_off_and_errors_reveal_no_internals(app):
    assert app.debug is False and not app.config["DEBUG"] and not app.testing

    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("internal detail /srv/secret.py")

    r = app.test_client().get("/api/v1/boom")
    assert r.status_code == 500 and r.get_json() == {"error": {"code": "internal_error",
                                                               "message": "internal server error (logged)"}}
    assert b"secret" not in r.data and b"Traceback" not in r.data


# -- a Redis password works and never leaks ------------------------------------------------------


def start_redis_with_password(directory: Path, password: str) -> tuple[subprocess.Popen, int]:
    import redis

    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--requirepass",
                             password, "--save", "", "--appendonly", "no", "--dir", str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    for _ in range(100):
        try:
            client.ping()
            return proc, port
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server with a password did not start")


def test_redis_password_works_and_never_leaks(tmp_path, tiny_photo, png_bytes):
    import redis
    import requests

    from bench.load import WebServer

    password = "pw-" + secrets.token_hex(12)
    proc, port = start_redis_with_password(tmp_path / "redis", password)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(f"redis://127.0.0.1:{port}/0").ping()  # the password is really required
    svc = Service(url, tmp_path, {"DREAMQ_MODELS": "vgg16_hed"})
    web = WebServer({"DREAMQ_REDIS_URL": url, "DREAMQ_DATA_DIR": str(tmp_path)}, tmp_path / "web.log",
                    workers=1, threads=4)
    seen: list[str] = []
    try:
        svc.start_worker()
        web.start()
        base = web.url
        r = requests.post(f"{base}/api/v1/jobs", data={k: str(v) for k, v in QUICK.items()},
                          files={"image": ("photo.png", png_bytes, "image/png")}, timeout=10)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert svc.wait(job_id, timeout=60).status == "succeeded"
        for path in ("/readyz", "/metrics", f"/api/v1/jobs/{job_id}", "/api/v1/jobs", "/api/v1/models",
                     f"/api/v1/jobs/{uuid.uuid4()}", "/api/v1/jobs?limit=0", "/", f"/jobs/{job_id}"):
            resp = requests.get(base + path, timeout=10)
            seen.append(f"{path} {resp.status_code} {resp.headers} {resp.text}")
        assert requests.get(f"{base}/readyz", timeout=10).json()["status"] == "ready"
        assert "dreamq_redis_up 1.0" in requests.get(f"{base}/metrics", timeout=10).text
        seen.append(json.dumps([svc.worker_info(p.pid) for p in svc.procs]))  # the heartbeats in Redis
        # A wrong password: refused, and said so without echoing any password.
        wrong = make_app(f"redis://:not-{password}@127.0.0.1:{port}/0", tmp_path / "wrong").test_client()
        refused = wrong.get("/readyz")
        assert refused.status_code == 503 and "Redis" in refused.get_json()["reason"]
        seen.append(refused.get_data(as_text=True))
        # Redis down: the errors and the logs name the problem, not the password.
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for method, path in (("GET", "/readyz"), ("GET", "/metrics"), ("GET", f"/api/v1/jobs/{job_id}"),
                             ("POST", "/api/v1/jobs"), ("GET", "/"), ("GET", "/jobs")):
            files = {"image": ("photo.png", png_bytes, "image/png")} if method == "POST" else None
            data = {k: str(v) for k, v in QUICK.items()} if method == "POST" else None
            resp = requests.request(method, base + path, data=data, files=files, timeout=10)
            assert resp.status_code in (200, 503), (path, resp.status_code)  # /metrics answers redis_up 0
            seen.append(f"{path} {resp.status_code} {resp.headers} {resp.text}")
        assert any("redis_unavailable" in s for s in seen)
    finally:
        web.stop()
        svc.stop()
        if proc.poll() is None:
            proc.kill()
    logs = svc.read_logs() + (tmp_path / "web.log").read_text()
    assert "Connected to redis://:**@" in logs or ":**@" in logs  # Celery masks it in its banner
    for text in seen + [logs]:
        assert password not in text
