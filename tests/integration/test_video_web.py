"""Zoom videos and guided dreams through the web: the form fields and their errors, the result
served by byte ranges (as a video player asks for it), the frames of a running or canceled video,
the job page, and `dreamq submit --kind zoom --wait`.

The live tests run the real thing: gunicorn (bench/load.py's WebServer), Redis and a worker
process (bench/cluster.py's Service) dreaming small videos (4 frames of 96x128).
The others use the Flask test client against the test Redis, moving jobs as a worker does.
"""
from __future__ import annotations

import io
import json
import re
import time

import numpy as np
import pytest
import requests
from PIL import Image

from shared import keys

from ..conftest import Service
from ..webutil import bomb_png, encode

# One VGG layer that works from 32 px, one octave, two steps: a frame in well under a second.
QUICK = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": "1", "iterations": "2"}
ZOOM = {**QUICK, "kind": "zoom", "frames": "4", "zoom": "1.1", "rotate": "2", "fps": "4"}


def assert_error(r, status: int, field: str | None = None, code: str | None = None) -> dict:
    """A JSON error (a Flask test response or a requests one) naming ``field``."""
    body = r.get_json() if hasattr(r, "get_json") else r.json()
    assert r.status_code == status, (r.status_code, body)
    error = body["error"]
    if code:
        assert error["code"] == code, error
    if field:
        assert field in (error.get("fields") or {}), error
    return error


def job_schema_errors(job: dict) -> list[str]:
    """What in ``job`` the OpenAPI document's Job schema refuses."""
    from openapi_schema_validator import OAS31Validator

    from web.openapi import SPEC

    validator = OAS31Validator({"$ref": "#/components/schemas/Job", "components": SPEC["components"]})
    return [e.message for e in validator.iter_errors(job)]


# -- without a worker: the form's fields and the routes' answers -----------------------------

@pytest.fixture
def app_settings():
    return {"max_content_length": 2 * 1024 * 1024}


@pytest.fixture(scope="module")
def small_png(photo) -> bytes:
    return encode(np.asarray(Image.fromarray(photo).resize((128, 96))))


def post(client, image: bytes | None, guide=None, **fields):
    data: dict = dict(fields)
    if image is not None:
        data["image"] = (io.BytesIO(image), "photo.png")
    if guide is not None:
        data["guide"] = guide
    return client.post("/api/v1/jobs", data=data, content_type="multipart/form-data")


ZOOM_ERRORS = [("frames", "1"), ("frames", "601"), ("frames", "many"), ("zoom", "0.9"), ("zoom", "1.3"),
               ("rotate", "45"), ("fps", "0"), ("fps", "61"), ("format", "avi")]


@pytest.mark.parametrize("field,value", ZOOM_ERRORS, ids=[f"{f}={v}" for f, v in ZOOM_ERRORS])
def test_each_bad_zoom_field_is_a_422_naming_it(client, clean_redis, small_png, field, value):
    error = assert_error(post(client, small_png, **{**ZOOM, field: value}), 422, field, "invalid_params")
    assert set(error["fields"]) == {field}, error
    assert not clean_redis.exists(keys.JOBS)


def test_zoom_fields_belong_to_the_zoom_kind_and_the_work_is_capped(client, small_png, jpeg):
    # A video field on a picture job is an unknown parameter; an unknown kind is named.
    assert "unknown" in assert_error(post(client, small_png, frames="4"), 422, "frames")["fields"]["frames"]
    assert_error(post(client, small_png, kind="movie"), 422, "kind")
    # gif plays at most 50 fps: the kind's own cross-field check, named.
    assert_error(post(client, small_png, **{**ZOOM, "format": "gif", "fps": "60"}), 422, "fps")
    # frames x pixels over DREAMQ_ZOOM_MAX_WORK, known once the upload is decoded (512x512 here).
    error = assert_error(post(client, jpeg, **{**ZOOM, "frames": "600"}), 422, "frames", "invalid_params")
    assert "DREAMQ_ZOOM_MAX_WORK" in error["fields"]["frames"]
    # Blank fields take the defaults (an untouched HTML form): a zoom job of 48 frames, mp4.
    r = post(client, small_png, kind="zoom", model="vgg16_hed", frames="", zoom="", rotate="", fps="", format="")
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert job["kind"] == "zoom" and job["params"]["frames"] == 48 and job["params"]["format"] == "mp4"
    assert job["progress"]["frames"] == 48 and job["links"]["frame"] is None
    assert not job_schema_errors(job)


