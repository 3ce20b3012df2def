"""Hostile traffic against a running dreamq web: does /healthz and a small submit still answer?

    python -m bench.hostile http://127.0.0.1:8000 [attack ...] [--hold 20] [--streams 200] [--slowloris 40]

Each attack runs for a bounded time and stops by itself; meanwhile a probe times /healthz and a
normal small submission once a second and prints how many answered and how fast. Only 127.0.0.1.
Attacks register themselves in ATTACKS (name -> function(base, args) -> dict of extra figures).
"""
from __future__ import annotations

import argparse
import io
import socket
import statistics
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import requests
from PIL import Image

ATTACKS: dict = {}


def attack(name: str):
    def register(fn):
        ATTACKS[name] = fn
        return fn
    return register


def _host_port(base: str) -> tuple[str, int]:
    parts = urlsplit(base)
    if parts.hostname != "127.0.0.1":  # this tool only ever attacks the local machine
        raise SystemExit(f"refusing {base}: only http://127.0.0.1:PORT")
    return parts.hostname, parts.port or 80


def small_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


SUBMIT_FORM = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": "1", "iterations": "3"}


def submit(base: str, timeout: float = 10, headers: dict | None = None) -> requests.Response:
    return requests.post(base + "/api/v1/jobs", files={"image": ("p.png", small_png(), "image/png")},
                         data=SUBMIT_FORM, timeout=timeout, headers=headers)


class Probe:
    """Times /healthz and a small submit once a second, in a thread, until stopped."""

    def __init__(self, base: str, timeout: float = 10, headers: dict | None = None):
        self.base, self.timeout, self.headers = base, timeout, headers
        self.times: dict[str, list[float | None]] = {"healthz": [], "submit": []}  # None: no answer in time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _time(self, name: str, call) -> None:
        t0 = time.monotonic()
        try:
            call()
            self.times[name].append(time.monotonic() - t0)
        except requests.RequestException:
            self.times[name].append(None)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self._time("healthz", lambda: requests.get(self.base + "/healthz", timeout=self.timeout,
                                                       headers=self.headers).raise_for_status())
            self._time("submit", lambda: submit(self.base, self.timeout, self.headers))
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - t0)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(self.timeout * 2 + 5)

    def summary(self) -> dict:
        out = {}
        for name, ts in self.times.items():
            ok = [t for t in ts if t is not None]
            out[name] = {"answered": len(ok), "tried": len(ts), "p50_s": round(statistics.median(ok), 3) if ok else None,
                         "max_s": round(max(ok), 3) if ok else None}
        return out


def close_wait(port: int) -> int:
    """Server-side sockets on `port` whose client has hung up but the server still holds (CLOSE_WAIT)."""
    import psutil

    return sum(1 for c in psutil.net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_CLOSE_WAIT)


def _connect(host: str, port: int) -> socket.socket | None:
    try:
        return socket.create_connection((host, port), timeout=5)
    except OSError:
        return None


@attack("streams")
def streams(base: str, args) -> dict:
    """Open `--streams` event streams of one queued job and hold them; then hang up and time the freeing."""
    host, port = _host_port(base)
    r = submit(base, 30, args.headers)
    r.raise_for_status()
    path = r.headers["Location"] + "/events"
    auth = "".join(f"{k}: {v}\r\n" for k, v in (args.headers or {}).items())
    socks = []
    for _ in range(args.streams):
        s = _connect(host, port)
        if s is None:
            continue
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n{auth}\r\n".encode())
        socks.append(s)
    opened, wait_until = 0, time.monotonic() + 15
    for s in socks:  # a stream counts as open once its first bytes came back (within 15 s for all)
        try:
            s.settimeout(max(0.01, wait_until - time.monotonic()))
            opened += bool(s.recv(4096))
        except OSError:
            pass
    with Probe(base, headers=args.headers) as probe:
        time.sleep(args.hold)
    for s in socks:
        s.close()
    t0, freed_s = time.monotonic(), None
    while time.monotonic() - t0 < 30:
        time.sleep(0.25)
        if close_wait(port) == 0:
            freed_s = round(time.monotonic() - t0, 2)
            break
    return {"streams_tried": len(socks), "streams_opened": opened, **probe.summary(),
            "all_freed_after_hangup_s": freed_s}


@attack("slowloris")
def slowloris(base: str, args) -> dict:
    """Half the connections trickle headers, half announce a 19 MB upload and trickle its body."""
    host, port = _host_port(base)
    socks: list[tuple[socket.socket, bytes]] = []
    for i in range(args.slowloris):
        s = _connect(host, port)
        if s is None:
            continue
        try:
            if i % 2:
                s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n".encode())
                socks.append((s, b"X-a: b\r\n"))
            else:
                s.sendall(f"POST /api/v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\n"
                          "Content-Type: multipart/form-data; boundary=x\r\n"
                          f"Content-Length: {19 * 1024 * 1024}\r\n\r\n--x\r\n".encode())
                socks.append((s, b"aaaaa"))
        except OSError:
            s.close()
    dropped = 0
    with Probe(base, headers=args.headers) as probe:
        end = time.monotonic() + args.hold
        while time.monotonic() < end:  # a few bytes per connection per second
            for s, trickle in socks:
                try:
                    s.send(trickle)
                except OSError:
                    pass
            time.sleep(1)
    for s, _ in socks:
        try:  # did the server give up on it (a closed or answered connection reads as data or EOF)?
            s.setblocking(False)
            s.recv(1)
            dropped += 1
        except BlockingIOError:
            pass
        except OSError:
            dropped += 1
        s.close()
    return {"connections": len(socks), "dropped_by_server": dropped, **probe.summary()}


