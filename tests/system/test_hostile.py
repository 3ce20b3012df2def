"""Open event streams and slow clients cannot starve a real `dreamq up` (issue 10; bench/hostile.py at scale)."""
import argparse
import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from bench import hostile
from dreamq.redis_server import free_port

from ..conftest import ROOT
from ..webutil import _stop, _up, _wait_ready

pytestmark = pytest.mark.slow  # a minute or more: scheduled first (tests/conftest.py)

BODY_S = 3  # DREAMQ_BODY_TIMEOUT_S for this server: short, so the test need not wait 3 minutes


def _compose_web(tmp, port, log, redis_url):
    """The web command of docker-compose.yml (no Docker here), bound to 127.0.0.1 instead of 0.0.0.0."""
    import yaml

    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]["command"]
    assert command[0] == "gunicorn"
    command = [sys.executable, "-m", "gunicorn",
               *(f"127.0.0.1:{port}" if a == "0.0.0.0:8000" else a for a in command[1:])]
    env = {**os.environ, "DREAMQ_REDIS_URL": redis_url, "DREAMQ_DATA_DIR": str(tmp / "data"),
           "DREAMQ_BODY_TIMEOUT_S": str(BODY_S)}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module", params=["dreamq up", "compose web command"])
def base(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp / "web.log", "w") as log:
        if request.param == "dreamq up":
            proc = _up(tmp / "data", port, log, workers=0, DREAMQ_BODY_TIMEOUT_S=str(BODY_S))
        else:
            proc = _compose_web(tmp, port, log, request.getfixturevalue("redis_url"))
        try:
            _wait_ready(url, proc, 60, "/healthz", tmp / "web.log")
            yield url
        finally:
            if request.param == "dreamq up":
                _stop(proc)
            else:
                proc.terminate()
                assert proc.wait(30) == 0


def _args(**kw):
    return argparse.Namespace(**{"hold": 5, "streams": 40, "slowloris": 10, "headers": None, **kw})


def _not_starved(figures):
    for name in ("healthz", "submit"):
        f = figures[name]
        # "Not starved", not speed: the gthread settings answered none of these within 10 s.
        assert f["tried"] >= 2 and f["answered"] == f["tried"] and f["max_s"] < 5, figures


def test_open_streams_do_not_starve_healthz_or_submit_and_are_freed_when_the_client_leaves(base):
    figures = hostile.streams(base, _args())
    assert figures["streams_opened"] == 40, figures
    _not_starved(figures)
    # The server closed every stream whose client hung up (no socket left in CLOSE_WAIT) within 5 s.
    assert figures["all_freed_after_hangup_s"] is not None and figures["all_freed_after_hangup_s"] <= 6, figures


def test_slowloris_does_not_starve_healthz_or_submit(base):
    _not_starved(hostile.slowloris(base, _args()))


def _closed_by_server(s: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing `s`, or None if it still held it after `within` s."""
    s.settimeout(within)
    got, end = b"", time.monotonic() + within
    try:
        while time.monotonic() < end:
            chunk = s.recv(4096)
            if not chunk:
                return got
            got += chunk
    except TimeoutError:
        return None
    except OSError:
        return got
    return None


def test_slow_headers_and_slow_bodies_are_cut_off(base):
    host, port = hostile._host_port(base)
    headers = socket.create_connection((host, port))
    headers.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    body = socket.create_connection((host, port))
    body.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                 b"Content-Length: 19000000\r\n\r\n--x\r\n")
    t0 = time.monotonic()
    try:
        for _ in range(3):  # still trickling: only the deadlines can end these
            headers.send(b"X-a: b\r\n")
            body.send(b"aaaaa")
            time.sleep(1)
        # Headers: gunicorn's gevent worker gives up after --keep-alive (5 s in `dreamq up`).
        assert _closed_by_server(headers, 5 + 3 - (time.monotonic() - t0)) is not None
        # Body: the whole of it within DREAMQ_BODY_TIMEOUT_S, else 408 and the connection closes.
        answer = _closed_by_server(body, BODY_S + 5 - (time.monotonic() - t0))
        assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
    finally:
        headers.close()
        body.close()
    assert requests.get(base + "/healthz", timeout=5).status_code == 200


def test_the_progressive_scan_bomb_is_refused_quickly_as_image_and_as_guide(base):
    # Issue 19: 2 MB declaring 1448x1448 (no decode slot), its scans repeated thousands of times,
    # held a core for ~20 s per upload; six at once starved the web.
    bomb = hostile.scan_bomb()
    for field in ("image", "guide"):  # the default kind takes a guide
        files = {"image": ("p.png", hostile.small_png(), "image/png"), field: ("bomb.jpg", bomb, "image/jpeg")}
        t0 = time.monotonic()
        r = requests.post(base + "/api/v1/jobs", files=files, data=hostile.SUBMIT_FORM, timeout=10)
        assert time.monotonic() - t0 < 3 and r.status_code == 422, (r.status_code, r.text[:500])
        error = r.json()["error"]
        assert error["code"] == "image_too_complex" and "scans" in error["fields"][field], error
    # Six clients sending it for 3 s: each upload costs the web next to nothing, and nothing starves.
    figures = hostile.scan_attacks(base, concurrent=6, hold=3, timeout=10)
    assert figures["worst_upload_cpu_s"] < 1, figures
    assert {status for counts in figures["uploads"].values() for status in counts} == {422}, figures
    _not_starved(figures)
