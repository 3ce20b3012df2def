"""A person in a real browser: headless Chromium submits the form against a running
service with a real worker, watches the progress bar move, sees the dream and downloads it.

Needs Debian's chromium and chromium-driver (`.ci/run` installs them).
"""
import io
import re
import shutil
import threading
import time

import numpy as np
import pytest
import requests
from PIL import Image

selenium = pytest.importorskip("selenium")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromium-driver")


@pytest.fixture
def web_server(service):
    from werkzeug.serving import make_server

    from web import create_app

    app = create_app(service.settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,1400", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def dream_with(browser, fields: dict[str, str]) -> None:
    """Pick vgg16_hed (offline), open the advanced fields, fill these in and press Dream."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "model")).select_by_value("vgg16_hed")
    browser.find_element(By.CSS_SELECTOR, "details summary").click()
    for name, value in fields.items():
        field = browser.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#dream-form button[type=submit]").click()


def watch_job_page(browser, read, timeout: float) -> tuple[str, set, bool]:
    """Once the form has led to the job page: ``read()`` every 0.1 s until the result shows.
    Returns (job id, the values read, whether the result showed within ``timeout``)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 15).until(lambda d: "/jobs/" in d.current_url)
    job_id = browser.current_url.rstrip("/").rsplit("/", 1)[1]
    seen = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.add(read())
        if browser.find_element(By.ID, "result-box").is_displayed():
            return job_id, seen, True
        time.sleep(0.1)
    return job_id, seen, False


