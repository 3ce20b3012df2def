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


# -- Dream again, settings from a result PNG, the presets gallery (issue 21) --------------------

def form_values(html: str) -> dict[str, str]:
    """What a browser would send for the form's named fields (files aside): input values and the
    selected option of each select (else its first)."""
    from html.parser import HTMLParser

    class Fields(HTMLParser):
        def __init__(self):
            super().__init__()
            self.values: dict[str, str] = {}
            self.select: str | None = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "input" and a.get("name") and a.get("type") != "file":
                self.values[a["name"]] = a.get("value") or ""
            elif tag == "select":
                self.select = a.get("name")
            elif tag == "option" and self.select and (self.select not in self.values or "selected" in a):
                self.values[self.select] = a.get("value") or ""

        def handle_endtag(self, tag):
            if tag == "select":
                self.select = None

    parser = Fields()
    parser.feed(html.split('id="dream-form"', 1)[1])
    return parser.values


def test_dream_again_fills_the_form_with_the_jobs_parameters(client, jpeg, clean_redis):
    asked = {"kind": "zoom", "model": "vgg16_hed", "preset": "textures", "octaves": "2", "iterations": "3",
             "step": "2.25", "seed": "42", "jitter": "4", "frames": "7", "fps": "6", "zoom": "1.1", "format": "gif"}
    job_id = submit(client, jpeg, **asked)
    r = client.get(f"/?again={job_id}")
    html = r.get_data(as_text=True)
    assert r.status_code == 200
    assert f'href="/jobs/{job_id}"' in html and "again" in html.split('id="again-notice"')[1][:300]
    assert 'id="attach-again"' in html and "Attach the photo" in html  # a file field cannot be filled
    assert "<details open" in html  # the filled-in advanced fields are shown
    values = form_values(html)
    assert {k: values[k] for k in asked} == asked
    # The preset's and the model's values are written out too: the same job whatever the defaults become.
    assert values["layers"] == "block2_conv2=1,block3_conv3=2" and values["max_loss"] == "none"
    assert values["precision"] == "fp32" and values["rotate"] == "0" and values["max_side"] == ""
    assert '<option value="textures" data-model="vgg16_hed" selected>' in html
    assert_no_inline_script(html)
    # Sent back as it stands (with the photo again), the form makes the same job.
    again = submit(client, jpeg, **values)
    first, second = (json.loads(clean_redis.hget(keys.job(i), "params")) for i in (job_id, again))
    assert second == first and clean_redis.hget(keys.job(again), "kind") == b"zoom"


def test_dream_again_of_an_unknown_or_foreign_job_is_a_plain_form(redis_url, clean_redis, tmp_path, jpeg):
    mine, theirs = "mine-" + "a" * 32, "theirs-" + "b" * 32
    app = make_app(redis_url, tmp_path, api_tokens=[mine, theirs])
    owner, other = app.test_client(), app.test_client()
    for client, token in ((owner, mine), (other, theirs)):
        assert client.post("/login", data={"token": token, "next": "/"}).status_code == 303
    job_id = submit(owner, jpeg, model="vgg16_hed", seed="4242")
    assert 'value="4242"' in owner.get(f"/?again={job_id}").get_data(as_text=True)
    for bad in (job_id, str(uuid.uuid4()), "nope", "../../etc/passwd", "x" * 5000):
        r = other.get("/", query_string={"again": bad})
        html = r.get_data(as_text=True)
        assert r.status_code == 200 and "no job of yours" in html, bad
        assert 'value="4242"' not in html and job_id not in html and 'id="attach-again"' not in html
        assert form_values(html)["model"] == "inception_v3"  # the plain form's default
    r = app.test_client().get(f"/?again={job_id}")  # not logged in: the login page first, as for any page
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")


def test_form_offers_to_load_settings_from_a_dreamq_png(client):
    html = client.get("/").get_data(as_text=True)
    box = html.split('id="settings-drop"', 1)[1].split("</div>", 1)[0]
    assert 'type="file"' in box and 'accept="image/png"' in box and "dreamq PNG" in box
    assert "name=" not in box.split("<input", 1)[1].split(">", 1)[0]  # only read by the script, never sent
    assert 'id="photo-settings"' in html and 'id="settings-note"' in html


