"""How every process of ours reaches Redis: one server, or the master that Redis Sentinel names.

``connect(settings)`` is the one place a redis-py client is made (web, workers, webhook
delivery, the CLI's checks).  With DREAMQ_REDIS_SENTINELS it is ``Sentinel.master_for``: each new
connection asks the sentinels for the current master, and a connection to a master that died or
was demoted fails (ConnectionError; a demoted one's READONLY becomes one too), so the next try
finds the promoted replica.  Without it, DREAMQ_REDIS_URL, else the embedded Redis of a
`dreamq up` in the data directory.  The same choice in the forms Celery takes (kombu's
``sentinel://`` transport: ``celery_broker``) is here too, so the broker and the records always
name the same servers.  Nothing here connects: a process starts while Redis is down.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from redis.sentinel import Sentinel, SentinelManagedConnection

DEFAULT_SENTINEL_PORT = 26379
# Timeouts of the connections to the sentinels themselves: a dead sentinel is skipped quickly.
SENTINEL_SOCKET_TIMEOUT_S = 1.0


def redis_url_for(settings) -> str | None:
    """DREAMQ_REDIS_URL, else the embedded Redis of `dreamq up` (it writes its port in the data dir)."""
    if settings.redis_url:
        return settings.redis_url
    port_file = settings.data_dir / "redis" / "port"
    if port_file.is_file():
        return f"redis://127.0.0.1:{port_file.read_text().strip()}/0"
    return None


def sentinel_addresses(settings) -> list[tuple[str, int]]:
    """DREAMQ_REDIS_SENTINELS as (host, port) pairs; ``[::1]:26379`` for an IPv6 address."""
    out = []
    for entry in settings.redis_sentinels:
        host, sep, port = entry.rpartition(":")
        if not sep or host.count(":") and not host.startswith("["):  # no port, or a bare IPv6 address
            host, port = entry, str(DEFAULT_SENTINEL_PORT)
        out.append((host.strip("[]"), int(port)))
    return out


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


def _sentinel_kwargs(settings) -> dict[str, Any]:
    """How to talk to the sentinels themselves (not to the servers they name)."""
    kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_SOCKET_TIMEOUT_S,
                              "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT_S}
    if settings.redis_sentinel_password is not None:
        kwargs["password"] = _secret(settings.redis_sentinel_password)
    return kwargs


class FollowingConnection(SentinelManagedConnection):
    """redis-py's SentinelManagedConnection, asking the sentinels again on every reconnect.

    redis-py asks them only when the pool hands out a connection (``connect``); a command that
    fails and is retried (the ``retry=`` of our clients) reconnects the same connection through
    ``connect_check_health``, to the address it had, retrying the socket there too: a worker's
    write made as the master died tried the dead master for all its retries (20 s), then failed
    the job.  Here each reconnect asks the sentinels first and tries that address once; the
    command's own retry (with its backoff) asks again.  MasterNotFoundError, while the sentinels
    elect a new master, is a ConnectionError: retried too.
    """

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True):
        if self._sock:
            return
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super().connect_check_health(check_health=check_health, retry_socket_connect=False)


class NoRedis(RuntimeError):
    """Neither DREAMQ_REDIS_SENTINELS nor DREAMQ_REDIS_URL, and no `dreamq up` Redis in the data dir."""


def _server_url(settings) -> str:
    url = redis_url_for(settings)
    if not url:
        raise NoRedis(f"DREAMQ_REDIS_URL is not set and no `dreamq up` Redis is in {settings.data_dir} "
                      "(DREAMQ_DATA_DIR): run `dreamq up`, or set DREAMQ_REDIS_URL (a server) or "
                      "DREAMQ_REDIS_SENTINELS")
    return url


def connect(settings, **kwargs) -> redis.Redis:
    """A redis-py client of the Redis the settings name; ``kwargs`` go to each connection
    (``socket_timeout``, ``retry``, ``health_check_interval``...).  Sentinels first; then
    DREAMQ_REDIS_URL; then the embedded Redis of `dreamq up`; else NoRedis."""
    if settings.redis_sentinels:
        if settings.redis_password is not None:
            kwargs.setdefault("password", _secret(settings.redis_password))
        sentinel = Sentinel(sentinel_addresses(settings), sentinel_kwargs=_sentinel_kwargs(settings))
        return sentinel.master_for(settings.redis_master, connection_class=FollowingConnection, **kwargs)
    return redis.Redis.from_url(_server_url(settings), **kwargs)


# -- Celery (kombu) -------------------------------------------------------------------------------

def celery_broker(settings) -> tuple[str, dict[str, Any]]:
    """The broker URL and the transport options that go with it.

    Under Sentinel: ``sentinel://[:password@]h1:p1/0;sentinel://h2:p2/0`` (kombu's SentinelChannel
    asks each in turn) and ``master_name``, ``sentinel_kwargs``; the password in the URL is the
    Redis servers' (kombu passes it to the master's connections), the sentinels' goes in
    ``sentinel_kwargs``.  Else the server's URL and no options.
    """
    if not settings.redis_sentinels:
        return _server_url(settings), {}
    auth = ""
    if settings.redis_password is not None:
        auth = ":" + quote(_secret(settings.redis_password), safe="") + "@"
    url = ";".join(f"sentinel://{auth}{f'[{h}]' if ':' in h else h}:{p}/0" for h, p in sentinel_addresses(settings))
    return url, {"master_name": settings.redis_master, "sentinel_kwargs": _sentinel_kwargs(settings)}


# -- for people ------------------------------------------------------------------------------------

def redact_url(url: str) -> str:
    """The URL with its password as `**` (as Celery's banner shows it): safe for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{user}:**@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def describe(settings) -> str:
    """Which Redis, for a log line or a banner; never a password."""
    if settings.redis_sentinels:
        return f"the master {settings.redis_master!r} of sentinels {','.join(settings.redis_sentinels)}"
    url = redis_url_for(settings)
    return redact_url(url) if url else "no Redis"
