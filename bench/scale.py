"""The control plane at scale (issue 22): each request's cost at depth 0 and at depth N, and the submit rates.

    python -m bench.scale [--depth 100000] [--finished 300000] [--runs 25] [--clients 16] [--seconds 8]
    python -m bench.scale --depth 2000 --finished 6000        # a quick run

Starts ``dreamq up --workers 0`` in token mode on 127.0.0.1, as an operator runs it (its embedded
Redis, the webhook delivery process, gunicorn with web/gunicorn_conf.py's default processes), and
talks real HTTP to it with a bare keep-alive client (so the client's own CPU, on the same cores,
stays small).  Bob submits 45 jobs over HTTP: his listing has a second page.  Then:

1. depth 0: each request, median of ``--runs``: Bob's job (API), his listing's first and second page
   (API, and the HTML /jobs page), his job's HTML page, its event stream (time to the first event),
   /metrics, and a submit (a 128x128 PNG, ``cache=false``).
2. the submit rates: the lifecycle's ``Jobs.submit`` from this process (the input store write, the
   record and the message, as the web calls it), then the web with ``--clients`` concurrent clients
   posting the PNG for ``--seconds`` (Carol's jobs: Bob's listing stays his 45).  And the Redis bytes
   per queued job: used_memory over the lifecycle's submits, and its split.
3. the depth: ``--depth`` queued jobs (record, indexes, the job_submitted counters, Celery message) of
   100 other owners, and ``--finished`` finished records (a third of them Bob's, older than his 45),
   written by the lifecycle's own functions, pipelined (one round trip per 1,000): ``Jobs.save_new_many``
   and ``save_finished_many``, the job_submitted signal, ``shared.queue.enqueue_many`` for the messages.
   No HTTP per job.
4. depth N: the same requests, then the rates again.

The issue's bound is a ratio (depth N / depth 0) of at most 1.5 per request.  The machine's load is
not controlled: compare the ratios, and rerun when another process loaded it.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.machine import print_header

ROOT = Path(__file__).resolve().parent.parent
BOB, CAROL, ALICE = "bob-" + "b" * 40, "carol-" + "c" * 40, "alice-" + "a" * 40
FORM = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": "1", "iterations": "3", "cache": "false"}
PARAMS = {k: v for k, v in FORM.items() if k != "cache"}
BOB_JOBS = 45
OTHER_OWNERS = 100


def png_128() -> bytes:
    from PIL import Image

    from bench.cluster import SAMPLE

    buf = io.BytesIO()
    Image.open(SAMPLE).convert("RGB").resize((128, 128), Image.LANCZOS).save(buf, format="PNG")
    return buf.getvalue()


# -- a bare HTTP/1.1 client --------------------------------------------------------------------

class Http:
    """One keep-alive connection to 127.0.0.1:port; requests are prebuilt bytes."""

    def __init__(self, port: int):
        self.port, self.sock, self.buf = port, None, b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionResetError("closed by the server")
        self.buf += chunk

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def request(self, raw: bytes) -> tuple[int, bytes]:
        """(status, body); a connection the server closed while idle is opened again, once."""
        for attempt in (0, 1):
            if self.sock is None:
                self._connect()
            try:
                self.sock.sendall(raw)
                while b"\r\n\r\n" not in self.buf:
                    self._fill()
                break
            except (ConnectionError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                body += self._read(size + 2)[:size]
                if size == 0:
                    break
        else:
            body = self._read(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection") == b"close":
            self.close()
        return status, body


def get_request(port: int, path: str, token: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: */*\r\n\r\n").encode()


def post_request(port: int, path: str, token: str, fields: dict[str, str], image: bytes) -> bytes:
    """A multipart POST with a boundary of its own, as browsers, curl and requests send them (the
    web compiles a regular expression per boundary: a fixed one would hide that cost)."""
    boundary = "dreamqbench" + uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n'
                 "Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def first_event_s(port: int, path: str, token: str) -> float:
    """Seconds from connecting to the end of the stream's first event (its record as JSON)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(get_request(port, path, token))
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError(f"the event stream closed: {buf[:300]!r}")
            buf += chunk
            at = buf.find(b"event: ")
            if at >= 0 and buf.find(b"\n\n", at) >= 0:
                return time.perf_counter() - t0


