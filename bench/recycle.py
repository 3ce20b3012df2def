"""Does the web keep accepting while its processes recycle, and does it need recycling at all?

    python -m bench.recycle http://127.0.0.1:8000 burst [--streams 100] [--requests 1200]
    python -m bench.recycle http://127.0.0.1:8000 rss [--requests 20000]

``burst``: open ``--streams`` event streams of one queued job (run the web with no worker, e.g.
``dreamq up --workers 0``, so they stay open), then send ``--requests`` cheap requests from 16
threads while a probe asks /healthz every 0.1 s; prints the longest time /healthz went
unanswered, then how many of 300 new streams failed to open.  With request-count recycling
(``--max-requests``) both processes used to drain at once here.

``rss``: ``--requests`` mixed requests (health, job, listing, metrics, pages, small submits, and a
2 Mpx JPEG every 50th), printing the resident memory of every web process every tenth of the way:
the figure that says whether there is a leak to recycle away.  Only 127.0.0.1.
"""
from __future__ import annotations

import argparse
import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
from PIL import Image

from bench.hostile import SUBMIT_FORM, _host_port, small_png, web_processes
from bench.machine import print_header


class Gaps:
    """Asks /healthz every ``every`` s in a thread; the longest stretch without an answer."""

    def __init__(self, base: str, every: float = 0.1):
        self.base, self.every = base, every
        self.longest, self.failed = 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last_ok = time.monotonic()
        with requests.Session() as s:
            while not self._stop.is_set():
                try:
                    s.get(self.base + "/healthz", timeout=30).raise_for_status()
                    now = time.monotonic()
                    self.longest = max(self.longest, now - last_ok)
                    last_ok = now
                except requests.RequestException:
                    self.failed += 1
                self._stop.wait(self.every)
        self.longest = max(self.longest, time.monotonic() - last_ok)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(40)


def open_streams(base: str, path: str, n: int, wait_s: float = 15) -> tuple[list[socket.socket], int]:
    """``n`` event streams of ``path``; (sockets, how many got their first bytes within ``wait_s``)."""
    host, port = _host_port(base)
    socks = []
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
            socks.append(s)
        except OSError:
            pass
    opened, until = 0, time.monotonic() + wait_s
    for s in socks:
        try:
            s.settimeout(max(0.01, until - time.monotonic()))
            opened += s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            pass
    return socks, opened


def burst(base: str, args) -> dict:
    job = requests.post(base + "/api/v1/jobs", files={"image": ("p.png", small_png(), "image/png")},
                        data={**SUBMIT_FORM, "cache": "false"}, timeout=30)
    job.raise_for_status()
    events = job.headers["Location"] + "/events"
    held, opened = open_streams(base, events, args.streams)

    def cheap(_):
        try:
            return requests.get(base + "/healthz", timeout=30).status_code
        except requests.RequestException as exc:
            return type(exc).__name__

    with Gaps(base) as gaps, ThreadPoolExecutor(16) as pool:
        statuses: dict = {}
        for status in pool.map(cheap, range(args.requests)):
            statuses[status] = statuses.get(status, 0) + 1
        time.sleep(2)  # a recycle starts after the request that trips it: give it time to show
    later, later_opened = open_streams(base, events, 300)
    for s in held + later:
        s.close()
    return {"streams_held": opened, "burst": statuses, "longest_healthz_gap_s": round(gaps.longest, 2),
            "healthz_failed": gaps.failed, "new_streams_failed": 300 - later_opened}


def _rss_mb(port: int) -> dict[int, float]:
    out = {}
    for p in web_processes(port):
        try:
            out[p.pid] = round(p.memory_info().rss / 2**20, 1)
        except Exception:  # noqa: BLE001 — gone meanwhile
            pass
    return out


def rss(base: str, args) -> dict:
    _, port = _host_port(base)
    rng = np.random.default_rng(0)
    buf = io.BytesIO()  # a 1600x1200 photo-sized JPEG: the decode path that keeps freed memory, if any
    Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    photo, png = buf.getvalue(), small_png()
    job_url = requests.post(base + "/api/v1/jobs", files={"image": ("p.png", png, "image/png")},
                            data={**SUBMIT_FORM, "cache": "false"}, timeout=30).headers["Location"]

    def one(i: int):
        with requests.Session() as s:
            kind = i % 10
            if i % 50 == 0:  # the job may be refused (queue caps): only the decode matters here
                r = s.post(base + "/api/v1/jobs", files={"image": ("p.jpg", photo, "image/jpeg")},
                           data={**SUBMIT_FORM, "cache": "false"}, timeout=60)
            elif kind == 0:
                r = s.post(base + "/api/v1/jobs", files={"image": ("p.png", png, "image/png")},
                           data={**SUBMIT_FORM, "cache": "false"}, timeout=60)
                if r.status_code == 202:
                    s.post(base + r.headers["Location"] + "/cancel", timeout=60)
            else:
                path = ["/healthz", job_url, "/api/v1/jobs?limit=20", "/metrics", "/", "/api/openapi.json",
                        "/api/v1/models", "/readyz", job_url + "/events?x=1"][kind - 1]
                if path.endswith("x=1"):
                    r = s.get(base + job_url, timeout=60)
                else:
                    r = s.get(base + path, timeout=60)
            return r.status_code

    samples, statuses = [(0, _rss_mb(port))], {}
    step = max(1, args.requests // 10)
    with ThreadPoolExecutor(8) as pool:
        for start in range(0, args.requests, step):
            for status in pool.map(one, range(start, min(args.requests, start + step))):
                statuses[status] = statuses.get(status, 0) + 1
            samples.append((min(args.requests, start + step), _rss_mb(port)))
    for done, mb in samples:
        print(f"  after {done:6d} requests: RSS MB {mb}", flush=True)
    first, last = samples[1][1], samples[-1][1]
    grew = {pid: round(last[pid] - first[pid], 1) for pid in last if pid in first}
    return {"statuses": statuses, "rss_growth_mb_after_first_tenth": grew}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("what", choices=["burst", "rss"])
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--requests", type=int, default=None)
    args = p.parse_args(argv)
    base = args.url.rstrip("/")
    _host_port(base)
    args.requests = args.requests or (1200 if args.what == "burst" else 20000)
    print_header()
    print(f"{args.what}: {(burst if args.what == 'burst' else rss)(base, args)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
