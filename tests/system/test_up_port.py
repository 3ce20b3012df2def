"""`dreamq up` owns its port: one another process holds is refused before anything starts, and
"dreamq is up" means its own web answered, never another server on the port."""
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from dreamq.redis_server import free_port
from dreamq.up import _web_ready
from web.ops import INSTANCE_HEADER

from ..webutil import _stop, _up, _wait_ready, wait_for


def test_a_port_another_process_holds_is_refused_at_once(tmp_path):
    with socket.socket() as holder:  # a plain listener, as another service would be
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with open(tmp_path / "up.log", "w") as log:
            started = time.monotonic()
            proc = _up(tmp_path / "data", port, log, workers=0)
            code = proc.wait(60)
    took = time.monotonic() - started
    text = (tmp_path / "up.log").read_text()
    assert code == 2, text
    assert f"port {port} on 127.0.0.1 is not free: another process listens there" in text, text
    assert f"dreamq up --port {port + 1}" in text and f"make run PORT={port + 1}" in text
    assert "dreamq is up" not in text
    assert not (tmp_path / "data").exists()  # nothing started: no Redis, no data directory
    assert took < 30, f"took {took:.1f} s"  # the imports of a busy machine, not a supervisor's retries


class _Answers200(BaseHTTPRequestHandler):
    instance = None  # the header's value, if any

    def do_GET(self):
        self.send_response(200)
        if self.instance:
            self.send_header(INSTANCE_HEADER, self.instance)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_readiness_wants_the_nonce_of_its_own_web():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers200)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/healthz"
    try:
        assert not _web_ready(url, "ours")()  # another server's 200 is not ours
        _Answers200.instance = "theirs"
        assert not _web_ready(url, "ours")()
        _Answers200.instance = "ours"
        assert _web_ready(url, "ours")()
    finally:
        _Answers200.instance = None
        server.shutdown()
        server.server_close()


def test_its_own_web_answers_with_its_nonce(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "up.log"
    proc = _up(tmp_path / "data", port, open(log_path, "w"), workers=0)
    try:
        _wait_ready(base, proc, path="/healthz", log=log_path)
        assert requests.get(base + "/healthz", timeout=5).headers.get(INSTANCE_HEADER)
        wait_for(lambda: "dreamq is up" in log_path.read_text(), 30, "the banner")
    finally:
        _stop(proc)