# -- the service ----------------------------------------------------------------------------------

class Up:
    """``dreamq up --workers 0`` in token mode, on a free port, its data in ``data``."""

    def __init__(self, data: Path, max_queued: int):
        from dreamq.redis_server import free_port

        self.data, self.port = data, free_port()
        data.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMQ_")}
        env.update({"DREAMQ_API_TOKENS": f"{BOB},{CAROL},{ALICE}", "DREAMQ_MAX_QUEUED": str(max_queued),
                    "DREAMQ_RATE_LIMIT_PER_MINUTE": "0", "DREAMQ_MODELS": "vgg16_hed", "TF_CPP_MIN_LOG_LEVEL": "3"})
        self.log = open(data.parent / "up.log", "w")  # noqa: SIM115 - open while the service runs
        self.proc = subprocess.Popen([sys.executable, "-m", "dreamq.cli", "up", "--port", str(self.port),
                                      "--data-dir", str(data), "--workers", "0"],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 120
        http = Http(self.port)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dreamq up exited: {(data.parent / 'up.log').read_text()[-3000:]}")
            try:
                if http.request(get_request(self.port, "/healthz", BOB))[0] == 200:
                    break
            except OSError:
                http.close()
            if time.monotonic() > deadline:
                raise TimeoutError("dreamq up did not answer /healthz within 120 s")
            time.sleep(0.3)
        http.close()
        self.redis_url = f"redis://127.0.0.1:{(data / 'redis' / 'port').read_text().strip()}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


# -- the depth, through the lifecycle's own functions, pipelined ----------------------------------

class _Batched:
    """A Redis client for the job_submitted subscribers (the /metrics counters, shared/stats.py) that
    queues what they write through ``pipeline()`` on one pipeline, sent at ``flush``."""

    def __init__(self, client):
        self.client, self.pipe = client, client.pipeline(transaction=False)

    def register_script(self, script):  # Jobs() registers its scripts; none runs through here
        from redis.commands.core import Script

        return Script(self, script)

    def get_encoder(self):
        return self.client.get_encoder()

    def pipeline(self, transaction: bool = True):
        return _Nested(self.pipe)

    def flush(self) -> None:
        self.pipe.execute()


class _Nested:
    def __init__(self, pipe):
        self.pipe = pipe

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def execute(self):
        return []


def fill(r, settings, depth: int, finished: int, bob_owner: str, batch: int = 1000) -> float:
    """Write ``depth`` queued and ``finished`` finished jobs; returns the seconds it took."""
    from shared.job import SUCCEEDED
    from shared.jobs import Jobs, job_submitted
    from shared.kinds import get_kind
    from shared.queue import enqueue_many, make_celery
    from shared.store import open_store

    store = open_store(settings)
    spec = get_kind("image")
    params = spec.parse(dict(PARAMS)).model_dump()
    owners = [hashlib.sha256(f"owner-{i}".encode()).hexdigest() for i in range(OTHER_OWNERS)]
    real = Jobs(r, settings.job_ttl_s, store=store)
    t0 = time.perf_counter()

    def queued_batch(start: int, n: int) -> None:
        made = []
        for i in range(start, start + n):
            job = real.new(dict(params), owner=owners[i % len(owners)])
            made.append(job)
        outcomes = real.save_new_many(made)  # try_save_new's own script, for each job
        assert all(o == "ok" for o in outcomes), outcomes[:5]
        batched = _Batched(r)
        counted = Jobs(batched, settings.job_ttl_s, store=store)
        for job in made:  # the counters of /metrics, as a submit feeds them
            job_submitted.send(counted, job=job)
        batched.flush()
        enqueue_many(celery, [(j.id, j.dispatch) for j in made])  # the messages, as Jobs.send writes them

    def finished_batch(start: int, n: int) -> None:
        # Older than Bob's 45 and well within the TTL: his first two pages stay the same 40 jobs.
        oldest = time.time() - 3 * 86400
        made = []
        for i in range(start, start + n):
            owner = bob_owner if i % 3 == 0 else owners[i % len(owners)]
            job = real.new(dict(params), owner=owner)
            c = oldest + i * (2 * 86400 / max(finished, 1))
            made.append(job.model_copy(update={
                "status": SUCCEEDED, "created_at": c, "enqueued_at": c, "started_at": c + 1.0, "finished_at": c + 5.0,
                "attempts": 1, "worker": "bench:1",
                "result_url": store.url_of(job.id, spec.file("result")),
                "metrics": {"queue_s": 1.0, "run_s": 4.0, "dream_s": 3.9}}))
        real.save_finished_many(made)  # save_finished's own writes, for each job

    celery = make_celery(settings)
    for label, total, step in (("queued", depth, queued_batch), ("finished", finished, finished_batch)):
        done, t = 0, time.perf_counter()
        while done < total:
            n = min(batch, total - done)
            step(done, n)
            done += n
            if done % (batch * 20) == 0 or done == total:
                print(f"  {label}: {done}/{total} ({done / (time.perf_counter() - t):.0f}/s)", flush=True)
    return time.perf_counter() - t0


def settle(r) -> None:
    """Wait for Redis' background work (an append-only file rewrite the fill triggered), then rewrite the
    file now, so that none starts while requests are timed."""
    def busy() -> bool:
        info = r.info("persistence")
        return bool(info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled"))

    while busy():
        time.sleep(0.5)
    r.bgrewriteaof()
    time.sleep(0.5)
    while busy():
        time.sleep(0.5)


# -- measuring ------------------------------------------------------------------------------------

def paired_ms(fns: dict, runs: int) -> dict[str, tuple[float, float]]:
    """(median, fastest) milliseconds of each of ``fns`` (label -> call), timed in turns (a, b, b, a...):
    a load that comes and goes on the machine falls on both sides alike, and the fastest of each is
    what it costs when nothing else ran."""
    for fn in fns.values():
        fn()
        fn()  # warm: the first request of a path pays for imports and caches
    times: dict[str, list[float]] = {label: [] for label in fns}
    order = list(fns.items())
    for _ in range(runs):
        order.reverse()  # a, b, b, a, a, b...: neither side always goes first
        for label, fn in order:
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    return {label: (statistics.median(t) * 1000, min(t) * 1000) for label, t in times.items()}


def request_calls(port: int, job_id: str, png: bytes) -> dict:
    """The requests of the table, each a call on one keep-alive connection (Bob's)."""
    import json

    http = Http(port)

    def ok(raw: bytes, expect: int = 200) -> bytes:
        status, body = http.request(raw)
        if status != expect:
            raise RuntimeError(f"{raw[:60]!r}: {status} {body[:300]!r}")
        return body

    cursor = json.loads(ok(get_request(port, "/api/v1/jobs?limit=20", BOB)))["next_cursor"]
    assert cursor, "Bob's listing has one page only"
    return {
        "GET /api/v1/jobs/{id}": lambda: ok(get_request(port, f"/api/v1/jobs/{job_id}", BOB)),
        "GET /api/v1/jobs (page 1)": lambda: ok(get_request(port, "/api/v1/jobs?limit=20", BOB)),
        "GET /api/v1/jobs (page 2)": lambda: ok(get_request(port, f"/api/v1/jobs?limit=20&cursor={cursor}", BOB)),
        "GET /jobs (HTML, page 1)": lambda: ok(get_request(port, "/jobs?limit=20", BOB)),
        "GET /jobs (HTML, page 2)": lambda: ok(get_request(port, f"/jobs?limit=20&cursor={cursor}", BOB)),
        "GET /jobs/{id} (HTML)": lambda: ok(get_request(port, f"/jobs/{job_id}", BOB)),
        "events: first event": lambda: first_event_s(port, f"/api/v1/jobs/{job_id}/events", BOB),
        "GET /metrics": lambda: ok(get_request(port, "/metrics", BOB)),
        "POST /api/v1/jobs (128x128 PNG)": lambda: ok(post_request(port, "/api/v1/jobs", BOB, FORM, png), 202),
    }


def lifecycle_rate(r, settings, png: bytes, n: int) -> tuple[float, dict[str, float]]:
    """Jobs.submit from this process, ``n`` times (as the web calls it, less the HTTP); the jobs per
    second, and the Redis bytes per queued job (used_memory over the submits) with their split."""
    from shared import hooks, keys
    from shared.jobs import Jobs
    from shared.kinds import get_kind
    from shared.queue import QUEUE, make_celery
    from shared.store import open_store
    from web.auth import token_hash

    hooks.install(settings)  # the job_submitted counters, as in the web
    jobs = Jobs(r, settings.job_ttl_s, store=open_store(settings), celery=make_celery(settings))
    params = get_kind("image").parse(dict(PARAMS))
    owner = token_hash(CAROL)
    for _ in range(20):
        jobs.submit(params, png, owner=owner)
    messages0, mem0 = r.llen(QUEUE), r.info("memory")["used_memory"]
    t0 = time.perf_counter()
    last = None
    for _ in range(n):
        last = jobs.submit(params, png, owner=owner)
    rate = n / (time.perf_counter() - t0)
    mem = r.info("memory")["used_memory"] - mem0
    record = r.memory_usage(keys.job(last.id), samples=0) or 0
    listed = r.llen(QUEUE)
    message = (r.memory_usage(QUEUE, samples=0) or 0) / max(listed, 1)
    split = {"bytes_per_job": mem / n, "record": record, "message": message,
             "message_json": len(r.lindex(QUEUE, 0) or b""), "rest": mem / n - record - message,
             "messages": listed - messages0}
    return rate, split


def web_rate(port: int, png: bytes, clients: int, seconds: float) -> tuple[float, dict[int | str, int]]:
    """Submissions per second answered 202 with ``clients`` concurrent keep-alive clients (after a
    second of warm-up), and the answers by status."""
    counts: dict[int | str, int] = {}
    lock, stop = threading.Lock(), threading.Event()

    def client():
        http = Http(port)
        while not stop.is_set():
            try:
                status, _ = http.request(post_request(port, "/api/v1/jobs", CAROL, FORM, png))
            except OSError as exc:
                status = type(exc).__name__
                http.close()
            with lock:
                counts[status] = counts.get(status, 0) + 1
        http.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    with lock:
        a, ta = counts.get(202, 0), time.perf_counter()
    time.sleep(seconds)
    with lock:
        b, tb = counts.get(202, 0), time.perf_counter()
    stop.set()
    for t in threads:
        t.join(60)
    return (b - a) / (tb - ta), counts


def seed_bob(port: int, png: bytes) -> str:
    """Bob's 45 jobs, over HTTP; the id of his first (the job the table reads)."""
    import json

    http, raw, first = Http(port), post_request(port, "/api/v1/jobs", BOB, FORM, png), None
    for _ in range(BOB_JOBS):
        status, body = http.request(raw)
        assert status == 202, (status, body[:300])
        first = first or json.loads(body)["id"]
    http.close()
    return first


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=100_000, help="queued jobs of depth N")
    p.add_argument("--finished", type=int, default=300_000, help="finished records kept at depth N")
    p.add_argument("--runs", type=int, default=25, help="timings per request and depth (their median)")
    p.add_argument("--submits", type=int, default=2000, help="Jobs.submit calls per lifecycle rate")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients for the web's rate")
    p.add_argument("--seconds", type=float, default=8.0, help="how long each web rate is measured")
    p.add_argument("--rounds", type=int, default=2, help="rates measured this many times per depth, in turns")
    args = p.parse_args(argv)
    import redis

    from shared.settings import Settings
    from web.auth import token_hash

    print_header()
    png = png_128()
    n = args.depth
    print(f"two `dreamq up --workers 0` (token mode), one at depth 0 and one filled to depth {n} queued "
          f"+ {args.finished} finished, measured in turns; a {len(png)}-byte 128x128 PNG", flush=True)
    with tempfile.TemporaryDirectory(prefix="dreamq-scale-") as tmp:
        services: dict[str, Up] = {}
        try:
            for label in ("0", "N"):
                (Path(tmp) / label).mkdir()
                services[label] = Up(Path(tmp) / label / "data", max_queued=n + 10_000_000)
            clients = {label: redis.Redis.from_url(up.redis_url) for label, up in services.items()}
            settings = {label: Settings(_env_file=None, redis_url=up.redis_url, data_dir=up.data)
                        for label, up in services.items()}
            probes = {label: seed_bob(up.port, png) for label, up in services.items()}

            print(f"filling depth {n}: {n} queued, {args.finished} finished ...", flush=True)
            took = fill(clients["N"], settings["N"], n, args.finished, token_hash(BOB))
            settle(clients["N"])
            r = clients["N"]
            print(f"filled in {took:.0f} s: {r.zcard('dreamq:queued')} queued, {r.llen('dreamq')} messages, "
                  f"{r.zcard('dreamq:jobs')} records indexed, used_memory {r.info('memory')['used_memory'] / 2**20:.0f} "
                  "MiB", flush=True)

            calls = {label: request_calls(up.port, probes[label], png) for label, up in services.items()}
            table = {name: paired_ms({label: calls[label][name] for label in services}, args.runs)
                     for name in calls["0"]}

            rates: dict[str, list[float]] = {"lifecycle 0": [], "lifecycle N": [], "web 0": [], "web N": []}
            splits, answers = {}, {}
            turns = [list(services), list(reversed(services))]  # neither depth always goes first
            for i in range(args.rounds):
                for label in turns[i % 2]:
                    rate, splits[label] = lifecycle_rate(clients[label], settings[label], png, args.submits)
                    rates[f"lifecycle {label}"].append(rate)
            for i in range(args.rounds):
                for label in turns[i % 2]:
                    rate, answers[label] = web_rate(services[label].port, png, args.clients, args.seconds)
                    rates[f"web {label}"].append(rate)
        finally:
            for up in services.values():
                up.stop()

    print(f"\n{'request (median of ' + str(args.runs) + ')':34} {'depth 0 ms':>11} {f'depth {n} ms':>15} {'ratio':>6}"
          f" {'ratio of the fastest':>21}")
    for name, t in table.items():
        print(f"{name:34} {t['0'][0]:>11.2f} {t['N'][0]:>15.2f} {t['N'][0] / t['0'][0]:>6.2f}"
              f" {t['N'][1] / t['0'][1]:>21.2f}")
    print(f"\n{'submit rate (jobs/s), each round':34} {'depth 0':>15} {f'depth {n}':>15}")
    for what, label in (("lifecycle", "lifecycle Jobs.submit, 1 process"), ("web", f"web, {args.clients} clients")):
        print(f"{label:34} {' '.join(f'{x:.0f}' for x in rates[what + ' 0']):>15} "
              f"{' '.join(f'{x:.0f}' for x in rates[what + ' N']):>15}")
    print(f"  web answers (last round): depth 0 {answers['0']}, depth {n} {answers['N']}")
    for label, split in splits.items():
        print(f"Redis bytes per queued job (depth {0 if label == '0' else n}, last round): "
              f"{split['bytes_per_job']:.0f} (used_memory / jobs); record {split['record']}, message "
              f"{split['message']:.0f} ({split['message_json']} bytes of JSON), indexes and counters {split['rest']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
