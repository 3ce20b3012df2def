"""End to end through real workers: web -> Redis/Celery -> `dreamq worker` -> store -> web.

Needs the ``live_worker`` fixture (tests/conftest.py), which starts `dreamq worker`
processes against ``redis_url``; it yields the Settings the workers use (or an
object with ``.settings``), so that the web reads the same store.
"""
from __future__ import annotations

import io
import threading
import time

import pytest
from click.testing import CliRunner
from PIL import Image
from werkzeug.serving import make_server

from web import create_app

from ..webutil import encode, post_job, sse_events

pytestmark = pytest.mark.slow
# vgg16_hed works offline; 160 px and 2 octaves keep a dream to seconds on a CPU.
SMALL = {"model": "vgg16_hed", "octaves": "2", "iterations": "3", "max_side": "160"}


@pytest.fixture
def worker_settings(request, clean_redis):
    try:
        live = request.getfixturevalue("live_worker")
    except pytest.FixtureLookupError:
        pytest.skip("needs the live_worker fixture in tests/conftest.py")
    return getattr(live, "settings", live)


@pytest.fixture
def client(worker_settings):
    app = create_app(worker_settings.model_copy(update={"events_max_s": 120}))
    client = app.test_client()
    deadline = time.monotonic() + 180
    while client.get("/readyz").status_code != 200:  # models load before a worker is ready
        assert time.monotonic() < deadline, client.get("/readyz").get_json()
        time.sleep(0.5)
    return client


@pytest.fixture(scope="module")
def jpeg(photo) -> bytes:
    return encode(photo, "JPEG", quality=90)


def wait_until(client, job_id: str, statuses, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").get_json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_a_submitted_photo_comes_back_dreamed(client, jpeg, photo):
    models = {m["name"]: m for m in client.get("/api/v1/models").get_json()["models"]}
    assert models["vgg16_hed"]["loaded"]
    job = post_job(client, jpeg, "photo.jpg", **SMALL).get_json()
    events = sse_events(client.get(job["links"]["events"]).get_data(as_text=True))
    assert events[-1][0] == "end" and events[-1][1]["status"] == "succeeded", events[-1]
    assert any(d["status"] == "running" for _, d in events)
    done = client.get(job["links"]["self"]).get_json()
    assert done["progress"]["fraction"] == 1.0 and done["attempts"] == 1 and done["worker"]
    assert done["metrics"]["run_s"] > 0 and done["metrics"]["queue_s"] >= 0 and done["finished_at"]
    result = client.get(done["links"]["result"])
    assert result.status_code == 200 and result.mimetype == "image/png"
    dream = Image.open(io.BytesIO(result.data))
    assert dream.size == (160, 160)
    original = Image.fromarray(photo).resize((160, 160), Image.LANCZOS)
    assert sum(abs(a - b) for a, b in zip(dream.convert("L").getdata(), original.convert("L").getdata())) > 160 * 160
    assert client.get(done["links"]["preview"]).status_code == 200  # previews as octaves finished
    text = client.get("/metrics").get_data(as_text=True)
    assert 'dreamq_jobs_finished_total{model="vgg16_hed",status="succeeded"} 1.0' in text


def test_canceling_a_running_job_stops_it(client, jpeg):
    job = post_job(client, jpeg, "photo.jpg", **{**SMALL, "iterations": "500", "octaves": "3", "max_side": "512"})
    job = job.get_json()
    wait_until(client, job["id"], ("running",), timeout=120)
    assert client.post(job["links"]["cancel"]).status_code == 202
    done = wait_until(client, job["id"], ("canceled", "failed", "succeeded"), timeout=60)
    assert done["status"] == "canceled" and done["error"]["code"] == "canceled"
    assert client.get(done["links"]["self"] + "/result").status_code == 409


def test_the_page_flow_without_javascript(client, jpeg):
    r = client.post("/submit", data={"image": (io.BytesIO(jpeg), "p.jpg"), **SMALL}, content_type="multipart/form-data")
    assert r.status_code == 303
    job_id = r.headers["Location"].rsplit("/", 1)[1]
    wait_until(client, job_id, ("succeeded",))
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert f'src="/jobs/{job_id}/result"' in html and "Download PNG" in html


def test_the_client_waits_and_saves_the_dream(worker_settings, client, tmp_path, photo):
    from dreamq.cli import main

    httpd = make_server("127.0.0.1", 0, create_app(worker_settings), threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        src, out = tmp_path / "in.jpg", tmp_path / "out.png"
        src.write_bytes(encode(photo, "JPEG"))
        args = ["submit", str(src), "--server", f"http://127.0.0.1:{httpd.server_port}", "--wait", "-o", str(out)]
        for name, value in SMALL.items():
            args += [f"--{name.replace('_', '-')}", value]
        r = CliRunner().invoke(main, args, catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert Image.open(out).size == (160, 160)
    finally:
        httpd.shutdown()
