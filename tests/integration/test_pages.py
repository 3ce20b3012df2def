"""The HTML pages, as a browser without JavaScript uses them, plus what the scripts rely on."""
from __future__ import annotations

import io
import json
import re
import uuid

import pytest

from shared import keys

from ..webutil import encode, make_app


@pytest.fixture
def app_settings():
    return {"max_content_length": 1024 * 1024}



def form_post(client, image: bytes | None, **fields):
    data = dict(fields)
    if image is not None:
        data["image"] = (io.BytesIO(image), "photo.jpg")
    return client.post("/submit", data=data, content_type="multipart/form-data")


def submit(client, jpeg, **fields) -> str:
    r = form_post(client, jpeg, **fields)
    assert r.status_code == 303, r.data[:300]
    match = re.fullmatch(r"/jobs/([0-9a-f-]{36})", r.headers["Location"])
    assert match
    return match.group(1)


def assert_no_inline_script(html: str) -> None:
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'src="/static/' in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"


def test_form_page_offers_models_presets_and_advanced_parameters(client):
    r = client.get("/")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert 'enctype="multipart/form-data"' in html and 'action="/submit"' in html
    assert 'type="file"' in html and 'accept="image/*"' in html and 'id="thumb"' in html
    assert 'value="inception_v3"' in html and 'value="vgg16_hed"' in html
    assert 'data-model="vgg16_hed"' in html and ">intense (inception_v3)<" in html
    assert "<details" in html and "<summary>Advanced" in html
    for name in ("layers", "step", "octaves", "octave_scale", "iterations", "max_loss", "max_side"):
        assert f'name="{name}"' in html
    assert 'placeholder="mixed4=1,mixed5=1.5,mixed6=2,mixed7=2.5"' in html  # the seed's defaults shown
    catalog = json.loads(re.search(r'<script type="application/json" id="catalog">(.*?)</script>', html, re.S).group(1))
    assert catalog["vgg16_hed"]["defaults"]["max_loss"] == "none"
    assert_no_inline_script(html)
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"]


