"""The HEALTHCHECK of the dreamq images: exit 0 when healthy, 1 when not (with the reason).

    healthcheck.py web [URL]   the web answers URL (default http://127.0.0.1:8000/healthz)
    healthcheck.py worker      a worker process of this container heartbeats in Redis

A worker's heartbeat key expires DREAMQ_HEARTBEAT_TTL_S after its last beat, so
a live key means that its process runs and reaches Redis.  Its record names the
host (the container's hostname) and the pid, so only this container's workers count.
"""
from __future__ import annotations

import os
import socket
import sys


def web(url: str = "http://127.0.0.1:8000/healthz") -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return None if response.status == 200 else f"{url}: HTTP {response.status}"
    except OSError as exc:  # URLError and HTTPError (4xx, 5xx) included
        return f"{url}: {exc}"


def _redis_url() -> str | None:
    from shared.settings import get_settings

    settings = get_settings()
    if settings.redis_url:
        return settings.redis_url
    # `dreamq up` without DREAMQ_REDIS_URL: its embedded Redis writes its port here.
    port_file = settings.data_dir / "redis" / "port"
    if port_file.is_file():
        return f"redis://127.0.0.1:{port_file.read_text().strip()}/0"
    return None


def _running(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except (TypeError, ValueError):
        return False
    return True


def worker() -> str | None:
    import redis

    from shared.workers import live_workers

    url = _redis_url()
    if not url:
        return "no Redis: DREAMQ_REDIS_URL is not set and no embedded Redis runs"
    try:
        beats = live_workers(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5))
    except redis.RedisError as exc:
        return f"Redis unreachable: {exc}"
    host = socket.gethostname()
    if any(b.get("host") == host and _running(b.get("pid")) for b in beats):
        return None
    return f"no worker process of host {host} has a live heartbeat (live heartbeats in Redis: {len(beats)})"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("web", "worker"):
        print(__doc__, file=sys.stderr)
        return 2
    problem = web(*argv[1:2]) if argv[0] == "web" else worker()
    if problem:
        print(f"unhealthy: {problem}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
