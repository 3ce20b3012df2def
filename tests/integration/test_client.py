"""`dreamq submit / status / cancel` against the real web app served over real HTTP."""
from __future__ import annotations

import json
import threading
import time

import pytest
from click.testing import CliRunner
from PIL import Image
from werkzeug.serving import make_server

from shared import keys
from dreamq.redis_server import free_port
from shared.kinds.image import PREVIEW, RESULT

from ..webutil import encode, make_app, wait_for


@pytest.fixture
def server(clean_redis, redis_url, tmp_path):
    """The app (``app``, or one made with ``overrides``) on a real port; yields (url, app)."""
    def serve(app=None, **overrides):
        app = app or make_app(redis_url, tmp_path, **overrides)
        httpd = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_port}", app

    servers: list = []
    yield serve
    for httpd in servers:
        httpd.shutdown()


@pytest.fixture
def image_file(tmp_path, photo):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(photo, "JPEG"))
    return path


def dreamq(*args):
    from dreamq.cli import main  # the real entry point, with the client commands registered

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_submit_prints_the_job_id_and_status_shows_it(server, image_file, clean_redis):
    url, _ = server()
    r = dreamq("submit", image_file, "--server", url, "--model", "vgg16_hed", "--iterations", "4")
    assert r.exit_code == 0, r.output
    job_id = r.stdout.strip()
    assert clean_redis.hget(keys.job(job_id), "status") == b"queued"
    assert b'"iterations": 4' in clean_redis.hget(keys.job(job_id), "params")
    r = dreamq("status", job_id, "--server", url)
    assert r.exit_code == 0 and job_id in r.stdout and "queued (#1)" in r.stdout
    r = dreamq("status", job_id, "--server", url, "--json")
    assert r.exit_code == 0 and '"status": "queued"' in r.stdout


def test_server_from_environment(server, image_file, monkeypatch):
    url, _ = server()
    monkeypatch.setenv("DREAMQ_SERVER", url)
    assert dreamq("submit", image_file).exit_code == 0


def test_client_errors_exit_2_with_the_server_message(server, image_file, tmp_path):
    url, _ = server()
    r = dreamq("submit", image_file, "--server", url, "--octaves", "99")
    assert r.exit_code == 2 and "octaves" in r.stderr and r.stdout == ""
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    r = dreamq("submit", text, "--server", url)
    assert r.exit_code == 2 and "415" in r.stderr
    assert dreamq("submit", tmp_path / "missing.jpg", "--server", url).exit_code == 2
    assert dreamq("status", "nope", "--server", url).exit_code == 2
    assert dreamq("cancel", "nope", "--server", url).exit_code == 2


def test_unreachable_server_exits_4(image_file):
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("submit", image_file), ("status", "x"), ("cancel", "x")):
        r = dreamq(*args, "--server", url)
        assert r.exit_code == 4 and "cannot reach" in r.stderr


