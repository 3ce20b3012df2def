"""The result cache: a job identical to a finished, still-stored one is answered from its result.

The engine is deterministic, so the same kind, effective parameters, input files and engine give
the same result.  The cache key is SHA-256 of: the kind, the canonical JSON of the effective
parameters (sorted keys), SHA-256 of the stored input PNG, SHA-256 of each other input file by
role (a guide), the engine's identity, and the scope.  The identity is the weights fingerprint
each worker reports in its heartbeat (``fingerprints``: model -> SHA-256 of its weight arrays,
computed once at load), plus, for a job whose ``precision`` is not fp32, the precision it would
resolve to (bf16 where the worker has native bf16, else fp32).  The web takes it from the ready
workers that hold the model: when they disagree, or none reports one, there is no key (a miss,
never a guess).  The scope is the caller's owner (web/auth.py; one scope when no tokens are set),
so that one token is never answered from another's jobs: a hit would tell it that someone sent
the same photo.  ``DREAMQ_CACHE_SHARED=true`` makes one scope for all (a public deployment).

Two Redis keys (shared/keys.py), both expiring with the job TTL:

* ``cachekey:<job id>``: written at submit, before the message is sent: the job's key and the
  identity it was computed for.
* ``cache:<key>`` -> the id of the job whose result answers it: written on ``job_finished``
  (succeeded only) by the process that finished the job, only when that worker's own heartbeat
  gives the same identity.  Canceled and failed jobs are never sources.

A hit (``answer``) makes a new job that is born succeeded: its own record (owned by the caller),
metrics ``{"cached": true, "queue_s": 0, "run_s": 0}`` plus ``cached_from`` (the source's id)
only when the source has the same owner, no message; it sends job_submitted and job_finished as
any job does, so the counters count it, and it went through the same rate limit as any submit.
It stores no file: its ``files_from`` names the store folder of the job that ran (a hit of a hit
names that same folder, never a chain), and every read of a job's files goes through
``Job.files_id``.  Its input is that folder's by construction (the key hashes it).  So a hit costs
a record, not the bytes of a video's frames.  The folder is kept while any job reading it lives:
each hit extends the folder's keep-until in Redis (``Jobs.share_files``: its own expiry, the
sweep's clock), and the expiry sweep (worker/worker.py) deletes a folder only once its own job and
its last hit have expired.  A cancel deletes only a queued job's own folder, and a queued job is
never a source.  The entry then names the new job (it lives a whole TTL).  A source that is no
longer succeeded, whose result is gone from the store, or that expires within ``margin_s`` (the
sweep could be deleting its folder) is a miss, and its entry is deleted.  ``cache=false`` on the
form opts out.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from . import keys
from .job import SUCCEEDED, Job
from .jobs import Jobs, job_finished, job_submitted
from .kinds import get_kind
from .workers import live_workers, ready_workers

log = logging.getLogger(__name__)


def weights_fingerprint(arrays: Iterable[Any]) -> str:
    """SHA-256 over a network's weight arrays in order (dtype, shape and bytes of each)."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def engine_identity(beat: Mapping[str, Any], model: str, precision: str | None) -> str | None:
    """What a worker (its heartbeat) would run ``model`` with: its weights fingerprint, and the
    precision a non-fp32 request resolves to there; None when it does not hold the model ready or
    reports no fingerprint."""
    if (beat.get("models") or {}).get(model) != "ready":
        return None
    fingerprint = (beat.get("fingerprints") or {}).get(model)
    if not fingerprint or not isinstance(fingerprint, str):
        return None
    if precision in (None, "fp32"):
        return fingerprint
    native = bool((beat.get("bf16") or {}).get("native"))
    resolved = "bf16" if native else "fp32"  # worker/device.py resolve_precision
    return f"{fingerprint}:{resolved}"


def current_identity(client, model: str, precision: str | None) -> str | None:
    """The identity every ready worker holding ``model`` agrees on; None if they disagree or none has one."""
    found = {engine_identity(w, model, precision) for w in ready_workers(live_workers(client))
             if (w.get("models") or {}).get(model) == "ready"}
    if len(found) != 1 or None in found:
        return None
    return found.pop()


def cache_key(kind: str, params: Mapping[str, Any], input_png: bytes, files: Mapping[str, bytes] | None,
              identity: str, scope: str | None = None) -> str:
    """``scope``: whose jobs may answer (an owner); None: everyone's (no tokens, or a shared cache)."""
    h = hashlib.sha256()
    parts = [kind, json.dumps(params, sort_keys=True, separators=(",", ":"), default=str),
             hashlib.sha256(input_png).hexdigest(),
             *(f"{role}={hashlib.sha256(data).hexdigest()}" for role, data in sorted((files or {}).items())),
             identity, f"scope={scope or '*'}"]
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def key_for(client, kind: str, params: Mapping[str, Any], input_png: bytes,
            files: Mapping[str, bytes] | None, scope: str | None = None) -> tuple[str, str] | None:
    """(cache key, identity) of a job about to be submitted, or None (no agreed identity: a miss).
    ``scope``: the submitter's owner, or None for a cache shared by all (``DREAMQ_CACHE_SHARED``)."""
    identity = current_identity(client, params.get("model"), params.get("precision"))
    if identity is None:
        return None
    return cache_key(kind, params, input_png, files, identity, scope), identity


