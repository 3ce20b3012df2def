"""HTTP API v1 against a real Redis, through the Flask test client, with real image files.

No worker runs here: submitted jobs stay queued, which is all a contract test needs;
worker-side transitions are made through Jobs, as a worker makes them.
"""
from __future__ import annotations

import io
import re
import sys
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from shared import keys
from shared.jobs import Jobs
from shared.models import MODELS
from dreamq.redis_server import free_port
from shared.store import Store
from shared.kinds.image import INPUT, PREVIEW, RESULT

from ..webutil import bomb_png, encode, heartbeat, make_app, post_job, sixteen_bit_png, sse_events


@pytest.fixture
def app_settings():
    return {"max_content_length": 2 * 1024 * 1024, "events_max_s": 2}



def store_of(app) -> Store:
    return app.extensions["dreamq"].store


def state_of(app) -> Jobs:
    return app.extensions["dreamq"].state


def submit(client, jpeg, **fields) -> dict:
    r = post_job(client, jpeg, "photo.jpg", **fields)
    assert r.status_code == 202, r.get_json()
    return r.get_json()


def assert_error(r, status: int, code: str | None = None, field: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.data[:500])
    assert r.mimetype == "application/json"
    error = r.get_json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code, error
    if field:
        assert field in error.get("fields", {}), error
    return error


# -- the web never loads the network -------------------------------------------

