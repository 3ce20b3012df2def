"""What the views share: settings, the (lazy) Redis client, job state, store and Celery app."""
from __future__ import annotations

import redis
from flask import current_app

from shared.jobs import Jobs
from shared.redis_client import connect
from shared.settings import Settings
from shared.store import open_store
from shared.webhooks import system_resolver

from .errors import ApiError

TOKEN_COOKIE = "dreamq_token"


class Services:
    def __init__(self, settings: Settings, celery=None, redis_client=None, resolver=None):
        self.settings = settings
        self.resolver = resolver or system_resolver  # webhook hosts (tests give their own)
        self.store = open_store(settings)
        self._redis = redis_client
        self._celery = celery
        self._state: Jobs | None = None

    @property
    def redis(self) -> redis.Redis:
        # Created on first use (from_url does not connect), so the app starts while Redis is down.
        if self._redis is None:
            if not self.settings.has_redis:
                raise ApiError(503, "redis_unavailable",
                               "neither DREAMQ_REDIS_URL nor DREAMQ_REDIS_SENTINELS is set: the web has no queue")
            self._redis = connect(self.settings, socket_timeout=2, socket_connect_timeout=2)
        return self._redis

    @property
    def state(self) -> Jobs:
        if self._state is None:
            # replicas: a new job's record reaches that many replicas (WAIT) before its 202, so a
            # Sentinel failover right after it keeps the job (docs/DEPLOYMENT.md, "Redis Sentinel").
            self._state = Jobs(self.redis, self.settings.job_ttl_s, store=self.store, celery=self.celery,
                               replicas=self.settings.wait_replicas,
                               replicas_timeout_ms=self.settings.redis_wait_timeout_ms)
        return self._state

    @property
    def celery(self):
        if self._celery is None:
            from shared.queue import make_celery

            self._celery = make_celery(self.settings)
        return self._celery


def services() -> Services:
    return current_app.extensions["dreamq"]
