"""Job counters for /metrics, kept in Redis and fed by the lifecycle's signals.

Counters live in Redis (not in a process) so that every web process and restarts
report the same totals.  A submission is counted when it is queued; a job is
counted as finished by whichever process finished it (``job_finished``), and any
job that such a process left uncounted (it died just after the transition) is
folded by a later scrape.  Each job is claimed with SREM, so it counts once.  A scrape
folds one batch of the pending set, walking it with SSCAN from where the last scrape
stopped: its cost stays flat however many jobs are queued, and every id is seen within
(pending / batch) scrapes.
No job ids in labels; the only job-derived label is ``model``, from the catalog.
"""
from __future__ import annotations

import json
import math

import redis

from . import keys
from .job import FINISHED
from .jobs import job_finished, job_submitted
from .models import MODELS

SUBMITTED, FINISHED_COUNT, PENDING, HIST = keys.SUBMITTED, keys.FINISHED_COUNT, keys.PENDING, keys.HIST
# HIST queue: hash le -> count, plus sum, count.  run: the same per model, fields "model|le" etc.
BY_MODEL = ("run",)  # the histograms with a model label
BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, math.inf)
SEP = "|"
# Counts folded before the model label existed (fields without SEP) are reported
# under this model, and so is a job whose params name no catalog model.
UNKNOWN_MODEL = "unknown"



def record_submitted(client: redis.Redis, job_id: str, model: str) -> None:
    with client.pipeline() as p:
        p.hincrby(SUBMITTED, model, 1)
        p.sadd(PENDING, job_id)
        p.execute()


def _bucket(value: float) -> str:
    return next(str(le) for le in BUCKETS if value <= le)


def _model_of(params: bytes | None) -> str:
    try:
        model = json.loads(params).get("model") if params else None
    except (ValueError, AttributeError):
        model = None
    return model if model in MODELS else UNKNOWN_MODEL  # a bounded label set, whatever a record holds


FOLD_BATCH = 200  # pending ids looked at per scrape


def fold_finished(client: redis.Redis, ids: list[str] | None = None, batch: int = FOLD_BATCH) -> None:
    """Count the finished jobs among ``ids`` (default: the next batch of the jobs not yet counted)."""
    if ids is None:
        cursor = int(client.get(keys.FOLD_CURSOR) or 0)
        cursor, raw = client.sscan(PENDING, cursor, count=batch)
        client.set(keys.FOLD_CURSOR, cursor)
        ids = [r.decode() for r in raw]
    with client.pipeline() as p:
        for job_id in ids:
            p.hmget(keys.job(job_id), "status", "metrics", "params")
        rows = p.execute()
    for job_id, (status, metrics, params) in zip(ids, rows):
        if status is None:  # the record expired: nothing left to count
            client.srem(PENDING, job_id)
            continue
        status = status.decode()
        if status not in FINISHED or not client.srem(PENDING, job_id):
            continue
        model = _model_of(params)
        durations = json.loads(metrics) if metrics else {}
        with client.pipeline() as p:
            p.hincrby(FINISHED_COUNT, f"{status}{SEP}{model}", 1)
            for name, key in HIST.items():
                value = durations.get(f"{name}_s")
                if isinstance(value, (int, float)):
                    prefix = f"{model}{SEP}" if name in BY_MODEL else ""
                    p.hincrby(key, prefix + _bucket(value), 1)
                    p.hincrbyfloat(key, prefix + "sum", value)
                    p.hincrby(key, prefix + "count", 1)
            p.execute()


def on_submitted(jobs, job, **_):
    record_submitted(jobs.r, job.id, job.params.get("model", UNKNOWN_MODEL))


def on_finished(jobs, job_id, **_):
    fold_finished(jobs.r, [job_id])
