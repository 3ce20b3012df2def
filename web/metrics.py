"""Prometheus metrics, computed at scrape time from Redis.

The job counters are kept in Redis by shared/stats.py, which subscribes to the
lifecycle's signals (a job is counted by the process that finished it; a scrape
folds any it left uncounted).  No job ids in labels; the only job-derived label
is ``model``, from the catalog (a bounded set).

Every web process reports the same cluster-wide values, so with several web
replicas aggregate with ``max``, never ``sum`` (docs/AUTOSCALING.md).

Queue depth for autoscaling is ``dreamq_queue_depth``: the job records that say
``queued`` (the ``dreamq:queued`` index, changed only by the atomic transitions in
shared/jobs.py), i.e. exactly the jobs that will run.  The Celery list can hold
more (``dreamq_broker_messages``): a message whose job was requeued or re-dispatched
with a new token, which a worker will skip.  A cancel removes the canceled job's
message (shared/jobs.py, Jobs.cancel), so cancels no longer make the two disagree.
"""
from __future__ import annotations

import math

import redis
from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from shared import keys
from shared.job import FINISHED
from shared.models import MODELS
from shared.queue import QUEUE
from shared.stats import (
    BUCKETS,
    FINISHED_COUNT,
    HIST,
    SEP,
    SUBMITTED,
    UNKNOWN_MODEL,
    fold_finished,
)
from shared.workers import live_workers, ready_workers

from .errors import ApiError
from .services import Services, services

bp = Blueprint("metrics", __name__)

# The labels of an attempt (shared/delivery.Outcome.kind), reported from 0.
WEBHOOK_OUTCOMES = ("success", "http_error", "network_error", "refused")


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
                p.zcard(keys.QUEUED_JOBS)
                p.zcard(keys.RUNNING_JOBS)
                p.llen(QUEUE)
                p.hgetall(keys.WEBHOOK_ATTEMPTS)
                p.hgetall(keys.WEBHOOK_DELIVERIES)
                (submitted, finished, hist_queue, hist_run, depth, running, messages, hook_attempts,
                 hook_deliveries) = p.execute()
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

        # Webhooks (dreamq/delivery.py): every attempt by outcome; every event once, delivered or given up.
        c = CounterMetricFamily("dreamq_webhook_attempts", "Webhook delivery attempts, by outcome.",
                                labels=["outcome"])
        counts = {o: 0 for o in WEBHOOK_OUTCOMES} | {k.decode(): int(n) for k, n in hook_attempts.items()}
        for outcome, n in sorted(counts.items()):
            c.add_metric([outcome], n)
        yield c
        c = CounterMetricFamily("dreamq_webhook_deliveries", "Webhook events delivered, or given up on (failed).",
                                labels=["result"])
        counts = {"delivered": 0, "failed": 0} | {k.decode(): int(n) for k, n in hook_deliveries.items()}
        for result, n in sorted(counts.items()):
            c.add_metric([result], n)
        yield c

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