def test_presets_gallery_has_a_card_per_preset_and_thumbnails_that_exist(app, client, tmp_path):
    from PIL import Image

    from shared.models import MODELS

    # Thumbnails are rendered separately: the gallery shows those whose files exist, text cards for the rest.
    static = tmp_path / "static"
    (static / "presets").mkdir(parents=True)
    (static / "presets" / "vgg16_hed-textures.jpg").write_bytes(encode(Image.new("RGB", (8, 8)), "JPEG"))
    app.static_folder = str(static)
    html = client.get("/", query_string={"again": ""}).get_data(as_text=True)
    gallery = html.split('id="preset-gallery"', 1)[1].split("<details", 1)[0]
    groups = dict(re.findall(r'<div class="preset-cards" data-model="([^"]+)" ?(hidden)?>', gallery))
    assert groups == {"inception_v3": "", "vgg16_hed": "hidden"}  # the chosen model's presets are shown
    for model in MODELS.values():
        part = gallery.split(f'data-model="{model.name}"', 1)[1].split('class="preset-cards"', 1)[0]
        assert re.findall(r'data-preset="([^"]+)"', part) == list(model.presets)
    assert gallery.count("<img") == 1 and 'src="/static/presets/vgg16_hed-textures.jpg"' in gallery
    assert "layers block4_conv3=1,block5_conv3=2" in gallery  # a text card says what the preset does
    assert client.get("/static/presets/vgg16_hed-textures.jpg").status_code == 200
    assert_no_inline_script(html)


