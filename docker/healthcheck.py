"""The HEALTHCHECK of the dreamq images: exit 0 when healthy, 1 when not (with the reason).

    healthcheck.py web [URL]   the web answers URL (default http://127.0.0.1:8000/healthz)
    healthcheck.py worker      a worker process of this container heartbeats in Redis

A worker's heartbeat key expires DREAMQ_HEARTBEAT_TTL_S after its last beat, so
a live key means that its process runs and reaches Redis.  Its record names the
host (the container's hostname) and the pid, so only this container's workers count.
"""
from __future__ import annotations

import sys


def web(url: str = "http://127.0.0.1:8000/healthz") -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return None if response.status == 200 else f"{url}: HTTP {response.status}"
    except OSError as exc:  # URLError and HTTPError (4xx, 5xx) included
        return f"{url}: {exc}"


def worker() -> str | None:
    # The same check as `dreamq worker --check`: one definition, in shared/workers.py.
    from shared.workers import local_worker_problem

    return local_worker_problem()


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
