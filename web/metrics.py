"""Prometheus metrics, computed at scrape time from Redis.

Counters live in Redis (not in this process) so that every gunicorn process
and restarts report the same totals.  Jobs finish in the workers; each scrape
folds newly finished jobs into the counters and histograms, claiming each job
with SREM so concurrent scrapes count it once.  No job ids in labels; the only
job-derived label is ``model``, from the catalog (a bounded set).

Every web process reports the same cluster-wide values, so with several web
replicas aggregate with ``max``, never ``sum`` (docs/AUTOSCALING.md).

Queue depth for autoscaling is ``dreamq_queue_depth``: the job records that say
``queued`` (the ``dreamq:queued`` index, changed only by the atomic transitions in
shared/job.py), i.e. exactly the jobs that will run.  The Celery list can hold
more (``dreamq_broker_messages``): a message whose job was requeued or re-dispatched
with a new token, which a worker will skip.  A cancel removes the canceled job's
message (JobQueueState.cancel), so cancels no longer make the two disagree.
"""
from __future__ import annotations

import json
import math

import redis
from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from shared.job import FINISHED, QUEUED, RUNNING, job_key
from shared.models import MODELS
from shared.queue import QUEUE
from shared.workers import live_workers, ready_workers

from .errors import ApiError
from .services import Services, services

STATS = "dreamq:stats"
SUBMITTED = f"{STATS}:submitted"  # hash model -> count
FINISHED_COUNT = f"{STATS}:finished"  # hash "status|model" -> count
PENDING = f"{STATS}:pending"  # ids submitted and not yet counted as finished
# queue: hash le -> count, plus sum, count.  run: the same per model, fields "model|le" etc.
HIST = {"queue": f"{STATS}:hist:queue", "run": f"{STATS}:hist:run"}
BY_MODEL = ("run",)  # the histograms with a model label
BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, math.inf)
SEP = "|"
# Counts folded before the model label existed (fields without SEP) are reported
# under this model, and so is a job whose params name no catalog model.
UNKNOWN_MODEL = "unknown"

bp = Blueprint("metrics", __name__)


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


def fold_finished(client: redis.Redis) -> None:
    ids = [raw.decode() for raw in client.smembers(PENDING)]
    with client.pipeline() as p:
        for job_id in ids:
            p.hmget(job_key(job_id), "status", "metrics", "params")
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


def _histogram(raw: dict[str, float]) -> tuple[list[tuple[str, float]], float]:
    acc, buckets = 0, []
    for le in BUCKETS:
        acc += int(raw.get(str(le), 0))
        buckets.append(("+Inf" if le == math.inf else str(le), acc))
    return buckets, float(raw.get("sum", 0))


class RedisCollector:
    def __init__(self, svc: Services):
        self.svc = svc

    def collect(self):
        up = GaugeMetricFamily("dreamq_redis_up", "Whether the web reached Redis for this scrape.")
        try:
            r = self.svc.redis
            fold_finished(r)
            with r.pipeline() as p:
                p.hgetall(SUBMITTED)
                p.hgetall(FINISHED_COUNT)
                p.hgetall(HIST["queue"])
                p.hgetall(HIST["run"])
                p.zcard(QUEUED)
                p.zcard(RUNNING)
                p.llen(QUEUE)
                submitted, finished, hist_queue, hist_run, depth, running, messages = p.execute()
            workers = live_workers(r)
        except (redis.RedisError, ApiError) as exc:  # a scrape must still answer
            current_app.logger.warning("metrics: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        # Every catalog model is reported from the start (at 0), so that rate() and
        # increase() see a job's first count rather than a series appearing.
        c = CounterMetricFamily("dreamq_jobs_submitted", "Jobs accepted by the web.", labels=["model"])
        counts = {m: 0 for m in MODELS} | {m.decode(): int(n) for m, n in submitted.items()}
        for model, n in sorted(counts.items()):
            c.add_metric([model], n)
        yield c

        c = CounterMetricFamily("dreamq_jobs_finished", "Jobs that reached an end state.", labels=["status", "model"])
        counts = {(s, m): 0 for s in FINISHED for m in MODELS}
        for field, n in finished.items():
            status, _, model = field.decode().partition(SEP)  # "status|model", or "status" before the label
            key = (status, model or UNKNOWN_MODEL)
            counts[key] = counts.get(key, 0) + int(n)
        for (status, model), n in sorted(counts.items()):
            c.add_metric([status, model], n)
        yield c

        h = HistogramMetricFamily("dreamq_job_queue_seconds", "Seconds from submission to start.")
        h.add_metric([], *_histogram({k.decode(): float(v) for k, v in hist_queue.items()}))
        yield h
        per_model: dict[str, dict[str, float]] = {m: {} for m in MODELS}
        for field, v in hist_run.items():
            model, _, name = field.decode().rpartition(SEP)  # "model|le", or "le" before the label
            per_model.setdefault(model or UNKNOWN_MODEL, {})[name] = float(v)
        h = HistogramMetricFamily("dreamq_job_run_seconds", "Seconds from start to end, by model.", labels=["model"])
        for model, raw in sorted(per_model.items()):
            h.add_metric([model], *_histogram(raw))
        yield h

        g = GaugeMetricFamily("dreamq_queue_depth",
                              "Jobs waiting for a worker: queued job records, each of which will run.")
        g.add_metric([], depth)
        yield g
        g = GaugeMetricFamily("dreamq_broker_messages",
                              "Messages in the Celery list; can exceed the depth by messages a worker will skip.")
        g.add_metric([], messages)
        yield g
        g = GaugeMetricFamily("dreamq_jobs_running", "Job records marked running.")
        g.add_metric([], running)
        yield g
        g = GaugeMetricFamily("dreamq_workers", "Live workers by readiness.", labels=["ready"])
        ready = len(ready_workers(workers))
        g.add_metric(["true"], ready)
        g.add_metric(["false"], len(workers) - ready)
        yield g
        g = GaugeMetricFamily("dreamq_workers_busy", "Live workers running a job (their heartbeat names one).")
        g.add_metric([], sum(1 for w in workers if w.get("job")))
        yield g


@bp.get("/metrics")
def metrics():
    svc = services()
    registry = getattr(svc, "registry", None)
    if registry is None:  # one registry per app, so that several apps (tests) don't collide
        registry = svc.registry = CollectorRegistry(auto_describe=False)
        registry.register(RedisCollector(svc))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
