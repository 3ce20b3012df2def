"""Uploads are bounded and caps mean what they say (issue 10): checks before the body, bounded
decodes, integer 16-bit conversion, per-client queue cap, cancel frees the input, 413s that name
the limit hit, and peak RSS of a real `dreamq up` under 8 hostile uploads at once."""
import io
import threading
import tracemalloc

import numpy as np
import pytest
from PIL import Image, ImageFile

from bench import hostile
from shared.images import ImageError, decode_image
from shared.jobs import Jobs
from shared.queue import QUEUE
from shared.kinds.image import INPUT

from ..webutil import encode, make_app, post_job

FORM = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": "1", "iterations": "3"}


@pytest.fixture
def photo_png(photo):
    return encode(photo[:96, :96])


def _app(redis_url, tmp_path, **overrides):
    app = make_app(redis_url, tmp_path, **overrides)
    app.testing = True
    return app


class TrackedBody(io.BytesIO):
    """A request body that records whether the app read any of it."""

    read_calls = 0

    def read(self, *a):
        self.read_calls += 1
        return super().read(*a)

    def readline(self, *a):
        self.read_calls += 1
        return super().readline(*a)


def _post_tracked(client, png: bytes, **environ):
    boundary = "xyz"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    stream = TrackedBody(body)
    r = client.post("/api/v1/jobs", input_stream=stream, content_length=len(body),
                    content_type=f"multipart/form-data; boundary={boundary}", environ_base=environ)
    return r, stream


# -- refusals before the body -------------------------------------------------------------

def test_queue_full_is_answered_without_reading_the_body(redis_url, clean_redis, tmp_path, photo_png):
    app = _app(redis_url, tmp_path, max_queued=1)
    client = app.test_client()
    assert post_job(client, photo_png, **FORM).status_code == 202
    r, body = _post_tracked(client, photo_png)
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "queue_full"
    assert r.headers["Retry-After"] and body.read_calls == 0


def test_rate_limit_is_answered_without_reading_the_body(redis_url, clean_redis, tmp_path, photo_png):
    app = _app(redis_url, tmp_path, rate_limit_per_minute=1)
    client = app.test_client()
    assert post_job(client, photo_png, **FORM).status_code == 202
    r, body = _post_tracked(client, photo_png)
    assert r.status_code == 429 and body.read_calls == 0


