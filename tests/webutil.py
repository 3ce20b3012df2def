"""Helpers for the tests: an app on the test Redis, images as real encoded files, `dreamq up` processes."""
from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import psutil
import requests
from PIL import Image

from bench.cluster import ROOT, wait_for  # noqa: F401  (the tests import wait_for from here)
from shared.settings import Settings


def make_app(redis_url: str, tmp_path, **overrides):
    from web import create_app

    settings = Settings(redis_url=redis_url, data_dir=tmp_path / "data", **overrides)
    return create_app(settings)


def encode(arr_or_image, fmt: str = "PNG", mode: str | None = None, **kw) -> bytes:
    im = arr_or_image if isinstance(arr_or_image, Image.Image) else Image.fromarray(arr_or_image)
    if mode:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header declares a huge RGB image."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + png_chunk(b"IEND", b""))


def sixteen_bit_png(photo: np.ndarray) -> bytes:
    grey = (photo.mean(axis=2) * 257).astype(np.uint16)
    im = Image.fromarray(grey)
    assert im.mode == "I;16"
    return encode(im)


def post_job(client, upload: bytes | None = None, filename: str = "photo.png", headers=None, **fields):
    """POST multipart: ``upload`` as the ``image`` file, ``fields`` as form fields (a list: repeated)."""
    data: dict = dict(fields)
    if upload is not None:
        data["image"] = (io.BytesIO(upload), filename)
    return client.post("/api/v1/jobs", data=data, content_type="multipart/form-data", headers=headers or {})


def heartbeat(client, worker_id: str = "host:1", ready: bool = True, models=None, ttl: int = 30) -> None:
    """A worker heartbeat as the workers write it."""
    beat = {"id": worker_id, "host": worker_id.split(":")[0], "pid": 1, "device": "CPU", "backend": "tensorflow",
            "models": models or {"vgg16_hed": "ready", "inception_v3": "unavailable: no weights"},
            "job": None, "ready": ready, "started_at": time.time()}
    client.set(f"dreamq:worker:{worker_id}", json.dumps(beat), ex=ttl)
    client.sadd("dreamq:workers", worker_id)


def sse_events(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in body.split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if name:
            events.append((name, data))
    return events


# -- `dreamq up` as a person runs it (the system tests) ----------------------------------------

def _up(data_dir, port, log, workers=1, **extra_env):
    env = {k: v for k, v in os.environ.items() if k != "DREAMQ_REDIS_URL"}
    env.update({"DREAMQ_MODELS": "vgg16_hed", "TF_CPP_MIN_LOG_LEVEL": "3", "DREAMQ_HEARTBEAT_S": "0.5", **extra_env})
    return subprocess.Popen([sys.executable, "-m", "dreamq.cli", "up", "--port", str(port), "--data-dir", str(data_dir),
                             "--workers", str(workers)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(base, proc, timeout=120, path="/readyz", log=None):
    """Until ``base + path`` answers 200 (/readyz: a worker is ready; /healthz: the web answers).
    ``proc`` exiting first fails at once, with its ``log`` file's text when given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text() if log else "the server exited"
        try:
            if requests.get(base + path, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{base}{path} never answered 200 within {timeout} s")


def _stop(proc):
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(90) == 0
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