def test_static_files_are_served(client):
    for name, mimetype in (("form.js", "text/javascript"), ("job.js", "text/javascript"), ("style.css", "text/css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.mimetype == mimetype and r.headers["X-Content-Type-Options"] == "nosniff"
        r.close()


def test_submitting_without_javascript_redirects_to_the_job_page(client, jpeg, clean_redis):
    job_id = submit(client, jpeg, model="vgg16_hed", preset="", layers="", iterations="4")
    record = clean_redis.hgetall(keys.job(job_id))
    assert record[b"status"] == b"queued"
    assert json.loads(record[b"params"])["iterations"] == 4  # blank fields took the defaults
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert job_id in html and "queued" in html and "number 1 in the queue" in html
    assert f'action="/jobs/{job_id}/cancel"' in html
    assert '<meta http-equiv="refresh"' in html  # inside <noscript>: refreshes without JS
    assert f'data-api="/jobs/{job_id}"' in html
    assert_no_inline_script(html)


@pytest.mark.parametrize("fields,status,needle", [
    ({"octaves": "99"}, 422, "octaves"),
    ({"layers": "<script>alert(1)</script>=1"}, 422, "layers"),
    ({"model": "vgg16_hed", "preset": "deep"}, 422, "preset"),
    ({"step": "nan"}, 422, "step"),
])
def test_invalid_form_is_shown_again_with_the_error_and_the_values(client, jpeg, fields, status, needle):
    r = form_post(client, jpeg, **fields)
    html = r.get_data(as_text=True)
    assert r.status_code == status
    assert 'id="form-error"' in html and "hidden>" not in html.split('id="form-error"')[1][:40]
    assert re.search(rf'data-for="{needle}">[^<]+<', html), "the field's message is shown next to it"
    assert "<details open" in html or needle in ("preset",)
    assert "<script>alert" not in html
    if "script" in str(fields):
        assert html.count("&lt;script&gt;") >= 2  # escaped, in the message and in the value
    assert_no_inline_script(html)


@pytest.mark.parametrize("image,status", [(b"not an image", 415), (None, 422), (b"x" * (1024 * 1024 + 10), 413)])
def test_bad_image_in_the_form_is_shown_again(client, image, status):
    r = form_post(client, image, octaves="2")
    assert r.status_code == status
    html = r.get_data(as_text=True)
    assert 'data-for="image">' in html and "Turn a photo" in html


def test_too_small_image_says_how_big_it_must_be(client, photo):
    r = form_post(client, encode(photo[:100, :100]))
    assert r.status_code == 422 and "at least" in r.get_data(as_text=True)


def test_unknown_job_pages_are_html_404(client):
    for bad in ("nope", str(uuid.uuid4()), "x" * 5000, "%2e%2e%2fetc", "../etc/passwd"):
        r = client.get(f"/jobs/{bad}")
        assert r.status_code == 404 and r.mimetype == "text/html"
        assert "no such job" in r.get_data(as_text=True) or "/" in bad or "%2f" in bad
    r = client.post(f"/jobs/{uuid.uuid4()}/cancel")
    assert r.status_code == 404


def test_cancel_button_without_javascript(client, jpeg, clean_redis):
    job_id = submit(client, jpeg)
    r = client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 303 and r.headers["Location"] == f"/jobs/{job_id}"
    assert clean_redis.hget(keys.job(job_id), "status") == b"canceled"
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "canceled" in html and '<meta http-equiv="refresh"' not in html
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 303  # again: no error


def test_finished_job_pages_show_the_result_or_the_error_in_words(app, client, jpeg, clean_redis, photo):
    from shared.kinds.image import RESULT

    done = submit(client, jpeg)
    clean_redis.hset(keys.job(done), mapping={"status": "succeeded", "finished_at": 1.0})
    app.extensions["dreamq"].store.put(done, RESULT, encode(photo))
    html = client.get(f"/jobs/{done}").get_data(as_text=True)
    assert f'src="/jobs/{done}/result"' in html and f'href="/jobs/{done}/result?download=1"' in html
    assert "Download PNG" in html and 'id="result-box" hidden' not in html

    failed = submit(client, jpeg)
    error = {"code": "internal_error", "message": "<img src=x onerror=alert(1)> out of memory"}
    clean_redis.hset(keys.job(failed), mapping={"status": "failed", "error": json.dumps(error)})
    html = client.get(f"/jobs/{failed}").get_data(as_text=True)
    assert "The dream failed" in html and "out of memory" in html
    assert "<img src=x" not in html and "&lt;img src=x" in html


def test_recent_jobs_page_lists_states_and_pages_backwards(redis_url, clean_redis, tmp_path, jpeg, photo):
    from shared.kinds.image import RESULT

    app = make_app(redis_url, tmp_path)
    client = app.test_client()
    ids = [submit(client, jpeg) for _ in range(3)]
    clean_redis.hset(keys.job(ids[0]), "status", "succeeded")
    app.extensions["dreamq"].store.put(ids[0], RESULT, encode(photo))
    html = client.get("/jobs").get_data(as_text=True)
    for job_id in ids:
        assert f'href="/jobs/{job_id}"' in html
    assert html.index(ids[2]) < html.index(ids[0])  # newest first
    assert f'src="/jobs/{ids[0]}/result"' in html and "succeeded" in html and "queued" in html
    first = client.get("/jobs?limit=2").get_data(as_text=True)
    older = re.search(r'href="(/jobs\?cursor=[^"]+)"', first).group(1)
    rest = client.get(older.replace("&amp;", "&")).get_data(as_text=True)
    assert ids[0] in rest and ids[2] not in rest and "Older jobs" not in rest
    assert client.get("/jobs?cursor=%%%").status_code == 422


def test_pages_with_tokens_ask_for_one_and_keep_it_in_a_cookie(redis_url, clean_redis, tmp_path, jpeg):
    token = "s3cret-" + "k" * 32
    client = make_app(redis_url, tmp_path, api_tokens=[token]).test_client()
    r = client.get("/jobs")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=/jobs")
    assert form_post(client, jpeg).status_code == 302  # no submission without a token
    assert client.post("/login", data={"token": "wrong", "next": "/jobs"}).status_code == 401
    r = client.post("/login", data={"token": token, "next": "//evil.example/x"})
    assert r.status_code == 303 and r.headers["Location"] == "/"  # never an open redirect
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/jobs").status_code == 200
    job_id = submit(client, jpeg)
    # The pages' scripts read the pages' own routes with the cookie; the API wants the bearer header.
    assert client.get(f"/jobs/{job_id}/status.json").get_json()["id"] == job_id
    assert client.get(f"/api/v1/jobs/{job_id}").status_code == 401
    assert client.get("/healthz").status_code == 200


def test_page_scripts_parse():
    import shutil
    import subprocess

    from ..conftest import ROOT

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    for name in ("form.js", "job.js"):
        proc = subprocess.run([node, "--check", str(ROOT / "web" / "static" / name)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_form_preselects_a_model_a_worker_has(client, clean_redis):
    import json

    beat = {"id": "h:1", "ready": True, "models": {"vgg16_hed": "ready", "inception_v3": "unavailable: no weights"}}
    clean_redis.set("dreamq:worker:h:1", json.dumps(beat), ex=30)
    clean_redis.sadd("dreamq:workers", "h:1")
    html = client.get("/").get_data(as_text=True)
    assert '<option value="vgg16_hed" selected>' in html
    assert "inception_v3: InceptionV3 (ImageNet), the Keras Deep Dream example (no ready worker has it now)" in html