# -- decode bombs and concurrent uploads ---------------------------------------------------
# Small files that decode large (issue 10): each is a few hundred bytes to 150 KB on the wire.

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def zero_png(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    """A valid all-zero PNG, compressed row by row (never the whole image in memory)."""
    import struct
    import zlib

    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\0" * (1 + width * channels * bit_depth // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def webp_bomb(width: int = 16383, height: int = 2441) -> bytes:
    """A lossless WebP of ~40 Mpx transparent pixels: about 40 bytes."""
    buf = io.BytesIO()
    Image.new("RGBA", (width, height)).save(buf, format="WEBP", lossless=True, method=0, quality=0)
    return buf.getvalue()


def hostile_images() -> dict[str, bytes]:
    """name -> payload; all but `header_bomb` are just under the default 40 Mpx limit."""
    return {"png16_39mpx": zero_png(6245, 6245, 16, 0),  # 16-bit grey: was converted through float64
            "rgba_39mpx": zero_png(6245, 6245, 8, 6),  # alpha: was composited through three RGBA copies
            "webp_40mpx": webp_bomb(),
            "header_bomb": header_bomb()}  # over the limit: refused from its header


def header_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header declares 900 Mpx, with a token IDAT: under 1 KB."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + _png_chunk(b"IEND", b""))


def scan_bomb(side: int = 1448, size: int = 2_000_000) -> bytes:
    """A valid progressive JPEG of ``side`` x ``side`` (1448: just under the 2.1 Mpx that take a decode
    slot), padded to about ``size`` bytes with empty scans that libjpeg decodes, slowly (issue 19).

    Pillow's own progressive JPEG of a smooth picture, then a Huffman table whose one code, "0", is an
    EOB run of 2^14 + 14 bits, and copies of a 13-byte luma AC scan (bands 1-63, again) whose
    data is that code and 14 one bits: a run of 32767 blocks, all of them at 1448 px.  Each copy is
    a pass over every luma block that changes none; 2 MB of them took 19 s of CPU to decode.
    """
    import struct

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    picture = Image.fromarray(rng.integers(0, 256, (max(1, side // 16),) * 2 + (3,), dtype=np.uint8))
    picture.resize((side, side), Image.BILINEAR).save(buf, format="JPEG", progressive=True)
    jpeg = buf.getvalue()
    assert jpeg.endswith(b"\xff\xd9")
    # DHT: class 1 (AC), table 3 (unused by Pillow's scans); one code of length 1; symbol 0xE0.
    dht = b"\xff\xc4" + struct.pack(">HB", 2 + 1 + 16 + 1, 0x13) + bytes([1] + [0] * 15) + b"\xe0"
    # SOS: 1 component (1: Y), DC table 0 / AC table 3, Ss=1, Se=63, Ah=Al=0; then 0 + 14 ones + a
    # padding one bit: 7F FF, and the 00 that stuffs an FF in entropy-coded data.
    scan = b"\xff\xda" + struct.pack(">HBBBBBB", 8, 1, 1, 0x03, 1, 63, 0) + b"\x7f\xff\x00"
    copies = max(0, (size - len(jpeg) - len(dht)) // len(scan))
    return jpeg[:-2] + dht + scan * copies + b"\xff\xd9"


def post_upload(base: str, files: dict, timeout: float, headers: dict | None) -> tuple[int | str, float]:
    """One submission of ``files``: (its status, or the exception's name; seconds it took)."""
    t0 = time.monotonic()
    try:
        key: int | str = requests.post(base + "/api/v1/jobs", files=files, data=SUBMIT_FORM, timeout=timeout,
                                       headers=headers).status_code
    except requests.RequestException as exc:
        key = type(exc).__name__
    return key, time.monotonic() - t0


def web_processes(port: int) -> list:
    """The gunicorn processes serving `port`: the master listening on it and its workers."""
    import psutil

    pids = {c.pid for c in psutil.net_connections(kind="tcp")
            if c.pid and c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN}
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            # Workers share the master's listening socket and psutil names one of them: go up to the master.
            master = psutil.Process(pid)
            while (parent := master.parent()) is not None and "gunicorn" in " ".join(parent.cmdline()):
                master = parent
            procs.update({p.pid: p for p in (master, *master.children())})
        except psutil.NoSuchProcess:
            pass
    return list(procs.values())


def peak_rss_mb(proc) -> float | None:
    """Peak resident memory (VmHWM) of a process, in MB: exact, no sampling needed."""
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def decode_attacks(url: str, concurrent: int = 8, rounds: int = 1, headers: dict | None = None,
                   timeout: float = 120) -> dict:
    """`concurrent` uploads of the hostile images at once, `rounds` times; status counts, latency of
    /healthz and a normal submit meanwhile, and the peak RSS of every web process."""
    from concurrent.futures import ThreadPoolExecutor

    base = url.rstrip("/")
    _, port = _host_port(base)
    images = hostile_images()
    names = [list(images)[i % len(images)] for i in range(concurrent)]
    statuses: dict[str, dict[int | str, int]] = {n: {} for n in images}
    slowest = 0.0

    def upload(name: str) -> None:
        nonlocal slowest
        key, took = post_upload(base, {"image": ("x", images[name], "application/octet-stream")}, timeout, headers)
        slowest = max(slowest, took)
        statuses[name][key] = statuses[name].get(key, 0) + 1

    procs = web_processes(port)
    with Probe(base, headers=headers) as probe, ThreadPoolExecutor(concurrent) as pool:
        for _ in range(rounds):  # bounded: `rounds` waves, each ends when its uploads are answered
            list(pool.map(upload, names))
    procs = {p.pid: p for p in procs + web_processes(port)}.values()  # workers recycled meanwhile too
    return {"uploads": statuses, "slowest_upload_s": round(slowest, 2), **probe.summary(),
            "peak_rss_mb": {p.pid: peak_rss_mb(p) for p in procs}}


@attack("decodes")
def decodes(base: str, args) -> dict:
    """8 concurrent uploads of small files that decode to ~40 Mpx (and one header bomb)."""
    return decode_attacks(base, concurrent=args.uploads, rounds=args.rounds, headers=args.headers)


def cpu_seconds(procs) -> float:
    """User + system CPU seconds of the processes so far (those that ended count as nothing)."""
    import psutil

    total = 0.0
    for p in procs:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def scan_attacks(url: str, concurrent: int = 6, hold: float = 10, headers: dict | None = None,
                 timeout: float = 300) -> dict:
    """The progressive scan bomb (scan_bomb) as `image`, then as `guide`, one at a time: the CPU seconds
    each cost the web's processes (nothing else runs meanwhile).  Then `concurrent` clients send it
    again and again, none starting one after `hold` s, while the probe times /healthz and a normal submit."""
    from concurrent.futures import ThreadPoolExecutor

    base = url.rstrip("/")
    _, port = _host_port(base)
    bomb = scan_bomb()
    statuses: dict[str, dict[int | str, int]] = {"image": {}, "guide": {}}
    slowest = 0.0

    def upload(field: str) -> None:
        nonlocal slowest
        files = {"image": ("p.png", small_png(), "image/png")}
        files[field] = ("bomb.jpg", bomb, "image/jpeg")
        key, took = post_upload(base, files, timeout, headers)
        slowest = max(slowest, took)
        statuses[field][key] = statuses[field].get(key, 0) + 1

    procs = web_processes(port)
    cpu_s = {}
    for field in ("image", "guide"):
        before = cpu_seconds(procs)
        upload(field)
        cpu_s[field] = round(cpu_seconds(procs) - before, 2)

    def client(i: int) -> None:
        end = time.monotonic() + hold
        while time.monotonic() < end:
            upload(("image", "guide")[i % 2])

    before, t0 = cpu_seconds(procs), time.monotonic()
    with Probe(base, headers=headers) as probe, ThreadPoolExecutor(concurrent) as pool:
        list(pool.map(client, range(concurrent)))
    return {"bomb_bytes": len(bomb), "cpu_s_per_upload": cpu_s, "worst_upload_cpu_s": max(cpu_s.values()),
            "uploads": statuses, "slowest_upload_s": round(slowest, 2), "wave_s": round(time.monotonic() - t0, 2),
            "wave_cpu_s": round(cpu_seconds(procs) - before, 2), **probe.summary()}


@attack("scans")
def scans(base: str, args) -> dict:
    """The progressive scan bomb, one at a time (CPU per upload), then `--scan-uploads` clients for `--hold` s."""
    return scan_attacks(base, concurrent=args.scan_uploads, hold=args.hold, headers=args.headers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="the web, e.g. http://127.0.0.1:8000 (127.0.0.1 only)")
    p.add_argument("attacks", nargs="*", help=f"default: all of {', '.join(ATTACKS)}")
    p.add_argument("--hold", type=float, default=20, help="seconds each attack lasts")
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--slowloris", type=int, default=40)
    p.add_argument("--uploads", type=int, default=8, help="concurrent hostile uploads (decodes)")
    p.add_argument("--rounds", type=int, default=2, help="waves of hostile uploads (decodes)")
    p.add_argument("--scan-uploads", type=int, default=6, help="concurrent scan bombs (scans)")
    p.add_argument("--token", help="API token, if the web requires one")
    args = p.parse_args(argv)
    args.headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    base = args.url.rstrip("/")
    _host_port(base)
    for name in args.attacks or list(ATTACKS):
        if name not in ATTACKS:
            raise SystemExit(f"unknown attack {name!r}; have {', '.join(ATTACKS)}")
        print(f"{name}: {ATTACKS[name](base, args)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
