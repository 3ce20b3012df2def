"""Rate limits, kept by Flask-Limiter in Redis: submissions per client, failed logins per address.

Counted in Redis (the app's own, through the `limits` library's Redis storage), so a limit
holds across gunicorn processes and restarts.  Both are fixed one-window counters, checked
where the view decides (before the upload is read; failed logins only), not as route
decorators: a decorator would answer before the form page can show the error in the form.
"""
from __future__ import annotations

import math
import time

from flask import Flask, current_app, request
from flask_limiter import Limiter
from limits import RateLimitItemPerMinute, RateLimitItemPerSecond

from shared.redis_client import connect

from .errors import ApiError

KEY_PREFIX = "dreamq:limits"


def client_key() -> str:
    """Who a request counts against: the peer address, or the one the trusted proxies say
    (DREAMQ_PROXY_HOPS, through ProxyFix); with 0 hops X-Forwarded-For is ignored."""
    return request.remote_addr or "unknown"


def init_app(app: Flask, settings, redis_client=None) -> Limiter:
    # The counters go through a pool of ours (shared/redis_client.py: one server, or the master the
    # sentinels name, never a replica), handed to the `limits` library's plain Redis storage: its
    # own `redis+sentinel://` storage would read counters from replicas, which lag.
    uri, options = "memory://", {}
    if redis_client is not None:  # the app's injected client: the same server and pool
        uri, options = "redis://", {"connection_pool": redis_client.connection_pool}
    elif settings.has_redis:
        pool = connect(settings, socket_timeout=2, socket_connect_timeout=2).connection_pool
        uri, options = "redis://", {"connection_pool": pool}
    # No route is decorated and no default limit is set: the limiter only keeps the counters.
    limiter = Limiter(client_key, app=app, strategy="fixed-window", key_prefix=KEY_PREFIX,
                      storage_uri=uri, storage_options=options)
    app.extensions["dreamq.limiter"] = limiter
    return limiter


def _counters():
    return current_app.extensions["dreamq.limiter"].limiter  # the `limits` strategy over our storage


def _retry_after(item, *identifiers: str) -> int:
    reset_at = _counters().get_window_stats(item, *identifiers).reset_time
    return max(1, math.ceil(reset_at - time.time()))


def check_submission(per_minute: int) -> None:
    """Count one submission of this client; 429 past ``per_minute`` (0: no limit)."""
    if not per_minute:
        return
    item = RateLimitItemPerMinute(per_minute)
    if not _counters().hit(item, "submit", client_key()):
        retry = _retry_after(item, "submit", client_key())
        raise ApiError(429, "rate_limited", f"more than {per_minute} submissions a minute; try again in {retry} s",
                       headers={"Retry-After": str(retry)})


def _login_item(max_failures: int, window_s: int):
    return RateLimitItemPerSecond(max_failures, window_s)


def check_login_allowed(max_failures: int, window_s: int) -> None:
    """429 once this address has failed ``max_failures`` logins in the window."""
    item = _login_item(max_failures, window_s)
    if not _counters().test(item, "login-failures", request.remote_addr or "unknown"):
        retry = _retry_after(item, "login-failures", request.remote_addr or "unknown")
        raise ApiError(429, "rate_limited", f"too many failed logins from this address; try again in {retry} s",
                       headers={"Retry-After": str(retry)})


def record_login_failure(max_failures: int, window_s: int) -> None:
    _counters().hit(_login_item(max_failures, window_s), "login-failures", request.remote_addr or "unknown")
