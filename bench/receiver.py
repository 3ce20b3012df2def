"""A webhook receiver on 127.0.0.1 for the tests and benches: a real HTTP server in a thread.

It keeps every request it gets (path, headers, body, when) and answers each path from a script
of answers (status codes, with an optional delay), the last one repeated:

    with Receiver() as rx:
        rx.script("/flaky", 500, 500, 200)
        url = rx.url("/flaky")
        ...
        rx.wait(3)                  # until three requests came
        rx.requests_to("/flaky")
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when the body was read


@dataclass
class Answer:
    status: int = 200
    delay_s: float = 0.0
    location: str | None = None  # for a redirect


class Receiver:
    """``tls``: (certificate file, key file) to answer HTTPS instead of HTTP."""

    def __init__(self, tls: tuple[str, str] | None = None):
        self.requests: list[Received] = []
        self._scripts: dict[str, list[Answer]] = {}
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 — http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                answer = receiver._next_answer(self.path)
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers.items()), body, time.time()))
                    receiver._lock.notify_all()
                self.send_response(answer.status)
                if answer.location:
                    self.send_header("Location", answer.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # quiet: the tests print what they need
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "https" if tls else "http"
        if tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def script(self, path: str, *answers: int | Answer) -> None:
        """Answer the next requests to ``path`` with these (the last one repeats)."""
        self._scripts[path] = [a if isinstance(a, Answer) else Answer(a) for a in answers]

    def _next_answer(self, path: str) -> Answer:
        with self._lock:
            script = self._scripts.get(path.split("?", 1)[0])
            if not script:
                return Answer()
            return script.pop(0) if len(script) > 1 else script[0]

    def requests_to(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def wait(self, count: int, path: str | None = None, timeout: float = 30) -> list[Received]:
        """Until ``count`` requests (to ``path``) came; returns them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [r for r in self.requests if path is None or r.path.split("?", 1)[0] == path]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(got)} of {count} webhook requests came to {path or 'the receiver'}")
                self._lock.wait(left)
