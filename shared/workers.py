"""Reading worker heartbeats: which workers are alive, ready, and which models they hold.

A worker writes ``dreamq:worker:<host:pid>`` (JSON, with a TTL) and adds its id
to the set ``dreamq:workers`` on every heartbeat.  An id whose key expired is a
dead worker; the reader skips it and leaves the set to the workers, which clean
it up (removing here could race a worker that is merely late).
"""
from __future__ import annotations

import json

WORKERS = "dreamq:workers"


def worker_key(worker_id: str) -> str:
    return f"dreamq:worker:{worker_id}"


def live_workers(client) -> list[dict]:
    """Heartbeats of the workers whose key has not expired, sorted by id."""
    ids = sorted(raw.decode() for raw in client.smembers(WORKERS))
    if not ids:
        return []
    workers = []
    for raw in client.mget([worker_key(i) for i in ids]):
        if raw is None:
            continue
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
