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


@dataclass
class Held:
    """One connection to a DripReceiver: when it opened, and when the sender closed it (None: still open)."""

    path: str
    opened: float  # time.monotonic()
    closed: float | None = None
    finished: bool = False  # the whole answer went out (``hold_s`` passed) before the sender closed

    @property
    def held_s(self) -> float | None:
        return None if self.closed is None else self.closed - self.opened


class DripReceiver:
    """A slow receiver on 127.0.0.1: it reads the request, then answers one byte every ``every_s``.

    ``drip="answer"`` drips from the status line on (the headers never end while it drips);
    ``"body"`` sends the status line and headers at once, then drips a body.  After ``hold_s``
    (None: never) it sends the rest of its 200 at once.  Each connection is kept as a
    ``Held``: how long the sender kept it open, and how many were open at once (``max_open``).

        with DripReceiver(every_s=3, hold_s=60) as slow:
            url = slow.url("/hook")
    """

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"

    def __init__(self, every_s: float = 1.0, hold_s: float | None = None, drip: str = "answer"):
        import socket

        assert drip in ("answer", "body")
        self.every_s, self.hold_s, self.drip = every_s, hold_s, drip
        self.held: list[Held] = []
        self.open = self.max_open = 0
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "DripReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import socket

        self._stopping.set()
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone does not, on Linux)
        except OSError:
            pass
        self._server.close()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        import select

        with conn:
            request = b""
            while b"\r\n\r\n" not in request:  # the body (a few KB) follows at once; not needed here
                chunk = conn.recv(65536)
                if not chunk:
                    return
                request += chunk
            path = request.split(b" ", 2)[1].decode()
            held = Held(path, time.monotonic())
            with self._lock:
                self.held.append(held)
                self.open += 1
                self.max_open = max(self.max_open, self.open)
                self._lock.notify_all()
            body = b"ok" * 512
            answer = self.ANSWER % len(body) + body
            if self.drip == "body":
                head = answer.index(b"\r\n\r\n") + 4
                conn.sendall(answer[:head])
                answer = answer[head:]
            try:
                while answer and not self._stopping.is_set():
                    if self.hold_s is not None and time.monotonic() - held.opened >= self.hold_s:
                        conn.sendall(answer)
                        answer = b""
                        break
                    conn.sendall(answer[:1])
                    answer = answer[1:]
                    # Until the next byte, watch for the sender hanging up (it reads as EOF).
                    if select.select([conn], [], [], self.every_s)[0] and not conn.recv(65536):
                        break
                if not answer:
                    held.finished = True
                    conn.settimeout(30)
                    conn.recv(1)  # until the sender closes its end
            except OSError:
                pass  # reset by the sender
            finally:
                with self._lock:
                    held.closed = time.monotonic()
                    self.open -= 1
                    self._lock.notify_all()

    def wait(self, count: int, closed: bool = False, timeout: float = 30) -> list[Held]:
        """Until ``count`` connections came (and, with ``closed``, were closed); returns them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [h for h in self.held if not closed or h.closed is not None]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(got)} of {count} connections{' closed' if closed else ''} "
                                       f"at the drip receiver on port {self.port}")
                self._lock.wait(left)
