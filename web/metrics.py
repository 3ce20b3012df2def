"""Prometheus metrics, computed at scrape time from Redis.

Counters live in Redis (not in this process) so that every gunicorn process
and restarts report the same totals.  Jobs finish in the workers; each scrape
folds newly finished jobs into the counters and histograms, claiming each job
with SREM so concurrent scrapes count it once.  No job ids in labels.
"""
from __future__ import annotations

import json
import math

import redis
from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from shared.job import FINISHED, QUEUED, RUNNING, job_key
from shared.workers import live_workers, ready_workers

from .errors import ApiError
from .services import Services, services

STATS = "dreamq:stats"
SUBMITTED = f"{STATS}:submitted"  # hash model -> count
FINISHED_COUNT = f"{STATS}:finished"  # hash status -> count
PENDING = f"{STATS}:pending"  # ids submitted and not yet counted as finished
HIST = {"queue": f"{STATS}:hist:queue", "run": f"{STATS}:hist:run"}  # hash le -> count, plus sum, count
BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, math.inf)

bp = Blueprint("metrics", __name__)


def record_submitted(client: redis.Redis, job_id: str, model: str) -> None:
    with client.pipeline() as p:
        p.hincrby(SUBMITTED, model, 1)
        p.sadd(PENDING, job_id)
        p.execute()


def _bucket(value: float) -> str:
    return next(str(le) for le in BUCKETS if value <= le)


def fold_finished(client: redis.Redis) -> None:
    ids = [raw.decode() for raw in client.smembers(PENDING)]
    with client.pipeline() as p:
        for job_id in ids:
            p.hmget(job_key(job_id), "status", "metrics")
        rows = p.execute()
    for job_id, (status, metrics) in zip(ids, rows):
        if status is None:  # the record expired: nothing left to count
            client.srem(PENDING, job_id)
            continue
        status = status.decode()
        if status not in FINISHED or not client.srem(PENDING, job_id):
            continue
        durations = json.loads(metrics) if metrics else {}
        with client.pipeline() as p:
            p.hincrby(FINISHED_COUNT, status, 1)
            for name, key in HIST.items():
                value = durations.get(f"{name}_s")
                if isinstance(value, (int, float)):
                    p.hincrby(key, _bucket(value), 1)
                    p.hincrbyfloat(key, "sum", value)
                    p.hincrby(key, "count", 1)
            p.execute()


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
                submitted, finished, hist_queue, hist_run, depth, running = p.execute()
            workers = live_workers(r)
        except (redis.RedisError, ApiError) as exc:  # a scrape must still answer
            current_app.logger.warning("metrics: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        c = CounterMetricFamily("dreamq_jobs_submitted", "Jobs accepted by the web.", labels=["model"])
        for model, n in sorted(submitted.items()):
            c.add_metric([model.decode()], int(n))
        yield c
        c = CounterMetricFamily("dreamq_jobs_finished", "Jobs that reached an end state.", labels=["status"])
        for status in FINISHED:
            c.add_metric([status], int(finished.get(status.encode(), 0)))
        yield c
        for name, raw, help_ in (("queue", hist_queue, "Seconds from submission to start."),
                                 ("run", hist_run, "Seconds from start to end.")):
            h = HistogramMetricFamily(f"dreamq_job_{name}_seconds", help_)
            acc, buckets = 0, []
            for le in BUCKETS:
                acc += int(raw.get(str(le).encode(), 0))
                buckets.append(("+Inf" if le == math.inf else str(le), acc))
            h.add_metric([], buckets, float(raw.get(b"sum", 0)))
            yield h
        g = GaugeMetricFamily("dreamq_queue_depth", "Jobs waiting for a worker.")
        g.add_metric([], depth)
        yield g
        g = GaugeMetricFamily("dreamq_jobs_running", "Jobs a worker is running.")
        g.add_metric([], running)
        yield g
        g = GaugeMetricFamily("dreamq_workers", "Live workers by readiness.", labels=["ready"])
        ready = len(ready_workers(workers))
        g.add_metric(["true"], ready)
        g.add_metric(["false"], len(workers) - ready)
        yield g


@bp.get("/metrics")
def metrics():
    svc = services()
    registry = getattr(svc, "registry", None)
    if registry is None:  # one registry per app, so that several apps (tests) don't collide
        registry = svc.registry = CollectorRegistry(auto_describe=False)
        registry.register(RedisCollector(svc))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
