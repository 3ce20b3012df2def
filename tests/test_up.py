"""`dreamq up`, the README's main command: one process tree, embedded Redis, Ctrl-C stops it all."""
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import requests
from PIL import Image

from .conftest import ROOT
from shared.redis_server import free_port


def _up(data_dir, port, log):
    env = {k: v for k, v in os.environ.items() if k != "DREAMQ_REDIS_URL"}
    env.update({"DREAMQ_MODELS": "vgg16_hed", "TF_CPP_MIN_LOG_LEVEL": "3", "DREAMQ_HEARTBEAT_S": "0.5"})
    return subprocess.Popen([sys.executable, "-m", "dreamq.cli", "up", "--port", str(port), "--data-dir", str(data_dir)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(base, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "dreamq up exited"
        try:
            if requests.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError("dreamq up never became ready")


def _stop(proc):
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(90) == 0
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"


def test_up_serves_a_dream_and_keeps_jobs_across_restarts(tmp_path, photo):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "up.log", "w")
    proc = _up(tmp_path / "data", port, log)
    try:
        _wait_ready(base, proc)
        buf = io.BytesIO()
        Image.fromarray(photo[:96, :96]).save(buf, format="PNG")
        form = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": "1", "iterations": "3"}
        r = requests.post(base + "/api/v1/jobs", files={"image": ("p.png", buf.getvalue(), "image/png")}, data=form,
                          timeout=10)
        assert r.status_code == 202, r.text
        job_url = base + r.headers["Location"]
        deadline = time.monotonic() + 60
        while requests.get(job_url, timeout=5).json()["status"] != "succeeded":
            assert time.monotonic() < deadline, requests.get(job_url, timeout=5).json()
            time.sleep(0.2)
        png = requests.get(job_url + "/result", timeout=5).content
        assert np.asarray(Image.open(io.BytesIO(png))).shape == (96, 96, 3)
    finally:
        _stop(proc)

    # Same data directory: the embedded Redis replays its append-only file.
    proc = _up(tmp_path / "data", port, log)
    try:
        _wait_ready(base, proc)
        assert requests.get(job_url, timeout=5).json()["status"] == "succeeded"
    finally:
        _stop(proc)
    assert "dreamq is up" in (tmp_path / "up.log").read_text()