def test_guide_upload_errors_name_the_guide(client, clean_redis, small_png, photo):
    text = (io.BytesIO(b"<html>not an image</html>"), "guide.png")
    assert_error(post(client, small_png, guide=text, model="vgg16_hed"), 415, "guide", "unsupported_image")
    assert_error(post(client, small_png, guide=(io.BytesIO(bomb_png()), "g.png")), 413, "guide", "image_too_large")
    assert_error(post(client, small_png, guide=(io.BytesIO(b""), "g.png")), 415, "guide")
    assert_error(post(client, small_png, guide="guide.png"), 422, "guide")  # a text field, not a file
    two = [(io.BytesIO(small_png), "a.png"), (io.BytesIO(small_png), "b.png")]
    assert_error(post(client, small_png, guide=two), 422, "guide")
    # guide_layer needs a guide, and a layer of the model.
    assert_error(post(client, small_png, model="vgg16_hed", guide_layer="block4_conv3"), 422, "guide_layer")
    assert_error(post(client, small_png, guide=(io.BytesIO(small_png), "g.png"), model="vgg16_hed",
                      guide_layer="mixed4"), 422, "guide_layer")
    # Other file fields are still refused; the photo's own errors still name the photo.
    r = client.post("/api/v1/jobs", data={"image": (io.BytesIO(small_png), "a.png"),
                                          "mask": (io.BytesIO(small_png), "m.png")},
                    content_type="multipart/form-data")
    assert_error(r, 422, "mask")
    assert_error(post(client, b"not an image", guide=(io.BytesIO(small_png), "g.png")), 415, "image")
    assert not clean_redis.exists(keys.JOBS)


def test_a_guide_is_stored_fitted_and_an_empty_guide_part_is_no_guide(app, client, small_png, photo):
    store = app.extensions["dreamq"].store
    big = encode(photo)  # 512x512: fitted to vgg16_hed's guide side, 224
    r = post(client, small_png, guide=(io.BytesIO(big), "g.png"), model="vgg16_hed", guide_layer="block4_conv3")
    assert r.status_code == 202, r.get_json()
    job_id = r.get_json()["id"]
    assert Image.open(io.BytesIO(store.get(job_id, "guide.png"))).size == (224, 224)
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert f'src="/jobs/{job_id}/guide"' in html and f'src="/jobs/{job_id}/input"' in html
    assert client.get(f"/jobs/{job_id}/guide").mimetype == "image/png"
    # What a browser sends for an untouched optional file input: no guide at all.
    r = post(client, small_png, guide=(io.BytesIO(b""), ""), model="vgg16_hed")
    assert r.status_code == 202, r.get_json()
    assert store.get(r.get_json()["id"], "guide.png") is None
    assert client.get(f"/jobs/{r.get_json()['id']}/guide").status_code == 404


def _run_as_worker(app, clean_redis, job_id: str, frames: list[np.ndarray]) -> None:
    """Start the job and store ``frames`` as the zoom kind does, with its progress."""
    state, store = app.extensions["dreamq"].state, app.extensions["dreamq"].store
    dispatch = clean_redis.hget(keys.job(job_id), "dispatch").decode()
    assert state.start(job_id, dispatch, "host:1") == "ok"
    for k, frame in enumerate(frames):
        store.put(job_id, f"frames/{k:05d}.png", encode(frame))
        state.update(job_id, "host:1", progress={"fraction": (k + 1) / 4, "frame": k, "frames": 4,
                                                 "frames_done": k + 1, "octave": None, "octaves": 1, "step": None,
                                                 "steps": 2, "loss": None, "eta_s": 1.0})