def remember(client, job_id: str, key: str, identity: str, ttl_s: int) -> None:
    """Note the key of a job being submitted (call before its message is sent)."""
    client.set(keys.job_cache_key(job_id), json.dumps({"key": key, "identity": identity}), ex=ttl_s)


def margin_s(ttl_s: int) -> float:
    """A source this close to its expiry is not used: the sweep may be deleting its folder (a tenth
    of the TTL, at most 10 minutes: far more than a hit takes, or the hosts' clocks differ)."""
    return min(600.0, ttl_s / 10)


def answer(jobs: Jobs, key: str, *, owner: str | None, warnings: list[str] | None,
           input_png: bytes, files: Mapping[str, bytes] | None, webhook: dict | None = None) -> Job | None:
    """A new succeeded job answered from the entry of ``key``, or None (a miss; a stale entry is deleted).

    ``input_png`` and ``files`` are not stored again: the key hashes them, so the source's are the same."""
    r, store = jobs.r, jobs.store
    raw = r.get(keys.result_cache(key))
    if raw is None:
        return None
    now = time.time()
    source = jobs.get(raw.decode())
    kind = get_kind(source.kind) if source is not None else None
    usable = (source is not None and source.status == SUCCEEDED and kind is not None
              and source.created_at + jobs.ttl_s - now > margin_s(jobs.ttl_s)
              and store.exists(source.files_id, kind.result_name(source.params)))
    if not usable:  # expired or expiring, no longer succeeded, or its result is gone: never a broken link
        r.delete(keys.result_cache(key))
        return None

    folder = source.files_id  # the folder of the job that ran: a hit of a hit shares it too
    warnings = [*(warnings or []), *(w for w in source.warnings if w not in (warnings or []))]  # + what ran
    job = jobs.new(dict(source.params), kind=kind.name, warnings=warnings, owner=owner)
    job.webhook = webhook or None  # its `completed` event is sent like a worker's (shared/webhooks.py)
    job.files_from = folder
    # Kept until this hit expires (the sweep's clock: created_at + TTL), before the record exists.
    jobs.share_files(folder, job.created_at + jobs.ttl_s)
    job.input_url = store.url_of(folder, kind.file("input"))
    job.result_url = store.url_of(folder, kind.result_name(source.params))
    if "preview" in kind.files and source.preview_url:
        job.preview_url = store.url_of(folder, kind.file("preview"))
    job.status, job.started_at, job.finished_at, job.enqueued_at = SUCCEEDED, now, now, now
    job.progress = dict(source.progress or {})
    job.metrics = {"queue_s": 0.0, "run_s": 0.0, "cached": True}
    if source.owner == owner:  # another owner's job id is never shown (nor that it exists)
        job.metrics["cached_from"] = source.id
    for name in ("precision", "frames_done"):  # what really ran, as the source measured it
        if name in (source.metrics or {}):
            job.metrics[name] = source.metrics[name]
    jobs.save_finished(job)
    # The new job lives a whole TTL: the entry names it from now on.
    r.set(keys.result_cache(key), job.id, ex=jobs.ttl_s)
    job_submitted.send(jobs, job=job)
    jobs._finished(job.id, SUCCEEDED)  # the same delivery as a worker's finish (a failing subscriber is logged)
    return job


def record(jobs: Jobs, job_id: str) -> bool:
    """Make the succeeded job ``job_id`` the source of its cache key, if it has one and the worker
    that finished it ran the engine the key was computed for."""
    r = jobs.r
    raw = r.get(keys.job_cache_key(job_id))
    job = jobs.get(job_id) if raw is not None else None
    if job is None or job.status != SUCCEEDED or not job.worker:
        return False
    noted = json.loads(raw)
    beat = r.get(keys.worker(job.worker))  # the finishing worker's own heartbeat
    try:
        identity = engine_identity(json.loads(beat), job.params.get("model"), job.params.get("precision")) \
            if beat else None
    except ValueError:
        identity = None
    if identity is None or identity != noted.get("identity"):
        log.info("job %s: not cached (its worker's engine is not the one its key names)", job_id)
        return False
    r.set(keys.result_cache(noted["key"]), job_id, ex=jobs.ttl_s)
    return True


def on_finished(jobs, job_id, status, **_):
    if status == SUCCEEDED:
        record(jobs, job_id)