def test_unavailable_queue_exits_4(tmp_path, image_file):
    from web import create_app
    from shared.settings import Settings

    app = create_app(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", data_dir=tmp_path))
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        r = dreamq("submit", image_file, "--server", f"http://127.0.0.1:{httpd.server_port}")
        assert r.exit_code == 4 and "503" in r.stderr
    finally:
        httpd.shutdown()


def test_cancel(server, image_file, clean_redis):
    url, _ = server()
    job_id = dreamq("submit", image_file, "--server", url).stdout.strip()
    r = dreamq("cancel", job_id, "--server", url)
    assert r.exit_code == 0 and "canceled" in r.stdout
    assert dreamq("cancel", job_id, "--server", url).exit_code == 0
    assert dreamq("status", job_id, "--server", url).exit_code == 3
    other = dreamq("submit", image_file, "--server", url).stdout.strip()
    clean_redis.hset(keys.job(other), "status", "succeeded")
    r = dreamq("cancel", other, "--server", url)
    assert r.exit_code == 2 and "succeeded" in r.stderr


class ClientReads:
    """Which version of the job the ``dreamq`` client has read (Flask's request signals), so that the
    fake worker below moves it on only once the client has fetched its current state: every state
    shows, however fast or slow anything runs."""

    def __init__(self, app):
        from flask import request_finished, request_started

        self.path, self.version, self.seen = None, 0, 0
        self.cond = threading.Condition()
        request_started.connect(self._started, app, weak=False)
        request_finished.connect(self._finished, app, weak=False)

    def _started(self, sender, **_):
        from flask import g

        g.job_version = self.version  # changes made before this read are in its answer

    def _finished(self, sender, response, **_):
        from flask import g, request

        if request.method == "GET" and request.path == self.path:
            with self.cond:
                self.seen = max(self.seen, g.job_version)
                self.cond.notify_all()

    def changed(self, timeout: float = 60) -> None:
        """Call after each change to the job: returns once the client has read it."""
        with self.cond:
            self.version += 1
            assert self.cond.wait_for(lambda: self.seen >= self.version, timeout), "the client stopped reading"


def _play_worker(app, job_id, clean_redis, photo, outcome, reads):
    """Moves the job as a worker does, through Jobs and the store, in step with the client."""
    state, store = app.extensions["dreamq"].state, app.extensions["dreamq"].store
    reads.path = f"/api/v1/jobs/{job_id}"
    reads.changed()  # the client shows the job queued
    dispatch = clean_redis.hget(keys.job(job_id), "dispatch").decode()
    state.start(job_id, dispatch, "host:9")
    reads.changed()
    for step in range(4):
        state.update(job_id, "host:9", progress={"fraction": (step + 1) / 5, "octave": step // 2, "octaves": 2,
                                                 "step": step % 2, "steps": 2, "loss": 1.5 + step, "eta_s": 1.0})
        if step == 1:
            state.update(job_id, "host:9", preview_url=store.put(job_id, PREVIEW, encode(photo[:200, :200])))
        reads.changed()
    if outcome == "succeeded":
        store.put(job_id, RESULT, encode(photo[:300, :400]))
        state.finish(job_id, "host:9", "succeeded")
    elif outcome == "failed":
        state.finish(job_id, "host:9", "failed", error={"code": "internal_error", "message": "device lost"})
    else:
        state.cancel(job_id)
        state.finish(job_id, "host:9", "canceled", error={"code": "canceled", "message": "canceled while running"})


@pytest.mark.parametrize("outcome,code", [("succeeded", 0), ("failed", 1), ("canceled", 3)])
def test_submit_wait_shows_progress_and_saves_the_result(server, image_file, clean_redis, photo, tmp_path, outcome,
                                                         code):
    url, app = server()
    reads = ClientReads(app)
    out = tmp_path / "out" / "dream.png"
    result = {}

    def run():
        result["r"] = dreamq("submit", image_file, "--server", url, "--wait", "-o", out)

    client = threading.Thread(target=run)
    client.start()
    deadline = time.monotonic() + 60
    while not clean_redis.zcard("dreamq:queued") and time.monotonic() < deadline:
        time.sleep(0.05)
    job_id = clean_redis.zrange("dreamq:queued", 0, -1)[0].decode()
    _play_worker(app, job_id, clean_redis, photo, outcome, reads)
    client.join(60)
    r = result["r"]
    assert r.exit_code == code, r.output
    assert r.stdout.strip() == job_id
    # The client read every state, so it showed every one.
    assert "queued" in r.stderr and "octave 1/2, loss 1.50" in r.stderr and "octave 2/2, loss 4.50" in r.stderr
    if outcome == "succeeded":
        assert Image.open(out).size == (400, 300) and "wrote" in r.stderr
        assert "100%" in r.stderr
    else:
        assert not out.exists()
        assert outcome in r.stderr


def test_tokens(server, image_file):
    url, _ = server(api_tokens=["t0ken-" + "z" * 32])
    r = dreamq("submit", image_file, "--server", url)
    assert r.exit_code == 2 and "401" in r.stderr
    assert dreamq("submit", image_file, "--server", url, "--token", "t0ken-" + "z" * 32).exit_code == 0


def test_a_submit_whose_answer_was_lost_is_retried_with_its_key_and_makes_one_job(clean_redis, redis_url, tmp_path,
                                                                                 image_file):
    """The first answer is lost after the server made the job (a 502 from a proxy, say): the CLI
    retries with the same Idempotency-Key and gets the same job back, not a second one."""
    app = make_app(redis_url, tmp_path)
    keys_seen = []

    def lossy(environ, start_response):
        captured = {}

        def capture(status, headers, exc_info=None):
            captured.update(status=status, headers=headers)

        body = b"".join(app(environ, capture))  # the app does its work in full...
        if environ["REQUEST_METHOD"] == "POST":
            keys_seen.append(environ.get("HTTP_IDEMPOTENCY_KEY"))
            if len(keys_seen) == 1:  # ...and its first answer is lost on the way back
                start_response("502 Bad Gateway", [("Content-Type", "text/plain")])
                return [b"lost"]
        start_response(captured["status"], captured["headers"])
        return [body]

    httpd = make_server("127.0.0.1", 0, lossy, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        r = dreamq("submit", image_file, "--server", f"http://127.0.0.1:{httpd.server_port}")
    finally:
        httpd.shutdown()
    assert r.exit_code == 0, r.stderr
    assert len(keys_seen) == 2 and keys_seen[0] and keys_seen[0] == keys_seen[1]
    assert clean_redis.zcard(keys.JOBS) == 1
    assert r.stdout.strip() == clean_redis.zrange(keys.JOBS, 0, -1)[0].decode()


def test_a_422_says_each_field_error_once(server, image_file):
    url, _ = server()
    r = dreamq("submit", image_file, "--server", url, "--octaves", "99", "--step", "abc")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "error: 422: invalid request", r.stderr
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == ["octaves", "step"], r.stderr
    assert r.stderr.count("octaves") == r.stderr.count("step") == 1


# -- With a real worker: the parameters travel with the picture; the result cache says so -----------

def test_the_result_carries_its_parameters_and_submit_reuses_them(live_worker, server, tmp_path, tiny_photo):
    from shared.provenance import read
    from web import create_app

    url, _ = server(create_app(live_worker.settings))  # the worker's store
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode(tiny_photo))
    out = tmp_path / "dream.png"
    r = dreamq("submit", photo, "--server", url, "--model", "vgg16_hed", "--layers", "block3_conv3=1", "--octaves", 2,
               "--iterations", 3, "--seed", 7, "--jitter", 4, "-o", out)
    assert r.exit_code == 0, r.output
    assert "served from the cache" not in r.stderr
    first = r.stdout.strip()

    # The PNG that came through the API says how it was dreamed, and with which weights.
    found = read(out)
    assert found["kind"] == "image" and found["model"] == "vgg16_hed" and found["version"]
    assert {k: found["params"][k] for k in ("layers", "octaves", "iterations", "seed", "jitter")} == {
        "layers": {"block3_conv3": 1.0}, "octaves": 2, "iterations": 3, "seed": 7, "jitter": 4}
    beat = json.loads(live_worker.redis.get(keys.worker(live_worker.redis.hget(keys.job(first), "worker").decode())))
    assert found["weights"] == beat["fingerprints"]["vgg16_hed"][:16]
    assert Image.open(out).text["Software"] == f"dreamq {found['version']}"

    # --params-from sends them; an option given overrides its own.
    r = dreamq("submit", photo, "--server", url, "--params-from", out, "--iterations", 4)
    assert r.exit_code == 0, r.output
    sent = json.loads(live_worker.redis.hget(keys.job(r.stdout.strip()), "params"))
    assert sent == {**found["params"], "iterations": 4}

    # The same again: an identical job, answered from the cache, and the CLI says so.
    wait_for(lambda: live_worker.redis.keys(keys.result_cache("*")), 10, "the cache entry")
    again = tmp_path / "again.png"
    r = dreamq("submit", photo, "--server", url, "--params-from", out, "-o", again)
    assert r.exit_code == 0, r.output
    assert f"served from the cache (an earlier identical job, {first}); --no-cache to dream again" in r.stderr
    assert again.read_bytes() == out.read_bytes()
    r = dreamq("status", r.stdout.strip(), "--server", url)
    assert r.exit_code == 0 and "served from the cache" in r.stdout
    r = dreamq("submit", photo, "--server", url, "--params-from", out, "--no-cache")
    assert r.exit_code == 0 and "served from the cache" not in r.stderr
    done = live_worker.wait(r.stdout.strip())  # dreamed again, by the worker
    assert done.status == "succeeded" and done.worker and "cached" not in done.metrics