def test_frames_while_running_and_after_a_cancel(app, client, clean_redis, small_png, photo):
    job_id = post(client, small_png, **ZOOM).get_json()["id"]
    assert_error(client.get(f"/api/v1/jobs/{job_id}/frames/0"), 404, code="no_frame")  # queued: none yet
    frame = np.asarray(Image.fromarray(photo).resize((128, 96)))
    _run_as_worker(app, clean_redis, job_id, [frame, frame[::-1]])

    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert job["links"]["frame"] == f"/api/v1/jobs/{job_id}/frames/1" and not job_schema_errors(job)
    r = client.get(job["links"]["frame"])
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.data))), frame[::-1])
    assert client.get(job["links"]["frame"], headers={"If-None-Match": r.headers["ETag"]}).status_code == 304
    error = assert_error(client.get(f"/api/v1/jobs/{job_id}/frames/2"), 404, code="no_frame")
    assert "not finished" in error["message"]
    error = assert_error(client.get(f"/api/v1/jobs/{job_id}/frames/99"), 404, code="no_frame")
    assert "out of range" in error["message"]
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert f'src="/jobs/{job_id}/frames/1"' in html and 'id="frames-done">2<' in html

    # Canceled while running: the worker stops; the frames it made stay, and the page shows them.
    state = app.extensions["dreamq"].state
    assert state.cancel(job_id) == "running"
    state.finish(job_id, "host:1", "canceled", error={"code": "canceled", "message": "canceled while running"})
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "canceled" in html and 'id="frame-box" hidden' not in html
    assert f'href="/jobs/{job_id}/frames/0"' in html and f'href="/jobs/{job_id}/frames/1"' in html
    assert client.get(f"/jobs/{job_id}/frames/1").status_code == 200
    assert "canceled" in assert_error(client.get(f"/api/v1/jobs/{job_id}/frames/2"), 404, code="no_frame")["message"]
    assert_error(client.get(f"/api/v1/jobs/{job_id}/result"), 409, code="not_succeeded")


def test_an_image_job_has_no_frames_and_its_result_takes_ranges(app, client, clean_redis, small_png):
    from shared.kinds.image import RESULT

    job_id = post(client, small_png, **QUICK).get_json()["id"]
    assert "frame" not in client.get(f"/api/v1/jobs/{job_id}").get_json()["links"]
    assert "kind=zoom" in assert_error(client.get(f"/api/v1/jobs/{job_id}/frames/0"), 404, code="no_frame")["message"]
    state, store = app.extensions["dreamq"].state, app.extensions["dreamq"].store
    dispatch = clean_redis.hget(keys.job(job_id), "dispatch").decode()
    state.start(job_id, dispatch, "host:1")
    store.put(job_id, RESULT, small_png)
    state.finish(job_id, "host:1", "succeeded", result_url="x")
    url = f"/api/v1/jobs/{job_id}/result"
    full = client.get(url)
    assert full.status_code == 200 and full.data == small_png and full.headers["Accept-Ranges"] == "bytes"
    assert full.headers["Content-Disposition"] == f'inline; filename="dream-{job_id}.png"'
    assert "private" in full.headers["Cache-Control"]
    assert client.get(url, headers={"If-None-Match": full.headers["ETag"]}).status_code == 304
    part = client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.data == small_png[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(small_png)}"
    error = assert_error(client.get(url, headers={"Range": f"bytes={len(small_png)}-"}), 416,
                         code="range_not_satisfiable")
    assert error["message"]
    assert client.get(url + "?download=1").headers["Content-Disposition"].startswith("attachment")