def test_png_settings_reader_of_the_form_script(tmp_path):
    """form.js's chunk reader (node, no browser) on the chunk shared/provenance.py writes and the other
    spellings of it, and its form values are the ones Dream again fills in."""
    import shutil
    import subprocess

    from PIL import Image, PngImagePlugin

    from shared import provenance
    from shared.params import parse_params

    from ..conftest import ROOT
    from ..webutil import png_chunk

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    params = parse_params({"model": "vgg16_hed", "preset": "intense", "layers": "block2_conv2=0.75", "seed": "7"})
    pixels = Image.new("RGB", (4, 4))
    text = json.dumps({"kind": "image", "params": params.model_dump(mode="json"), "model": "vgg16_hed",
                       "version": "t", "note": "é ✓"})

    def png(**chunks) -> bytes:
        info = PngImagePlugin.PngInfo()
        for kind, args in chunks.items():
            getattr(info, kind)(*args)
        return encode(pixels, pnginfo=info)

    plain = encode(pixels)
    files = {"provenance": encode(pixels, pnginfo=provenance.png_info("image", params, "f" * 64)),
             "zipped": png(add_itxt=("dreamq", text, "", "", True)),
             "latin1": png(add_text=("dreamq", json.dumps({**json.loads(text), "note": "é"}, ensure_ascii=False))),
             "after_pixels": plain[:-12] + png_chunk(b"iTXt", b"dreamq\0\0\0\0\0" + text.encode()) + plain[-12:],
             "other_keyword": png(add_itxt=("Comment", text)),
             "plain": plain, "not_png": b"GIF89a" + bytes(40), "cut": plain[:20]}
    for name, data in files.items():
        (tmp_path / f"{name}.png").write_bytes(data)
    script = ("const p = require(process.argv[1]); const fs = require('fs');"
              "Promise.all(process.argv.slice(2).map(f => p.readSettings(fs.readFileSync(f))))"
              ".then(r => console.log(JSON.stringify(r.map(s => s && [s.params, p.formValues(s)]))));")
    proc = subprocess.run([node, "-e", script, str(ROOT / "web" / "static" / "form.js"),
                           *(str(tmp_path / f"{name}.png") for name in files)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    found = dict(zip(files, json.loads(proc.stdout)))
    want = params.model_dump(mode="json")
    for name in ("provenance", "zipped", "latin1", "after_pixels"):
        assert found[name] is not None and found[name][0] == want, name
    assert all(found[name] is None for name in ("other_keyword", "plain", "not_png", "cut"))
    assert found["provenance"][0]["layers"] == {"block2_conv2": 0.75}
    from shared.params import form_value

    dream_again = {k: form_value(k, v) for k, v in want.items() if v is not None or k == "max_loss"}
    assert {k: v for k, v in found["provenance"][1].items() if v != ""} == {**dream_again, "kind": "image"}


# -- the job page: what ran, how long, the photo beside the dream ------------------------------

def run_as_worker(app, job_id: str, result: bytes, warnings=(), **fields) -> None:
    """Start and finish ``job_id`` through Jobs as a worker does: its warnings, its result, its metrics."""
    state = app.extensions["dreamq"].state
    assert state.start(job_id, state.get(job_id).dispatch, "host:1") == "ok"
    if warnings:
        state.update(job_id, "host:1", warnings=list(warnings))
    url = app.extensions["dreamq"].store.put(job_id, "result.png", result)
    assert state.finish(job_id, "host:1", "succeeded", result_url=url, **fields) == "ok"


def facts(html: str, dl: str) -> dict[str, str]:
    """The id -> text of a job page's list (``params`` or ``timing``), tags and spaces squeezed."""
    body = re.search(rf'<dl id="{dl}"[^>]*>(.*?)</dl>', html, re.S).group(1)
    return {k: " ".join(re.sub(r"<[^>]+>", " ", v).split())
            for k, v in re.findall(r'<dd id="(?:param|timing)-([a-z_]+)">(.*?)</dd>', body, re.S)}


def test_job_page_shows_what_ran_how_long_and_the_photo_beside_the_dream(app, client, photo):
    picture = encode(photo[:300, :400])
    job_id = submit(client, picture, model="vgg16_hed", layers="block3_conv3=1,block4_conv3=2", octaves="2",
                    iterations="4", seed="7", precision="auto", cache="false")
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert facts(html, "timing")["queued"].endswith(" s") and "ran" not in facts(html, "timing")
    assert 'id="timing-queued-label">Queued for (so far)<' in html

    warning = "bf16 requested; this CPU has no native bf16, so it ran fp32"
    run_as_worker(app, job_id, encode(255 - photo[:300, :400]), warnings=[warning], dream_s=2.5, precision="fp32")
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    params = facts(html, "params")
    assert params["model"] == "vgg16_hed" and params["layers"] == "block3_conv3=1, block4_conv3=2"
    assert params["octaves"] == "2, each 1.4x the last" and params["iterations"] == "4 per octave"
    assert params["precision"] == "fp32 (asked auto)" and params["seed"] == "7" and params["step"]
    assert params["guide"] == "none" and "frames" not in params
    assert "It ran differently from what was asked" in html and warning in html
    assert 'id="warnings-box" hidden' not in html
    timing = facts(html, "timing")
    assert re.fullmatch(r"\d+\.\d s", timing["queued"]) and re.fullmatch(r"\d+\.\d s \(dreaming 2\.5 s\)", timing["ran"])
    assert 'id="timing-ran-label">Ran for<' in html
    assert f'<a id="again" class="button" href="/?again={job_id}">Dream again</a>' in html
    assert 'id="cached"' not in html
    # Side by side, each at the picture's size (the page knows it from the stored PNG's header).
    compare = html[html.index('<div class="compare">'):html.index('<div class="facts">')]
    assert re.search(rf'<img id="input" alt="The photo" src="/jobs/{job_id}/input"\s+width="400" height="300">',
                     compare)
    assert re.search(rf'<img id="result" alt="The dream" src="/jobs/{job_id}/result"\s+width="400" height="300">',
                     compare)
    assert_no_inline_script(html)


def test_a_cache_hit_says_it_was_served_from_an_earlier_identical_job(app, client, clean_redis, photo):
    from .test_cache import beat

    beat(clean_redis)  # a ready worker with its weights fingerprint: the web computes cache keys
    picture, fields = encode(photo[:200, :200]), {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": "2"}
    first = submit(client, picture, **fields)
    run_as_worker(app, first, encode(photo[:200, :200][::-1]), dream_s=1.0, precision="fp32")
    assert 'id="cached"' not in client.get(f"/jobs/{first}").get_data(as_text=True)

    second = submit(client, picture, **fields)
    assert second != first
    html = client.get(f"/jobs/{second}").get_data(as_text=True)
    mark = re.search(r'<p id="cached" class="cached">(.*?)</p>', html, re.S).group(1)
    assert "Served from an earlier identical job" in mark and f'href="/jobs/{first}"' in mark
    assert facts(html, "timing") == {"answered": "at once, from the result cache"}
    assert facts(html, "params")["precision"] == "fp32"  # as the earlier job ran it
    # Its pictures are the earlier job's files, read through its own routes.
    assert f'src="/jobs/{second}/input"' in html and f'src="/jobs/{second}/result"' in html
    assert client.get(f"/jobs/{second}/input").status_code == 200
    assert f'href="/?again={second}"' in html


def test_a_zoom_job_page_shows_the_video_at_its_own_size_with_frames_and_fps(app, client, photo):
    picture = encode(photo[:97, :131])  # odd sides: an mp4 loses its last row and column
    job_id = submit(client, picture, kind="zoom", model="vgg16_hed", layers="block3_conv3=1", frames="6", fps="4",
                    zoom="1.1", rotate="2", octaves="1", iterations="2")
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    params = facts(html, "params")
    assert params["frames"] == "6" and params["fps"] == "4" and params["zoom"] == "1.1" and params["rotate"] == "2"
    assert params["format"] == "mp4" and params["iterations"] == "2 per octave"
    assert re.search(r'<video id="result"[^>]*\swidth="130" height="96"', html)
    assert 'class="compare compare-native"' in html  # the stylesheet only shrinks it
    assert '<span id="video-facts">6 frames at 4 fps: 1.5 s, 130×96 px</span>' in html