def test_per_client_cap_counts_queued_jobs_per_address(redis_url, clean_redis, tmp_path, photo_png):
    app = _app(redis_url, tmp_path, max_queued_per_client=2)
    client = app.test_client()
    ids = [post_job(client, photo_png, **FORM).get_json()["id"] for _ in range(2)]
    r, body = _post_tracked(client, photo_png)
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "too_many_queued" and body.read_calls == 0
    assert "DREAMQ_MAX_QUEUED_PER_CLIENT" in r.get_json()["error"]["message"]
    # Another address has its own allowance.
    other = client.post("/api/v1/jobs", data={"image": (io.BytesIO(photo_png), "p.png"), **FORM},
                        content_type="multipart/form-data", environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 202
    # A canceled job no longer counts: the slot comes back.
    assert client.post(f"/api/v1/jobs/{ids[0]}/cancel").status_code == 202
    assert post_job(client, photo_png, **FORM).status_code == 202


def test_per_client_cap_holds_under_concurrent_saves(redis_url, clean_redis):
    state = Jobs(clean_redis)
    outcomes, barrier = [], threading.Barrier(12)

    def save():
        job = state.create({"model": "vgg16_hed"})
        barrier.wait()
        outcomes.append(state.try_save_new(job, max_queued=100, client="1.2.3.4", max_per_client=3))

    threads = [threading.Thread(target=save) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["client_full"] * 9 + ["ok"] * 3
    assert state.client_queued("1.2.3.4") == 3 and state.queue_depth() == 3


def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(redis_url, clean_redis, tmp_path, photo_png):
    client = _app(redis_url, tmp_path, rate_limit_per_minute=2).test_client()
    codes = [post_job(client, photo_png, headers={"X-Forwarded-For": f"10.1.1.{i}"}, **FORM).status_code
             for i in range(3)]
    assert codes == [202, 202, 429]


def test_with_one_proxy_hop_the_forwarded_address_is_the_key(redis_url, clean_redis, tmp_path, photo_png):
    # Why docs/DEPLOYMENT.md says gunicorn must then be reachable only through that proxy.
    client = _app(redis_url, tmp_path, rate_limit_per_minute=1, proxy_hops=1).test_client()
    codes = [post_job(client, photo_png, headers={"X-Forwarded-For": f"10.1.1.{i}"}, **FORM).status_code
             for i in (1, 2, 1)]
    assert codes == [202, 202, 429]


# -- cancel frees the input ---------------------------------------------------------------

def test_cancel_of_a_queued_job_deletes_its_input_and_message(redis_url, clean_redis, tmp_path, photo_png):
    app = _app(redis_url, tmp_path)
    client = app.test_client()
    job_id = post_job(client, photo_png, **FORM).get_json()["id"]
    store = app.extensions["dreamq"].store
    assert store.get(job_id, INPUT) is not None and clean_redis.llen(QUEUE) == 1
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    assert store.get(job_id, INPUT) is None and clean_redis.llen(QUEUE) == 0


# -- bounded decodes ------------------------------------------------------------------------

def test_large_decodes_beyond_the_per_process_limit_get_503_but_photos_and_bombs_do_not_wait(
        redis_url, clean_redis, tmp_path, photo_png):
    from web.uploads import SMALL_IMAGE_PIXELS, decode_slots

    large = hostile.zero_png(2000, SMALL_IMAGE_PIXELS // 2000 + 1)
    app = _app(redis_url, tmp_path, max_decodes=1, decode_wait_s=0)
    client = app.test_client()
    with app.app_context():
        slots = decode_slots()
    assert slots.acquire(timeout=5)  # a decode in progress holds the only slot
    try:
        r = post_job(client, large, **FORM)
        assert r.status_code == 503 and r.get_json()["error"]["code"] == "busy" and r.headers["Retry-After"]
        assert post_job(client, photo_png, **FORM).status_code == 202  # a normal photo needs no slot
        assert post_job(client, hostile.header_bomb(), **FORM).status_code == 413  # refused from its header
    finally:
        slots.release()
    assert post_job(client, large, **FORM).status_code == 202


@pytest.mark.parametrize("name", ["png16", "rgba", "webp", "header"])
def test_pixel_count_is_checked_from_the_header_before_any_decoding(monkeypatch, name):
    payload = {"png16": lambda: hostile.zero_png(2000, 1000, 16, 0), "rgba": lambda: hostile.zero_png(2000, 1000, 8, 6),
               "webp": lambda: hostile.webp_bomb(2000, 1000), "header": hostile.header_bomb}[name]()

    def no_decoding(self, *a, **kw):
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError) as exc:
        decode_image(payload, max_pixels=1_000_000)
    assert exc.value.code == "image_too_large"


def test_sixteen_bit_conversion_stays_in_integers():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 65536, (1000, 2000), dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    data = buf.getvalue()
    tracemalloc.start()
    try:
        out = decode_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = np.clip(grey / 65535 * 255 + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(out[..., 0].astype(int) - expected).max() <= 1 and (out[..., 0] == out[..., 2]).all()
    # numpy's allocations as tracemalloc sees them: 7 bytes a pixel, 24 through float64 as before.
    assert peak < 12 * grey.size, peak


# -- 413s name the limit ------------------------------------------------------------------

def test_413_names_the_werkzeug_limit_really_hit(redis_url, clean_redis, tmp_path, photo_png):
    client = _app(redis_url, tmp_path).test_client()
    many = post_job(client, photo_png, **FORM, **{f"f{i}": "1" for i in range(5000)})
    assert many.status_code == 413 and many.get_json()["error"]["code"] == "too_many_form_parts"
    assert "DREAMQ_MAX_FORM_PARTS" in many.get_json()["error"]["message"]
    big_field = post_job(client, photo_png, **FORM, note="x" * 600_000)
    assert big_field.status_code == 413 and big_field.get_json()["error"]["code"] == "form_field_too_large"
    assert "DREAMQ_MAX_FORM_MEMORY_SIZE" in big_field.get_json()["error"]["message"]
    body = post_job(client, b"\0" * (21 * 1024 * 1024), **FORM)
    assert body.status_code == 413 and body.get_json()["error"]["code"] == "upload_too_large"
    assert "20 MB" in body.get_json()["error"]["message"]


# -- a real server under 8 hostile uploads at once -------------------------------------------

def test_eight_hostile_uploads_keep_every_web_process_under_1_5_gb(tmp_path):
    from dreamq.redis_server import free_port

    from ..webutil import _stop, _up, _wait_ready

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "up.log", "w") as log:
        proc = _up(tmp_path / "data", port, log, workers=0)
    try:
        _wait_ready(base, proc, 60, "/healthz", tmp_path / "up.log")
        figures = hostile.decode_attacks(base, concurrent=8, rounds=1)
    finally:
        _stop(proc)
    print(figures)  # -s shows the figures
    for statuses in figures["uploads"].values():
        # Answered, each with 202 (queued), 413 (header bomb) or 503 (waited too long for a decode slot).
        assert set(statuses) <= {202, 413, 503}, figures
    # A normal submit and /healthz answered throughout (not a speed test: a 10 s timeout).
    assert figures["submit"]["answered"] == figures["submit"]["tried"] >= 1, figures
    assert figures["uploads"]["header_bomb"] == {413: 2}, figures
    assert figures["healthz"]["answered"] == figures["healthz"]["tried"] >= 1, figures
    peaks = [mb for mb in figures["peak_rss_mb"].values() if mb is not None]
    assert len(peaks) >= 3 and max(peaks) < 1536, figures  # master and 2 workers


def test_under_gevent_decoding_runs_off_the_event_loop_and_errors_come_back_quietly():
    import subprocess
    import sys

    from ..conftest import ROOT

    code = ("from gevent import monkey; monkey.patch_all()\n"
            "import threading, gevent\n"
            "from web.uploads import off_loop\n"
            "from shared.images import ImageError, decode_image\n"
            "assert off_loop(lambda: threading.get_native_id()) != threading.get_native_id()\n"
            "try:\n    off_loop(lambda: decode_image(b'not an image'))\n"
            "except ImageError as exc:\n    print(exc.code)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0 and out.stdout.strip() == "unsupported_image", out.stderr
    assert "Traceback" not in out.stderr  # gevent's hub did not log the client's bad image as a crash