def test_submit_watch_and_download_in_a_browser(service, web_server, browser, photo, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    service.start_worker()
    src = tmp_path / "holiday photo.jpg"
    Image.fromarray(photo).resize((192, 192)).save(src, quality=92)

    browser.get(web_server + "/")
    browser.find_element(By.ID, "image").send_keys(str(src))
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "thumb").is_displayed())
    dream_with(browser, {"layers": "block3_conv3=1", "octaves": "2", "iterations": "60"})

    job_id, values, shown = watch_job_page(
        browser, lambda: float(browser.find_element(By.ID, "bar").get_attribute("value") or 0), 120)
    if not shown:
        pytest.fail(f"no result on the page; bar values {sorted(values)}; logs: {service.read_logs()}")
    moving = sorted(v for v in values if 0 < v < 1)
    assert len(moving) >= 2, f"the progress bar never moved: {sorted(values)}"

    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script("return document.getElementById('result').naturalWidth") == 192)
    browser.save_screenshot(str(tmp_path / "job_page.png"))
    assert browser.find_element(By.ID, "status").text == "succeeded"

    href = browser.find_element(By.ID, "download").get_attribute("href")
    response = requests.get(href, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    assert "attachment" in response.headers.get("Content-Disposition", "")
    dream = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert dream.shape == (192, 192, 3)
    assert service.state.get(job_id).status == "succeeded"


def test_a_zoom_video_from_the_form_plays_in_the_browser(service, web_server, browser, photo, tmp_path):
    """The form's "Zoom video" choice, its fields, and the job page's player: the <video> loads the
    result (by byte ranges, as Chromium asks) and lasts frames/fps.  Debian's Chromium plays H.264,
    so this is the default format, mp4."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    service.start_worker()
    src = tmp_path / "photo.jpg"
    Image.fromarray(photo).resize((128, 96)).save(src, quality=92)
    frames, fps = 6, 6

    browser.get(web_server + "/")
    browser.find_element(By.ID, "image").send_keys(str(src))
    assert not browser.find_element(By.ID, "frames").is_displayed()  # a picture's form has no video fields
    Select(browser.find_element(By.ID, "kind")).select_by_value("zoom")
    assert browser.find_element(By.ID, "guide").is_displayed()
    from shared.kinds.zoom import ZOOM_DEFAULTS
    from shared.models import MODELS

    iterations = browser.find_element(By.ID, "iterations").get_attribute("placeholder")
    assert iterations == str(ZOOM_DEFAULTS["iterations"])  # the zoom default, not the picture's
    # The model's own default for a zoom frame (vgg16_hed dreams a zoom harder than a still).
    step = MODELS[Select(browser.find_element(By.ID, "model")).first_selected_option.get_attribute("value")]
    assert browser.find_element(By.ID, "step").get_attribute("placeholder") == str(
        step.kind_defaults.get("zoom", {}).get("step", step.step))
    for name, value in {"frames": frames, "fps": fps, "zoom": "1.1", "rotate": "3"}.items():
        field = browser.find_element(By.ID, name)
        assert field.is_displayed(), name
        field.send_keys(str(value))
    dream_with(browser, {"layers": "block3_conv3=1", "octaves": "1", "iterations": "2"})

    job_id, counts, shown = watch_job_page(browser, lambda: browser.find_element(By.ID, "frames-done").text, 180)
    if not shown:
        pytest.fail(f"no video on the page; frame counts {sorted(counts)}; logs: {service.read_logs()}")
    job = service.state.get(job_id)
    assert job.status == "succeeded" and job.kind == "zoom" and job.params["frames"] == frames
    assert browser.find_element(By.ID, "frames-done").text == str(frames)

    state = WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "var v = document.getElementById('result');"
        "return v.readyState >= 2 ? [v.readyState, v.duration, v.videoWidth, v.videoHeight, v.currentSrc] : null;"))
    _, duration, width, height, current = state
    browser.save_screenshot(str(tmp_path / "zoom_page.png"))
    assert current.endswith(f"/jobs/{job_id}/result")
    assert (width, height) == (128, 96)
    # Shown at its own pixel size (not stretched to the page), with what it is in words.
    assert browser.execute_script("return document.getElementById('result').getBoundingClientRect().width") == 128
    assert browser.find_element(By.ID, "video-facts").text == f"{frames} frames at {fps} fps: 1.0 s, 128×96 px"
    assert duration == pytest.approx(frames / fps, rel=0.1), state
    href = browser.find_element(By.ID, "download").get_attribute("href")
    response = requests.get(href, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "video/mp4"
    assert "attachment" in response.headers.get("Content-Disposition", "")


def test_the_form_loads_settings_from_a_result_png_and_picks_presets_from_the_gallery(web_server, browser, tmp_path):
    """A result PNG's dreamq chunk (shared/provenance.py) fills the form, from the settings control or
    offered when it is picked as the photo; the gallery follows the model and a card chooses its preset."""
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from shared import provenance
    from shared.kinds import KINDS

    params = KINDS["zoom"].parse({"model": "vgg16_hed", "preset": "textures", "seed": "5", "frames": "9",
                                  "format": "gif", "octaves": "2"})
    dream = tmp_path / "dream.png"
    Image.new("RGB", (64, 64), (90, 40, 160)).save(dream, pnginfo=provenance.png_info("zoom", params, "ab" * 32))

    def value(name):
        return browser.find_element(By.ID, name).get_attribute("value")

    def cards():
        return [c.get_attribute("data-preset") for c in browser.find_elements(By.CSS_SELECTOR, ".preset-card")
                if c.is_displayed()]

    browser.get(web_server + "/")
    assert browser.find_element(By.ID, "preset-gallery").is_displayed() and cards() == ["seed", "shallow", "deep",
                                                                                         "intense"]
    Select(browser.find_element(By.ID, "model")).select_by_value("vgg16_hed")
    assert cards() == ["seed", "textures", "shapes", "intense"]  # the gallery follows the model

    browser.find_element(By.ID, "settings-file").send_keys(str(dream))
    note = WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "settings-note").text.startswith("Loaded") and
        d.find_element(By.ID, "settings-note").text)
    assert "dream.png" in note and "frames 9" in note and "preset textures" in note, note
    assert (value("kind"), value("model"), value("preset")) == ("zoom", "vgg16_hed", "textures")
    assert (value("frames"), value("format"), value("seed"), value("octaves")) == ("9", "gif", "5", "2")
    assert value("layers") == "block2_conv2=1,block3_conv3=2" and value("max_loss") == "none"
    assert browser.find_element(By.ID, "frames").is_displayed()  # the kind's fields are shown
    pressed = browser.find_element(By.CSS_SELECTOR, ".preset-card[aria-pressed=true]")
    assert pressed.get_attribute("data-preset") == "textures"

    browser.find_element(By.CSS_SELECTOR, '.preset-cards[data-model=vgg16_hed] [data-preset=shapes]').click()
    assert value("preset") == "shapes" and value("layers") == "" and value("seed") == "5"
    assert browser.find_element(By.ID, "layers").get_attribute("placeholder") == "block4_conv3=1,block5_conv3=2"

    browser.find_element(By.ID, "image").send_keys(str(dream))  # the result as the photo: offered, not forced
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "photo-settings").is_displayed())
    assert value("preset") == "shapes"
    browser.find_element(By.ID, "photo-settings-load").click()
    assert value("preset") == "textures" and value("layers") == "block2_conv2=1,block3_conv3=2"


def box(browser, element_id: str) -> dict:
    """The element's box on the page (CSS pixels), and whether it is shown."""
    return browser.execute_script(
        "var e = document.getElementById(arguments[0]), r = e.getBoundingClientRect();"
        "return {left: r.left, top: r.top, width: r.width, bottom: r.bottom, shown: e.offsetParent !== null};",
        element_id)


def test_the_job_page_shows_photo_and_dream_side_by_side_what_ran_and_a_cache_hit(service, web_server, browser,
                                                                                  photo, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    service.start_worker()
    src = tmp_path / "photo.jpg"
    Image.fromarray(photo).resize((320, 240)).save(src, quality=92)
    fields = {"layers": "block3_conv3=1", "octaves": "2", "iterations": "3", "seed": "5"}

    def dream_twice_over(n: int) -> str:
        browser.get(web_server + "/")
        browser.find_element(By.ID, "image").send_keys(str(src))
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "thumb").is_displayed())
        dream_with(browser, fields)
        job_id, _, shown = watch_job_page(browser, lambda: None, 120)
        if not shown:
            pytest.fail(f"job {n}: no result on the page; logs: {service.read_logs()}")
        WebDriverWait(browser, 10).until(lambda d: d.execute_script(
            "return document.getElementById('result').naturalWidth && document.getElementById('input').naturalWidth"))
        return job_id

    first = dream_twice_over(1)
    photo_box, dream_box = box(browser, "input"), box(browser, "result")
    assert photo_box["shown"] and dream_box["shown"]
    assert photo_box["width"] >= 300 and dream_box["width"] >= 300, (photo_box, dream_box)
    assert photo_box["left"] + photo_box["width"] <= dream_box["left"], "side by side, the photo first"
    assert abs(photo_box["top"] - dream_box["top"]) < 5
    params = {dt.text: dd.text for dt, dd in zip(browser.find_elements(By.CSS_SELECTOR, "#params dt"),
                                                   browser.find_elements(By.CSS_SELECTOR, "#params dd"))}
    assert params["Model"] == "vgg16_hed" and params["Layers"] == "block3_conv3=1" and params["Seed"] == "5"
    assert params["Iterations"] == "3 per octave" and params["Guide"] == "none" and params["Precision"]
    assert re.fullmatch(r"\d+\.\d s \(dreaming \d+\.\d s\)", browser.find_element(By.ID, "timing-ran").text)
    assert browser.find_element(By.ID, "again").get_attribute("href") == f"{web_server}/?again={first}"
    assert not browser.find_elements(By.ID, "cached")
    browser.save_screenshot(str(tmp_path / "job_page.png"))

    # The same photo and parameters again (the form's cache is on): answered from the first.
    second = dream_twice_over(2)
    assert second != first
    mark = browser.find_element(By.ID, "cached")
    assert mark.is_displayed() and "Served from an earlier identical job" in mark.text
    assert mark.find_element(By.TAG_NAME, "a").get_attribute("href") == f"{web_server}/jobs/{first}"
    assert browser.find_element(By.ID, "timing-answered").text == "at once, from the result cache"

    # A narrow screen stacks them, the photo above.
    browser.set_window_size(420, 1400)
    photo_box, dream_box = box(browser, "input"), box(browser, "result")
    assert photo_box["bottom"] <= dream_box["top"], (photo_box, dream_box)
