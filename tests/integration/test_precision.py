"""What runs is what the worker's device does well, and the job says so; small photos dream.

One real `dreamq worker` process for the module, started with DREAMQ_BF16=off: it
stands for a CPU without bf16 instructions (an AMD Zen 3, say) on any machine.
Submissions go through the web (Flask test client) into the same Redis and store.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from web import create_app

from ..conftest import QUICK, Service
from ..webutil import encode, post_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(redis_url, tmp_path_factory):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    svc = Service(redis_url, tmp_path_factory.mktemp("precision"),
                  {"DREAMQ_BF16": "off", "DREAMQ_INCEPTION_V3_WEIGHTS": "random"})
    svc.start_worker()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def client(service):
    return create_app(service.settings).test_client()


def run(client, service, image: np.ndarray, **fields) -> dict:
    r = post_job(client, encode(image), "photo.png", **{k: str(v) for k, v in fields.items()})
    assert r.status_code == 202, r.get_json()
    service.wait(r.get_json()["id"])
    return client.get(f"/api/v1/jobs/{r.get_json()['id']}").get_json()


def result_of(client, job: dict) -> np.ndarray:
    r = client.get(f"/api/v1/jobs/{job['id']}/result")
    assert r.status_code == 200, r.get_json()
    return np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB"))


def test_the_worker_tells_whether_it_has_native_bf16(client, service):
    info = service.worker_info(service.procs[0].pid)
    assert info["bf16"]["native"] is False and "DREAMQ_BF16=off" in info["bf16"]["reason"]
    assert info["bf16"]["device"].startswith("cpu: ")
    models = {m["name"]: m for m in client.get("/api/v1/models").get_json()["models"]}
    assert models["vgg16_hed"]["ready_workers"] == 1 and models["vgg16_hed"]["bf16_workers"] == 0


def test_bf16_on_a_worker_without_it_runs_fp32_and_says_so(client, service, tiny_photo):
    exact = run(client, service, tiny_photo, **QUICK)
    asked = run(client, service, tiny_photo, **QUICK, precision="bf16")
    auto = run(client, service, tiny_photo, **QUICK, precision="auto")
    assert [j["status"] for j in (exact, asked, auto)] == ["succeeded"] * 3
    assert exact["metrics"]["precision"] == "fp32" and exact["warnings"] == []
    assert asked["params"]["precision"] == "bf16"  # what was asked stays on record...
    assert asked["metrics"]["precision"] == "fp32"  # ...next to what ran
    assert len(asked["warnings"]) == 1 and "bf16 requested" in asked["warnings"][0] and "ran fp32" in asked["warnings"][0]
    assert auto["metrics"]["precision"] == "fp32" and auto["warnings"] == []  # auto: no promise broken
    # It really ran fp32: the exact job's picture, up to rounding in a few pixels
    # (not bit for bit: a run may differ from the next in its last bits).
    diff = np.abs(result_of(client, exact).astype(int) - result_of(client, asked).astype(int))
    assert (diff > 1).mean() < 0.01, (diff > 1).mean()
    page = client.get(f"/jobs/{asked['id']}").get_data(as_text=True)
    assert "bf16 requested" in page


def test_a_small_photo_dreams_from_the_first_octave_that_fits(client, service, photo):
    small = np.asarray(Image.fromarray(photo).resize((224, 150), Image.LANCZOS))
    r = post_job(client, encode(small), "small.png", model="inception_v3", iterations="2")
    assert r.status_code == 202, r.get_json()
    submitted = r.get_json()
    assert len(submitted["warnings"]) == 1 and "dreamed 2 octaves from 160x107" in submitted["warnings"][0]
    job = service.wait(submitted["id"])
    assert job.status == "succeeded", job.error
    done = client.get(f"/api/v1/jobs/{job.id}").get_json()
    assert done["warnings"] == submitted["warnings"]
    out = result_of(client, done)
    assert out.shape == small.shape and np.abs(out.astype(int) - small.astype(int)).mean() > 0.5  # it dreamed


def test_an_image_too_small_even_at_full_size_is_refused(client):
    tiny = np.zeros((90, 200, 3), np.uint8)
    r = post_job(client, encode(tiny), "tiny.png", model="inception_v3")
    assert r.status_code == 422
    error = r.get_json()["error"]
    assert error["code"] == "image_too_small" and "107 px" in error["message"] and "image" in error["fields"]