def test_the_web_does_not_import_keras(redis_url, tmp_path):
    import subprocess

    code = ("import sys; from shared.settings import Settings; import web; "
            f"web.create_app(Settings(redis_url={redis_url!r}, data_dir={str(tmp_path)!r})); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# -- submitting ------------------------------------------------------------------

def test_submit_answers_202_with_location_job_json_and_queues_a_message(app, client, clean_redis, jpeg, photo):
    r = post_job(client, jpeg, "photo.jpg", model="vgg16_hed", preset="textures", iterations="5")
    assert r.status_code == 202
    job = r.get_json()
    assert r.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert uuid.UUID(job["id"]).version == 4
    assert job["status"] == "queued" and job["queue_position"] == 1 and job["error"] is None
    expected = {"model": "vgg16_hed", "preset": "textures", "layers": {"block2_conv2": 1.0, "block3_conv3": 2.0},
                "step": MODELS["vgg16_hed"].step, "octaves": 3, "octave_scale": 1.4, "iterations": 5, "max_loss": None,
                "max_side": None}
    assert {k: job["params"][k] for k in expected} == expected  # effective values, defaults filled in
    assert job["progress"]["fraction"] == 0 and job["progress"]["octaves"] == 3
    assert job["links"] == {"self": f"/api/v1/jobs/{job['id']}", "result": None, "preview": None,
                            "cancel": f"/api/v1/jobs/{job['id']}/cancel", "events": f"/api/v1/jobs/{job['id']}/events"}
    assert job["created_at"].endswith("Z") and job["metrics"] == {"queue_s": None, "run_s": None}
    # The input is stored as the normalised RGB PNG the worker will decode.
    stored = Image.open(io.BytesIO(store_of(app).get(job["id"], INPUT)))
    assert stored.format == "PNG" and stored.mode == "RGB" and stored.size == (512, 512)
    assert np.abs(np.asarray(stored, int) - photo.astype(int)).mean() < 3  # JPEG round trip
    assert clean_redis.llen("dreamq") == 1  # one Celery message, on the dreamq queue
    assert b"photo.jpg" not in clean_redis.lpop("dreamq")  # it carries ids, not the upload

    again = client.get(job["links"]["self"])
    assert again.status_code == 200 and again.get_json()["id"] == job["id"]


def test_max_side_downscales_the_stored_input(app, client, jpeg):
    job = submit(client, jpeg, max_side="300")
    assert Image.open(io.BytesIO(store_of(app).get(job["id"], INPUT))).size == (300, 300)
    assert job["params"]["max_side"] == 300


def test_queue_positions_count_from_one(client, jpeg):
    ids = [submit(client, jpeg)["id"] for _ in range(3)]
    assert [client.get(f"/api/v1/jobs/{i}").get_json()["queue_position"] for i in ids] == [1, 2, 3]


@pytest.mark.parametrize("mode,fmt", [("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("L", "PNG"), ("LA", "PNG"),
                                      ("RGB", "WEBP"), ("RGB", "BMP"), ("RGB", "TIFF"), ("RGB", "GIF")])
def test_image_modes_and_formats_are_accepted(app, client, photo, mode, fmt):
    r = post_job(client, encode(photo, fmt, mode=mode), f"x.{fmt.lower()}")
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert Image.open(io.BytesIO(store_of(app).get(job["id"], INPUT))).mode == "RGB"


def test_sixteen_bit_png_is_accepted(app, client, photo):
    r = post_job(client, sixteen_bit_png(photo))
    assert r.status_code == 202, r.get_json()
    stored = np.asarray(Image.open(io.BytesIO(store_of(app).get(r.get_json()["id"], INPUT))))
    assert stored.std() > 20  # scaled to 8 bits, not clipped to white


# -- every bad request: JSON error, never a 5xx ----------------------------------

def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 3]


BAD_UPLOADS = [
    # (case, image bytes builder, filename, fields, status, code, field)
    ("non-image bytes", lambda p: b"hello, I am text" * 10, "a.png", {}, 415, "unsupported_image", "image"),
    ("zero bytes", lambda p: b"", "a.png", {}, 415, "unsupported_image", "image"),
    ("truncated JPEG", lambda p: _truncated(encode(p, "JPEG")), "a.jpg", {}, 415, "unsupported_image", "image"),
    ("truncated PNG", lambda p: _truncated(encode(p)), "a.png", {}, 415, "unsupported_image", "image"),
    ("PNG signature then junk", lambda p: b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "a.png", {}, 415, "unsupported_image",
     "image"),
    ("decompression bomb", lambda p: bomb_png(), "bomb.png", {}, 413, "image_too_large", "image"),
    ("bomb under Pillow's limit but over ours", lambda p: bomb_png(8000, 6000), "b.png", {}, 413, "image_too_large",
     "image"),
    ("SVG named .png", lambda p: b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
     "a.png", {}, 415, "unsupported_image", "image"),
    ("HTML named .png", lambda p: b"<!doctype html><html><script>alert(1)</script></html>", "a.png", {}, 415,
     "unsupported_image", "image"),
    ("1x1 image", lambda p: encode(p[:1, :1]), "a.png", {}, 422, "image_too_small", "image"),
    ("too small even at full size", lambda p: encode(p[:100, :100]), "a.png", {}, 422, "image_too_small", "image"),
    ("too small after max_side", lambda p: encode(p), "a.png", {"max_side": "64"}, 422, "image_too_small", "image"),
    ("octaves out of range", None, None, {"octaves": "99"}, 422, "invalid_params", "octaves"),
    ("octaves zero", None, None, {"octaves": "0"}, 422, "invalid_params", "octaves"),
    ("negative step", None, None, {"step": "-1"}, 422, "invalid_params", "step"),
    ("iterations not a number", None, None, {"iterations": "lots"}, 422, "invalid_params", "iterations"),
    ("iterations a float", None, None, {"iterations": "2.5"}, 422, "invalid_params", "iterations"),
    ("step NaN", None, None, {"step": "nan"}, 422, "invalid_params", "step"),
    ("step Infinity", None, None, {"step": "Infinity"}, 422, "invalid_params", "step"),
    ("octave_scale -inf", None, None, {"octave_scale": "-inf"}, 422, "invalid_params", "octave_scale"),
    ("layer weight NaN", None, None, {"layers": "mixed4=nan"}, 422, "invalid_params", "layers"),
    ("unknown layer", None, None, {"layers": "mixed99=1"}, 422, "invalid_params", "layers"),
    ("layer of another model", None, None, {"model": "vgg16_hed", "layers": "mixed4=1"}, 422, "invalid_params",
     "layers"),
    ("unknown model", None, None, {"model": "resnet"}, 422, "invalid_params", "model"),
    ("unknown preset", None, None, {"preset": "psychedelic"}, 422, "invalid_params", "preset"),
    ("max_loss negative", None, None, {"max_loss": "-3"}, 422, "invalid_params", "max_loss"),
    ("max_side too small", None, None, {"max_side": "8"}, 422, "invalid_params", "max_side"),
    ("unknown parameter", None, None, {"colour": "red"}, 422, "invalid_params", "colour"),
    ("duplicate field", None, None, {"step": ["0.01", "0.02"]}, 422, "invalid_params", "step"),
    ("image as a text field", None, "-", {"image": "photo.jpg"}, 422, "invalid_params", "image"),
]


@pytest.mark.parametrize("case,build,filename,fields,status,code,field", BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_bad_submissions_get_a_json_error_naming_the_problem(client, clean_redis, photo, jpeg, case, build, filename,
                                                             fields, status, code, field):
    if filename == "-":
        image = None
    else:
        image = build(photo) if build else jpeg
    r = post_job(client, image, filename or "photo.jpg", **fields)
    assert_error(r, status, code, field)
    assert clean_redis.llen("dreamq") == 0 and not clean_redis.exists("dreamq:jobs")


def test_missing_image_is_422_naming_image_and_bad_params_together(client):
    error = assert_error(post_job(client, None, octaves="99"), 422, "invalid_params")
    assert set(error["fields"]) == {"image", "octaves"}
    # An empty nameless part is what a browser sends when no file was chosen.
    r = client.post("/api/v1/jobs", data={"image": (io.BytesIO(b""), "")}, content_type="multipart/form-data")
    assert_error(r, 422, "invalid_params", "image")


def test_two_images_are_refused(client, jpeg):
    r = client.post("/api/v1/jobs", data={"image": [(io.BytesIO(jpeg), "a.jpg"), (io.BytesIO(jpeg), "b.jpg")]},
                    content_type="multipart/form-data")
    assert_error(r, 422, "invalid_params", "image")


def test_an_extra_file_field_is_refused(client, jpeg):
    r = client.post("/api/v1/jobs", data={"image": (io.BytesIO(jpeg), "a.jpg"), "mask": (io.BytesIO(jpeg), "m.jpg")},
                    content_type="multipart/form-data")
    assert_error(r, 422, "invalid_params", "mask")


def test_json_and_urlencoded_bodies_are_415_with_a_clear_message(client):
    error = assert_error(client.post("/api/v1/jobs", json={"image": "aGVsbG8=", "octaves": 2}), 415,
                         "unsupported_media_type")
    assert "multipart/form-data" in error["message"] and "JSON" in error["message"]
    assert_error(client.post("/api/v1/jobs", data="octaves=2", content_type="application/x-www-form-urlencoded"), 415)
    assert_error(client.post("/api/v1/jobs"), 415)


def test_upload_over_max_content_length_is_413(client, photo):
    big = encode(np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8))
    assert len(big) > 2 * 1024 * 1024
    error = assert_error(post_job(client, big), 413, "upload_too_large", "image")
    assert "2 MB" in error["message"]


def test_malformed_multipart_is_a_client_error(client):
    r = client.post("/api/v1/jobs", data=b"--xyz\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc",
                    content_type="multipart/form-data; boundary=xyz")
    assert 400 <= r.status_code < 500 and r.get_json()["error"]["code"]
    r = client.post("/api/v1/jobs", data=b"whatever", content_type="multipart/form-data")  # no boundary
    assert 400 <= r.status_code < 500 and r.get_json()["error"]["code"]


def test_a_hostile_filename_is_ignored_and_nothing_is_written_outside_the_store(app, client, tmp_path, jpeg):
    before = set(tmp_path.parent.iterdir())
    names = ["../../evil.png", "<script>alert(1)</script>.jpg", "/etc/passwd", "..\\..\\x.jpg", "a\0b.jpg"]
    ids = []
    for name in names:
        r = post_job(client, jpeg, name)
        assert r.status_code == 202
        assert b"<script>" not in r.data and b"evil" not in r.data and b"passwd" not in r.data
        ids.append(r.get_json()["id"])
    for bad in BAD_UPLOADS[:10]:
        post_job(client, bad[1](np.zeros((200, 200, 3), np.uint8)), names[0])
    assert set(tmp_path.parent.iterdir()) == before
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert [str(f) for f in files] == sorted(f"data/store/{i}/input.png" for i in ids)


# -- ids -------------------------------------------------------------------------

BAD_IDS = ["nope", "..", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "x" * 10_000, str(uuid.uuid4()).upper(),
           str(uuid.uuid1()), str(uuid.uuid4()), "00000000-0000-0000-0000-000000000000", "<script>"]


@pytest.mark.parametrize("suffix,method", [("", "get"), ("/result", "get"), ("/preview", "get"), ("/cancel", "post"),
                                           ("/events", "get")])
def test_unknown_and_non_uuid_ids_are_404_json(client, suffix, method):
    for bad in BAD_IDS:
        r = getattr(client, method)(f"/api/v1/jobs/{bad}{suffix}")
        error = assert_error(r, 404)
        assert "<script>" not in error["message"]
    assert_error(client.get("/api/v1/jobs/../../etc/passwd"), 404)
    assert_error(client.get("/api/v1/jobs/a/b/c"), 404)


def test_unknown_route_and_wrong_method_are_json(client):
    assert_error(client.get("/api/v1/nothing"), 404, "not_found")
    r = client.delete("/api/v1/jobs")
    assert_error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["Allow"]


# -- state conflicts ---------------------------------------------------------------

def test_cancel_is_idempotent_and_409_once_finished(app, client, clean_redis, jpeg):
    job = submit(client, jpeg)
    first = client.post(job["links"]["cancel"])
    assert first.status_code == 202
    body = first.get_json()
    assert body["status"] == "canceled" and body["error"]["code"] == "canceled" and body["finished_at"]
    assert client.post(job["links"]["cancel"]).status_code == 202  # twice: still fine
    assert body["queue_position"] is None and client.get("/api/v1/jobs/" + job["id"]).get_json()["status"] == "canceled"

    for status in ("succeeded", "failed"):
        other = submit(client, jpeg)
        clean_redis.hset(keys.job(other["id"]), "status", status)
        error = assert_error(client.post(other["links"]["cancel"]), 409, "job_finished")
        assert status in error["message"]


def test_cancel_of_a_running_job_asks_the_worker_to_stop(app, client, clean_redis, jpeg):
    job = submit(client, jpeg)
    state = state_of(app)
    dispatch = clean_redis.hget(keys.job(job["id"]), "dispatch").decode()
    assert state.start(job["id"], dispatch, "host:7") == "ok"
    r = client.post(job["links"]["cancel"])
    assert r.status_code == 202 and r.get_json()["status"] == "running"
    assert clean_redis.hget(keys.job(job["id"]), "cancel_requested") == b"1"


def test_result_is_409_until_succeeded_then_a_png(app, client, clean_redis, jpeg, photo):
    job = submit(client, jpeg)
    result = f"/api/v1/jobs/{job['id']}/result"
    error = assert_error(client.get(result), 409, "not_succeeded")
    assert "queued" in error["message"]
    assert_error(client.get(f"/api/v1/jobs/{job['id']}/preview"), 404, "no_preview")

    state = state_of(app)
    dispatch = clean_redis.hget(keys.job(job["id"]), "dispatch").decode()
    state.start(job["id"], dispatch, "host:7")
    assert_error(client.get(result), 409, "not_succeeded")
    png = encode(photo[::2, ::2])
    url = store_of(app).put(job["id"], PREVIEW, png)
    state.update(job["id"], "host:7", preview_url=url, progress={"fraction": 0.5, "octave": 1, "octaves": 3})
    running = client.get(job["links"]["self"]).get_json()
    assert running["status"] == "running" and running["worker"] == "host:7" and running["attempts"] == 1
    assert running["links"]["preview"] == f"/api/v1/jobs/{job['id']}/preview" and running["links"]["result"] is None
    preview = client.get(running["links"]["preview"])
    assert preview.status_code == 200 and preview.mimetype == "image/png" and preview.data == png
    assert client.get(running["links"]["preview"], headers={"If-None-Match": preview.headers["ETag"]}).status_code == 304

    store_of(app).put(job["id"], RESULT, png)
    assert state.finish(job["id"], "host:7", "succeeded", result_url="x") == "ok"
    done = client.get(job["links"]["self"]).get_json()
    assert done["status"] == "succeeded" and done["progress"]["fraction"] == 1.0
    assert done["metrics"]["run_s"] is not None and done["links"]["result"] == result
    r = client.get(result)
    assert r.status_code == 200 and r.mimetype == "image/png" and r.data == png
    assert Image.open(io.BytesIO(r.data)).size == (256, 256)
    assert client.get(result + "?download=1").headers["Content-Disposition"].startswith("attachment")


# -- listing -----------------------------------------------------------------------

def test_list_is_newest_first_with_an_opaque_cursor(client, jpeg):
    ids = [submit(client, jpeg)["id"] for _ in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        r = client.get("/api/v1/jobs", query_string={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200
        body = r.get_json()
        seen += [j["id"] for j in body["jobs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    assert seen == ids[::-1] and pages == 3
    assert client.get("/api/v1/jobs").get_json()["jobs"][0]["links"]["self"] == f"/api/v1/jobs/{ids[-1]}"


@pytest.mark.parametrize("query,field", [({"limit": "0"}, "limit"), ({"limit": "1000"}, "limit"),
                                         ({"limit": "abc"}, "limit"), ({"cursor": "!!!"}, "cursor"),
                                         ({"cursor": "aW5m"}, "cursor"),  # "inf"
                                         ({"cursor": "bm90IGEgbnVtYmVy"}, "cursor")])
def test_list_rejects_bad_limit_and_cursor(client, query, field):
    assert_error(client.get("/api/v1/jobs", query_string=query), 422, "invalid_params", field)


# -- events ------------------------------------------------------------------------

def sse_stream(response):
    """The events of a streamed (``buffered=False``) response, one at a time, as the server sends them."""
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            yield from sse_events(block)


def test_events_stream_progress_then_the_end_state(redis_url, clean_redis, tmp_path, jpeg):
    # In lock step: each change is made once the stream has shown the one before, so
    # no event depends on how fast the server polls or the machine runs (events_max_s
    # only guards against a hang here).
    app = make_app(redis_url, tmp_path, events_max_s=120)
    client = app.test_client()
    job = submit(client, jpeg)
    state = state_of(app)
    dispatch = clean_redis.hget(keys.job(job["id"]), "dispatch").decode()
    r = client.get(job["links"]["events"], buffered=False)
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    events = sse_stream(r)
    try:
        name, data = next(events)
        assert name == "progress" and data["status"] == "queued" and data["queue_position"] == 1
        state.start(job["id"], dispatch, "host:7")
        name, data = next(events)
        assert name == "progress" and data["status"] == "running" and data["worker"] == "host:7"
        for step in range(3):
            state.update(job["id"], "host:7", progress={"fraction": (step + 1) / 4, "octave": 0, "octaves": 1,
                                                        "step": step, "steps": 4, "loss": 1.0, "eta_s": 1.0})
            name, data = next(events)  # one event per change
            assert name == "progress" and data["progress"]["fraction"] == (step + 1) / 4, (name, data)
        state.finish(job["id"], "host:7", "failed", error={"code": "internal_error", "message": "boom"})
        name, data = next(events)
        assert name == "end" and data["status"] == "failed", (name, data)
        assert data["error"] == {"code": "internal_error", "message": "boom"}
        assert list(events) == []  # the end state ends the stream
    finally:
        r.close()


def test_events_of_a_finished_job_is_one_end_event(client, jpeg):
    job = submit(client, jpeg)
    client.post(job["links"]["cancel"])
    events = sse_events(client.get(job["links"]["events"]).get_data(as_text=True))
    assert [n for n, _ in events] == ["end"] and events[0][1]["status"] == "canceled"


def test_events_stream_is_bounded(client, jpeg):
    job = submit(client, jpeg)
    started = time.monotonic()
    events = sse_events(client.get(job["links"]["events"]).get_data(as_text=True))
    elapsed = time.monotonic() - started
    assert [n for n, _ in events] == ["progress", "timeout"]
    # It ended because events_max_s (2 s in these settings) ran out: never sooner,
    # whatever the machine; the upper bound only catches a stream that does not end.
    assert 2 <= elapsed < 60, elapsed


# -- models, health, readiness, metrics ----------------------------------------------

def test_models_list_layers_presets_and_what_ready_workers_hold(client, clean_redis):
    models = {m["name"]: m for m in client.get("/api/v1/models").get_json()["models"]}
    assert set(models) == {"inception_v3", "vgg16_hed"}
    assert models["inception_v3"]["default"] and "mixed4" in models["inception_v3"]["layers"]
    assert models["inception_v3"]["default_layers"] == {"mixed4": 1.0, "mixed5": 1.5, "mixed6": 2.0, "mixed7": 2.5}
    assert "intense" in models["vgg16_hed"]["presets"]
    assert not models["vgg16_hed"]["loaded"]
    heartbeat(clean_redis, "a:1")
    heartbeat(clean_redis, "b:2", ready=False, models={"inception_v3": "ready"})
    clean_redis.sadd("dreamq:workers", "gone:3")  # its key expired
    models = {m["name"]: m for m in client.get("/api/v1/models").get_json()["models"]}
    assert models["vgg16_hed"]["loaded"] and models["vgg16_hed"]["ready_workers"] == 1
    assert not models["inception_v3"]["loaded"]  # only on a worker still loading


def test_health_and_readiness(client, clean_redis):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 503 and "no worker" in r.get_json()["reason"]
    heartbeat(clean_redis, "a:1", ready=False)
    assert "loading" in client.get("/readyz").get_json()["reason"]
    heartbeat(clean_redis, "b:2")
    r = client.get("/readyz")
    assert r.status_code == 200 and r.get_json()["ready_workers"] == 1


def test_metrics_count_jobs_and_durations_without_job_ids(app, client, clean_redis, jpeg):
    jobs = [submit(client, jpeg) for _ in range(3)]
    state = state_of(app)
    dispatch = clean_redis.hget(keys.job(jobs[0]["id"]), "dispatch").decode()
    state.start(jobs[0]["id"], dispatch, "host:7")
    state.finish(jobs[0]["id"], "host:7", "succeeded")
    client.post(jobs[1]["links"]["cancel"])
    heartbeat(clean_redis, "a:1")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    text = r.get_data(as_text=True)
    assert 'dreamq_jobs_submitted_total{model="inception_v3"} 3.0' in text
    assert 'dreamq_jobs_finished_total{model="inception_v3",status="succeeded"} 1.0' in text
    assert 'dreamq_jobs_finished_total{model="inception_v3",status="canceled"} 1.0' in text
    assert 'dreamq_job_run_seconds_count{model="inception_v3"} 1.0' in text and "dreamq_job_queue_seconds_bucket" in text
    assert "dreamq_queue_depth 1.0" in text and 'dreamq_workers{ready="true"} 1.0' in text
    assert "dreamq_redis_up 1.0" in text
    for job in jobs:
        assert job["id"] not in text
    # A second scrape counts nothing twice (more in tests/integration/test_metrics.py).
    assert 'dreamq_jobs_finished_total{model="inception_v3",status="succeeded"} 1.0' in client.get(
        "/metrics").get_data(as_text=True)


# -- limits, tokens, Redis down ------------------------------------------------------

def test_full_queue_is_503_with_retry_after(redis_url, clean_redis, tmp_path, jpeg):
    client = make_app(redis_url, tmp_path, max_queued=2).test_client()
    submit(client, jpeg)
    submit(client, jpeg)
    r = post_job(client, jpeg)
    assert_error(r, 503, "queue_full")
    assert int(r.headers["Retry-After"]) > 0


def test_rate_limit_is_429_per_client_address(redis_url, clean_redis, tmp_path, jpeg):
    client = make_app(redis_url, tmp_path, rate_limit_per_minute=2).test_client()
    # The limit counts per wall-clock minute: if the minute turned during the three
    # submissions, the third opened a new window; do it again from a fresh address.
    for address in ("10.0.0.1", "10.0.0.2"):
        client.environ_base["REMOTE_ADDR"] = address
        minute = int(time.time() // 60)
        submit(client, jpeg)
        submit(client, jpeg)
        r = post_job(client, jpeg)
        if int(time.time() // 60) == minute:
            break
    assert_error(r, 429, "rate_limited")
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # Another web process on the same Redis counts the same address as over its limit.
    second = make_app(redis_url, tmp_path, rate_limit_per_minute=2).test_client()
    second.environ_base["REMOTE_ADDR"] = client.environ_base["REMOTE_ADDR"]
    assert_error(post_job(second, jpeg), 429, "rate_limited")
    other = client.post(
        "/api/v1/jobs", data={"image": (io.BytesIO(jpeg), "a.jpg")}, content_type="multipart/form-data",
        environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 202
    assert client.get("/api/v1/jobs").status_code == 200  # reading is not limited


SECRET, OTHER = "s3cret-" + "x" * 32, "other-" + "y" * 32  # tokens are at least 32 characters


def test_bearer_tokens(redis_url, clean_redis, tmp_path, jpeg):
    client = make_app(redis_url, tmp_path, api_tokens=[SECRET, OTHER]).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {SECRET}"},
                    {"Authorization": "Bearer "}):
        r = client.get("/api/v1/jobs", headers=headers)
        assert_error(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(post_job(client, jpeg, headers=headers), 401)
    assert_error(client.get(f"/api/v1/jobs/{uuid.uuid4()}"), 401)  # no id probing either
    ok = post_job(client, jpeg, headers={"Authorization": f"Bearer {OTHER}"})
    assert ok.status_code == 202
    assert client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503  # open, and unready (no worker)
    assert client.get("/api/openapi.json").status_code == 200


def test_redis_down_is_503_json_never_500(tmp_path, jpeg):
    from web import create_app
    from shared.settings import Settings

    app = create_app(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", data_dir=tmp_path))
    client = app.test_client()
    r = post_job(client, jpeg)
    assert_error(r, 503, "redis_unavailable")
    assert "Retry-After" in r.headers
    assert_error(client.get(f"/api/v1/jobs/{uuid.uuid4()}"), 503, "redis_unavailable")
    assert_error(client.get("/api/v1/jobs"), 503)
    assert_error(client.post(f"/api/v1/jobs/{uuid.uuid4()}/cancel"), 503)
    assert_error(client.get("/api/v1/models"), 503)
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 503 and "Redis" in r.get_json()["reason"]
    assert "dreamq_redis_up 0.0" in client.get("/metrics").get_data(as_text=True)
    assert not list(tmp_path.rglob("*.png"))


def test_no_redis_url_configured_is_503(tmp_path, jpeg):
    from web import create_app
    from shared.settings import Settings

    client = create_app(Settings(redis_url=None, data_dir=tmp_path)).test_client()
    assert_error(post_job(client, jpeg), 503, "redis_unavailable")


# -- headers and the OpenAPI document ------------------------------------------------

def test_security_headers_on_every_response(client):
    for path in ("/api/v1/jobs", "/api/v1/jobs/nope", "/healthz", "/api/openapi.json"):
        r = client.get(path)
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"]


def test_openapi_document_is_valid_and_describes_every_api_route(app, client):
    from openapi_spec_validator import validate

    spec = client.get("/api/openapi.json").get_json()
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    from shared.params import DreamParams

    assert set(spec["components"]["schemas"]["Params"]["properties"]) == set(DreamParams.model_fields)
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        if not (path.startswith("/api/") or path in ("/healthz", "/readyz", "/metrics")):
            continue
        assert path in spec["paths"], path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in spec["paths"][path], (method, path)
