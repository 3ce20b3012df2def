"""Screenshots of the pages for the documentation, from a running dreamq, in headless Chromium.

    .venv/bin/python docs/make_screenshots.py http://127.0.0.1:8000 [--token TOKEN]

writes docs/images/form.jpg (the form, a photo chosen), job_running.jpg (a job's page while it
dreams) and job_finished.jpg (the same page once done).  The job is the bundled photo on the
offline vgg16_hed model, sent through the API with cache=false (a cached answer would have no
running page): a fraction of a minute on a CPU.  Needs selenium, Debian's chromium and
chromium-driver (as tests/system/test_browser.py); the server needs a worker holding vgg16_hed.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"
PHOTO = ROOT / "dreamq" / "samples" / "astronaut.jpg"
# Long enough to be caught running (three octaves), short enough for a CPU.
JOB = {"model": "vgg16_hed", "layers": "block3_conv3=1,block4_conv3=1.5", "octaves": "3", "iterations": "12",
       "max_side": "448", "cache": "false"}
WINDOW = (1200, 1300)


def browser(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        sys.exit("needs chromium and chromedriver on PATH")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def log_in(page, base: str, token: str) -> None:
    """The pages take the login cookie: log in through the login form."""
    from selenium.webdriver.common.by import By

    page.get(f"{base}/login?next=/")
    page.find_element(By.NAME, "token").send_keys(token)
    page.find_element(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]").click()


def wait(what: str, condition, timeout: float = 600):
    sys.path.insert(0, str(ROOT))  # bench/ is not installed: it is the checkout's
    from bench.cluster import wait_for

    try:
        return wait_for(condition, timeout, what, every=0.2)
    except TimeoutError:
        sys.exit(f"gave up waiting for {what}")


def shoot(page, path: Path) -> None:
    # The whole page, not only the window: its viewport as tall as the content (plus the window's frame).
    height, frame = page.execute_script("return [document.documentElement.scrollHeight, "
                                        "window.outerHeight - window.innerHeight]")
    page.set_window_size(WINDOW[0], max(WINDOW[1], height + frame))
    # JPEG: the pages are mostly photos, a PNG of them is 4-5 times the size.
    import io

    from PIL import Image

    Image.open(io.BytesIO(page.get_screenshot_as_png())).convert("RGB").save(path, quality=85)
    page.set_window_size(*WINDOW)
    print("wrote", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the running dreamq, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", help="an API token, when the server has DREAMQ_API_TOKENS")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the pictures go (default {OUT})")
    args = parser.parse_args()
    out = args.out
    base = args.base.rstrip("/")
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    out.mkdir(parents=True, exist_ok=True)

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with tempfile.TemporaryDirectory(prefix="dreamq-shots-") as profile:
        page = browser(profile)
        try:
            if args.token:
                log_in(page, base, args.token)
            page.get(base + "/")
            page.find_element(By.ID, "image").send_keys(str(PHOTO))
            wait("the photo's thumbnail", lambda: page.find_element(By.ID, "thumb").is_displayed(), 15)
            Select(page.find_element(By.ID, "model")).select_by_value("vgg16_hed")
            shoot(page, out / "form.jpg")

            with PHOTO.open("rb") as f:
                r = requests.post(f"{base}/api/v1/jobs", data=JOB, files={"image": (PHOTO.name, f)},
                                  headers=headers, timeout=60)
            r.raise_for_status()
            job_id = r.json()["id"]
            api = f"{base}/api/v1/jobs/{job_id}"
            page.get(f"{base}/jobs/{job_id}")

            # Running, into its second octave: a preview beside the photo and an estimate of the time left.
            def running() -> bool:
                job = requests.get(api, headers=headers, timeout=10).json()
                if job["status"] in ("failed", "canceled"):
                    sys.exit(f"the job {job['status']}: {job.get('error')}")
                return job["status"] == "succeeded" or (job["progress"].get("octave") or 0) >= 1
            wait("the job to run", running)
            wait("the page's preview", lambda: page.find_element(By.ID, "preview").is_displayed()
                 or page.find_element(By.ID, "result-box").is_displayed(), 30)
            time.sleep(1.5)  # a poll or two: the estimate shows
            shoot(page, out / "job_running.jpg")

            wait("the job to finish", lambda: page.find_element(By.ID, "result-box").is_displayed())
            wait("the dream to load", lambda: page.execute_script(
                "return document.getElementById('result').naturalWidth > 0"), 30)
            shoot(page, out / "job_finished.jpg")
        finally:
            page.quit()


if __name__ == "__main__":
    main()
