"""Reading worker heartbeats: which workers are alive, ready, and which models they hold.

A worker writes ``dreamq:worker:<host:pid>`` (JSON, with a TTL) and adds its id
to the set ``dreamq:workers`` on every heartbeat.  An id whose key expired is a
dead worker; the reader skips it and leaves the set to the workers, which clean
it up (removing here could race a worker that is merely late).
"""
from __future__ import annotations

import json

from . import keys
from .keys import WORKERS
from .redis_client import connect, redis_url_for

worker_key = keys.worker  # the name the heartbeat code and tests use


# Every live heartbeat in one round trip (the web reads them at each submit): [id, beat, ...];
# an id whose record expired is a dead worker, skipped.
_HEARTBEATS = """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local beat = redis.call('GET', ARGV[1] .. id)
  if beat then out[#out + 1] = id; out[#out + 1] = beat end
end
return out
"""


def live_workers(client) -> list[dict]:
    """Heartbeats of the workers whose key has not expired, sorted by id."""
    flat = client.register_script(_HEARTBEATS)(keys=[WORKERS], args=[worker_key("")])
    workers = []
    for worker_id, raw in sorted(zip(flat[::2], flat[1::2])):
        try:
            beat = json.loads(raw)
        except ValueError:
            continue
        if isinstance(beat, dict):
            workers.append(beat)
    return workers


def ready_workers(workers: list[dict]) -> list[dict]:
    return [w for w in workers if w.get("ready")]


def model_status(workers: list[dict], bf16_only: bool = False) -> dict[str, int]:
    """Model name -> how many ready workers have it loaded (with ``bf16_only``: and native bf16)."""
    counts: dict[str, int] = {}
    for w in ready_workers(workers):
        if bf16_only and not (w.get("bf16") or {}).get("native"):
            continue
        for name, state in (w.get("models") or {}).items():
            if state == "ready":
                counts[name] = counts.get(name, 0) + 1
    return counts


# -- is a worker of this host alive? (the image's HEALTHCHECK, `dreamq worker --check`) --------
# A worker's heartbeat key expires DREAMQ_HEARTBEAT_TTL_S after its last beat, so a live key
# means that its process runs and reaches Redis.  Its record names the host (a container's
# hostname) and the pid, so only this host's workers count, and only while their process runs.

def process_running(pid) -> bool:
    import os

    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except (TypeError, ValueError):
        return False
    return True


def local_worker_problem(settings=None) -> str | None:
    """Why no worker process of this host has a live heartbeat; None when one has."""
    import socket

    import redis

    from .settings import get_settings

    settings = settings or get_settings()
    if not settings.redis_sentinels and not redis_url_for(settings):
        return "no Redis: DREAMQ_REDIS_URL (or DREAMQ_REDIS_SENTINELS) is not set and no embedded Redis runs"
    try:
        with connect(settings, socket_timeout=5, socket_connect_timeout=5) as client:
            beats = live_workers(client)
    except redis.RedisError as exc:
        return f"Redis unreachable: {exc}"
    host = socket.gethostname()
    if any(b.get("host") == host and process_running(b.get("pid")) for b in beats):
        return None
    return f"no worker process of host {host} has a live heartbeat (live heartbeats in Redis: {len(beats)})"