def test_the_form_offers_the_video_and_the_guide(client):
    html = client.get("/").get_data(as_text=True)
    assert '<select id="kind" name="kind">' in html and 'value="zoom"' in html
    for name in ("frames", "zoom", "rotate", "fps"):
        assert f'name="{name}"' in html
    from shared.kinds.zoom import ZOOM_DEFAULTS

    # The zoom defaults as placeholders.
    assert f'placeholder="{ZOOM_DEFAULTS["frames"]}"' in html and f'placeholder="{ZOOM_DEFAULTS["zoom"]}"' in html
    assert '<select id="format" name="format"' in html and 'value="webm"' in html
    assert 'name="guide" type="file"' in html and 'name="guide_layer"' in html
    kinds = json.loads(re.search(r'<script type="application/json" id="kinds">(.*?)</script>', html, re.S).group(1))
    assert kinds["zoom"]["fields"] == ["frames", "zoom", "rotate", "fps", "format"] and kinds["zoom"]["guide"]
    assert kinds["zoom"]["defaults"] == {k: ZOOM_DEFAULTS[k] for k in ("octaves", "iterations")}
    assert kinds["image"]["fields"] == []
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'src="/static/' in tag or 'type="application/json"' in tag, tag


def test_a_bad_zoom_form_without_javascript_comes_back_with_its_values(client, small_png):
    r = client.post("/submit", data={"image": (io.BytesIO(small_png), "p.png"), **ZOOM, "frames": "9999"},
                    content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    assert r.status_code == 422 and 'value="9999"' in html and "frames" in html
    assert '<option value="zoom" selected>' in html


# -- live: gunicorn, Redis and a worker process ------------------------------------------------

@pytest.fixture(scope="module")
def live(redis_url, tmp_path_factory):
    """One ready worker and gunicorn on the test Redis for the module; yields (base URL, Service)."""
    import redis

    from bench.load import WebServer

    redis.Redis.from_url(redis_url).flushdb()
    data = tmp_path_factory.mktemp("video_web")
    svc = Service(redis_url, data, {})
    web = WebServer({"DREAMQ_REDIS_URL": redis_url, "DREAMQ_DATA_DIR": str(data)}, data / "web.log",
                    workers=1, threads=4)
    try:
        svc.start_worker(wait=False)
        web.start()
        svc.wait_ready(svc.procs[0].pid)
        yield web.url, svc
    finally:
        web.stop()
        svc.stop()


def wait_done(url: str, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/api/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} still {job['status']}")


def video_frames(data: bytes) -> tuple[list[np.ndarray], float]:
    """The decoded frames of a video file and its frame rate."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate or stream.guessed_rate)


@pytest.mark.slow
def test_a_zoom_video_over_http(live, small_png):
    url, svc = live
    r = requests.post(f"{url}/api/v1/jobs", data=ZOOM, files={"image": ("p.png", small_png, "image/png")}, timeout=30)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    job = wait_done(url, job_id)
    assert job["status"] == "succeeded", (job, svc.read_logs())
    assert not job_schema_errors(job)
    assert job["progress"]["frames_done"] == 4 and job["links"]["frame"] == f"/api/v1/jobs/{job_id}/frames/3"

    result = requests.get(f"{url}{job['links']['result']}", timeout=30)
    assert result.status_code == 200 and result.headers["Content-Type"] == "video/mp4"
    assert result.headers["Accept-Ranges"] == "bytes"
    assert result.headers["Content-Disposition"] == f'inline; filename="dream-{job_id}.mp4"'
    video = result.content
    assert int(result.headers["Content-Length"]) == len(video) > 100
    frames, fps = video_frames(video)
    assert len(frames) == 4 and frames[0].shape == (96, 128, 3) and fps == pytest.approx(4)

    part = requests.get(f"{url}{job['links']['result']}", headers={"Range": "bytes=0-99"}, timeout=30)
    assert part.status_code == 206, part.text
    assert part.headers["Content-Range"] == f"bytes 0-99/{len(video)}"
    assert part.content == video[:100] and part.headers["Content-Length"] == "100"
    tail = requests.get(f"{url}{job['links']['result']}", headers={"Range": "bytes=-10"}, timeout=30)
    assert tail.status_code == 206 and tail.content == video[-10:]
    over = requests.get(f"{url}{job['links']['result']}", headers={"Range": f"bytes={len(video)}-"}, timeout=30)
    assert_error(over, 416, code="range_not_satisfiable")
    assert over.headers["Content-Range"] == f"bytes */{len(video)}"
    same = requests.get(f"{url}{job['links']['result']}", headers={"If-None-Match": result.headers["ETag"]},
                        timeout=30)
    assert same.status_code == 304

    first = requests.get(f"{url}/api/v1/jobs/{job_id}/frames/0", timeout=30)
    assert first.status_code == 200 and first.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(first.content)).size == (128, 96)
    assert_error(requests.get(f"{url}/api/v1/jobs/{job_id}/frames/99", timeout=30), 404, code="no_frame")
    assert_error(requests.get(f"{url}/api/v1/jobs/{job_id}/frames/x", timeout=30), 404)

    page = requests.get(f"{url}/jobs/{job_id}", timeout=30).text
    assert '<video id="result" controls' in page and f'src="/jobs/{job_id}/result"' in page
    assert "Download MP4" in page
    assert requests.get(f"{url}/jobs/{job_id}/result", headers={"Range": "bytes=0-9"}, timeout=30).status_code == 206


@pytest.mark.slow
def test_a_guided_dream_over_http(live, small_png, photo):
    url, svc = live
    guide = encode(np.asarray(Image.fromarray(photo[:256, 256:]).resize((96, 96))))
    r = requests.post(f"{url}/api/v1/jobs", data={**QUICK, "guide_layer": "block3_conv3"}, timeout=30,
                      files={"image": ("p.png", small_png, "image/png"), "guide": ("g.png", guide, "image/png")})
    assert r.status_code == 202, r.text
    job = wait_done(url, r.json()["id"])
    assert job["status"] == "succeeded", (job, svc.read_logs())
    assert job["params"]["guide_layer"] == "block3_conv3"
    dream = requests.get(f"{url}{job['links']['result']}", timeout=30)
    assert dream.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(dream.content)).size == (128, 96)
    page = requests.get(f"{url}/jobs/{job['id']}", timeout=30).text
    assert f'src="/jobs/{job["id"]}/guide"' in page


@pytest.mark.slow
def test_the_cli_makes_a_zoom_video(live, small_png, tmp_path):
    from click.testing import CliRunner

    from dreamq.cli import main

    url, svc = live
    src = tmp_path / "photo.png"
    src.write_bytes(small_png)
    out = tmp_path / "dream.webm"
    r = CliRunner().invoke(main, ["submit", str(src), "--server", url, "--kind", "zoom", "--frames", "4",
                                  "--fps", "4", "--format", "webm", "--zoom", "1.1", "--model", "vgg16_hed",
                                  "--layers", "block3_conv3=1", "--octaves", "1", "--iterations", "2",
                                  "--wait", "-o", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, (r.output, svc.read_logs())
    job_id = r.stdout.strip()
    assert "4/4 frames" in r.stderr and f"wrote {out}" in r.stderr
    served = requests.get(f"{url}/api/v1/jobs/{job_id}/result", timeout=30)
    assert served.headers["Content-Type"] == "video/webm" and out.read_bytes() == served.content
    frames, _ = video_frames(out.read_bytes())
    assert len(frames) == 4
    # Zoom fields on a picture job are refused by the server, by name.
    r = CliRunner().invoke(main, ["submit", str(src), "--server", url, "--frames", "4"], catch_exceptions=False)
    assert r.exit_code == 2 and "frames" in r.stderr
    # --guide uploads the guide beside the photo.
    r = CliRunner().invoke(main, ["submit", str(src), "--server", url, "--guide", str(src), "--model", "vgg16_hed",
                                  "--layers", "block3_conv3=1", "--octaves", "1", "--iterations", "1"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert svc.store.get(r.stdout.strip(), "guide.png") is not None
