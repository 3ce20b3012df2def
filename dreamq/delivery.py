"""The webhook delivery process: a small Celery worker on its own queue.

    dreamq webhooks                                          # what `dreamq up` and compose run
    celery -A dreamq.delivery worker -Q dreamq.webhooks      # the same, as a plain Celery worker

Each event of a job is one message (shared/webhooks.py queues it); a thread of this process
POSTs it.  Neither a GPU worker nor a web request waits on a receiver.

One attempt: resolve the host again and check every address (shared/webhooks.check_url), then
connect to the address checked (no second lookup a DNS rebinding could answer), with
DREAMQ_WEBHOOK_TIMEOUT_S to connect and for each read, no redirect followed, and at most
MAX_ANSWER_BYTES of the answer read.  The whole attempt (resolve, connect, TLS, send, read the
answer) ends at DREAMQ_WEBHOOK_ATTEMPT_S: a receiver that sends a byte now and then resets a
per-read timeout, never this deadline.  A 2xx is delivered.  A network error (the deadline
included), 408, 429 or 5xx is tried again after DREAMQ_WEBHOOK_RETRY_BASE_S x 4^(n-1), +-20 %
jitter (10 s, 40 s, 160 s, 640 s, 2560 s: six attempts over about an hour), until
DREAMQ_WEBHOOK_MAX_ATTEMPTS.  Any other answer (a redirect, 4xx) or a refused address fails the
event at once: trying again would not help.

One receiver origin (scheme, host and port) has at most DREAMQ_WEBHOOK_PER_ORIGIN attempts in
flight, across every delivery process: slots are leases in Redis that expire on their own, so a
process that dies holding one frees it after the deadline.  An event whose origin is at its share
does not wait on a thread: its message goes back to the queue for a moment (0.1 s, doubling to
5 s; not an attempt, not recorded), and the threads serve other receivers meanwhile.

Every attempt is recorded on the job (``webhook``: status, attempts, last_status, last_error,
and the last attempts) and counted for /metrics, in one Lua script.  Delivery is at least once:
a receiver drops repeats by ``webhook-id``.

A retry waits as a Celery countdown; with the Redis broker such a message stays unacknowledged
while it waits, so the longest wait is kept under the broker's visibility timeout (otherwise
Redis would hand it out twice).
"""
from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import redis
import urllib3
from celery import Celery

from shared import keys
from shared.settings import Settings, get_settings
from shared.job import FINISHED
from shared.queue import lazy_app, make_celery
from shared.redis_client import connect
from shared.signing import signed_headers
from shared.webhooks import QUEUE, TASK, THROTTLED, WebhookRefused, check_url

log = logging.getLogger("dreamq.webhooks")

MAX_ANSWER_BYTES = 4096  # of a receiver's answer: enough for an error message in the log, no more
HISTORY = 20  # attempts kept on the job record
RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
DEFER_S, DEFER_MAX_S = 0.1, 5.0  # an event whose origin is at its share waits this, doubling, then looks again
# A slot's lease outlives the attempt's deadline by this: the name lookup before the connection
# is not under the deadline (the system resolver bounds it, at 30 s at worst with glibc's defaults).
LEASE_MARGIN_S = 30.0

try:
    from importlib.metadata import version as _version

    USER_AGENT = f"dreamq-webhooks/{_version('dreamq')}"
except Exception:  # noqa: BLE001 — running from a checkout that is not installed
    USER_AGENT = "dreamq-webhooks"


# -- one attempt -------------------------------------------------------------------------

class Outcome:
    """What one attempt got: an HTTP status, or an error; and whether another attempt may help."""

    def __init__(self, status: int | None = None, error: str | None = None, refused: bool = False):
        self.status, self.error, self.refused = status, error, refused

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        if self.refused or self.ok:
            return False
        return self.status is None or self.status in RETRY_STATUSES

    @property
    def kind(self) -> str:
        """The /metrics label: success, http_error, network_error or refused."""
        if self.refused:
            return "refused"
        if self.status is None:
            return "network_error"
        return "success" if self.ok else "http_error"


def post(url: str, body: str, headers: dict[str, str], settings: Settings, resolve=None) -> Outcome:
    """One attempt: check the URL's addresses again, POST to the one checked, read a bounded answer,
    all within DREAMQ_WEBHOOK_ATTEMPT_S."""
    deadline = _Deadline(settings.webhook_attempt_s)
    try:
        return _post(url, body, headers, settings, resolve, deadline)
    finally:
        deadline.stop()  # its timer, also when no connection was made


def _post(url: str, body: str, headers: dict[str, str], settings: Settings, resolve, deadline: _Deadline) -> Outcome:
    try:
        target = check_url(url, allow_private=settings.webhook_allow_private,
                           **({"resolve": resolve} if resolve else {}))
    except WebhookRefused as exc:
        return Outcome(error=str(exc), refused=not exc.temporary)  # a lookup that failed may work later
    if deadline.left() <= 0:  # the lookup took it all
        return Outcome(error=deadline.error)
    address = target.addresses[0]
    timeout = urllib3.Timeout(connect=min(settings.webhook_timeout_s, deadline.left()), read=settings.webhook_timeout_s)
    send_headers = {"Host": target.host_header, "Content-Type": "application/json", "User-Agent": USER_AGENT,
                    **headers}
    if target.username is not None:
        creds = f"{target.username}:{target.password or ''}"
        send_headers.update(urllib3.util.make_headers(basic_auth=creds))
    if target.scheme == "https":
        # The address is the one checked; the name is what TLS verifies (SNI and the certificate).
        pool = _HTTPSPool(address, target.port, timeout=timeout, retries=False, maxsize=1, deadline=deadline,
                          server_hostname=target.host, assert_hostname=target.host)
    else:
        pool = _HTTPPool(address, target.port, timeout=timeout, retries=False, maxsize=1, deadline=deadline)
    try:
        response = pool.urlopen("POST", target.path, body=body.encode(), headers=send_headers, redirect=False,
                                retries=False, preload_content=False, assert_same_host=False)
        try:
            response.read(MAX_ANSWER_BYTES, decode_content=False)  # bounded: a receiver cannot flood us
        except urllib3.exceptions.HTTPError:
            if not deadline.passed:
                raise
            # Cut at the deadline after the status line and headers: the receiver did answer, only
            # the rest of its body was slow; the status stands.
        finally:
            response.release_conn()
        status = response.status
    except urllib3.exceptions.HTTPError as exc:  # connect/read timeout, refused, reset, TLS, the deadline
        return Outcome(error=deadline.error if deadline.passed else _describe(exc))
    finally:
        deadline.stop()  # before the socket closes: the deadline never shuts one that is no longer ours
        pool.close()
    return Outcome(status=status, error=None if 200 <= status < 300 else f"HTTP {status}")


class _Deadline:
    """The end of one attempt.  At it, the attempt's TCP connection is shut down, which ends
    whatever call waits on it: the TLS handshake, the send, the read of the headers or the body.
    (urllib3's timeouts bound each read, and a receiver sending a byte now and then resets them.)

    It shuts down a duplicate of the socket that it holds itself: the shutdown reaches the
    connection, and never a socket that was closed meanwhile and whose number was reused."""

    def __init__(self, seconds: float):
        self.seconds, self.at, self.passed = seconds, time.monotonic() + seconds, False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def error(self) -> str:
        return f"attempt deadline of {self.seconds:g} s passed"

    def left(self) -> float:
        return self.at - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        """The attempt's socket, as soon as it is connected."""
        dup = sock.dup()
        with self._lock:
            if self._sock is not None:
                self._sock.close()
            self._sock = dup
            if self.passed:
                self._shut()

    def _expire(self) -> None:
        with self._lock:
            self.passed = True
            self._shut()

    def _shut(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by the receiver
                pass

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class _Watched:
    """A urllib3 connection that hands its socket to the attempt's deadline once connected."""

    def __init__(self, *args, deadline: _Deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self._deadline.watch(sock)
        return sock


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _describe(exc: Exception) -> str:
    """urllib3's message without its pool's repr: "Read timed out. (read timeout=5)", "[Errno 111] ..."."""
    text = str(getattr(exc, "reason", None) or exc)
    return text.rsplit("): ", 1)[-1][:200]


def retry_delay(attempt: int, settings: Settings) -> float:
    """The wait after failed attempt ``attempt`` (1, 2...): base x 4^(attempt-1), +-20 %, capped."""
    delay = settings.webhook_retry_base_s * 4 ** (attempt - 1) * random.uniform(0.8, 1.2)
    return min(delay, max(1.0, settings.visibility_timeout_s - 60))


# -- recording -----------------------------------------------------------------------------

# KEYS: job hash, attempts counter, deliveries counter.  ARGV: status, http status ('' for none),
# error ('' for none), event, now, attempt, history length, outcome kind, result ('' while retrying).
# Never recreates an expired record (a delivery may outlive its job).  Returns the attempts so far.
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local raw = redis.call('HGET', KEYS[1], 'webhook_delivery')
local d = {}
if raw and raw ~= '' then d = cjson.decode(raw) end
local code = tonumber(ARGV[2])
local err = ARGV[3]
if err == '' then err = cjson.null end
d.attempts = (tonumber(d.attempts) or 0) + 1
d.status = ARGV[1]
d.last_status = code or cjson.null
d.last_error = err
d.last_event = ARGV[4]
d.last_attempt_at = tonumber(ARGV[5])
if ARGV[1] == 'delivered' then d.delivered = (tonumber(d.delivered) or 0) + 1 end
local history = {}
if type(d.history) == 'table' then history = d.history end
table.insert(history, {event = ARGV[4], attempt = tonumber(ARGV[6]), status = code or cjson.null,
                       error = err, at = tonumber(ARGV[5])})
while #history > tonumber(ARGV[7]) do table.remove(history, 1) end
d.history = history
redis.call('HSET', KEYS[1], 'webhook_delivery', cjson.encode(d))
redis.call('HINCRBY', KEYS[2], ARGV[8], 1)
if ARGV[9] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[9], 1) end
return d.attempts
"""


def record(r: redis.Redis, job_id: str, event: str, attempt: int, outcome: Outcome, status: str) -> int:
    """Record one attempt on the job and in the counters; ``status``: delivered, retrying or failed."""
    result = status if status in ("delivered", "failed") else ""
    return int(r.eval(_RECORD, 3, keys.job(job_id), keys.WEBHOOK_ATTEMPTS, keys.WEBHOOK_DELIVERIES,
                      status, "" if outcome.status is None else outcome.status, outcome.error or "", event,
                      time.time(), attempt, HISTORY, outcome.kind, result))


# -- one origin's share of the threads ---------------------------------------------------

# KEYS: the origin's slots (a sorted set: token -> when its lease ends, ms, Redis's clock).
# ARGV: token, slots per origin, lease ms.  Expired leases (a process that died) are dropped
# first.  Returns 1 if the slot is taken, 0 if the origin is at its share.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


def origin(url: str) -> str | None:
    """``scheme://host:port`` of a webhook URL, the unit of a receiver's share; None if it is no URL."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def take_slot(r: redis.Redis, url: str, settings: Settings) -> tuple[bool, tuple[str, str] | None]:
    """(may the attempt run now, the slot to give back after it: (key, token), or None)."""
    where = origin(url)
    if settings.webhook_per_origin == 0 or where is None:
        return True, None
    key, token = keys.webhook_origin(where), uuid.uuid4().hex
    lease_ms = int((settings.webhook_attempt_s + LEASE_MARGIN_S) * 1000)
    try:
        taken = r.eval(_TAKE, 1, key, token, settings.webhook_per_origin, lease_ms)
    except redis.RedisError as exc:  # the share needs Redis; a delivery does not: send it
        log.warning("webhook origin %s: could not take a slot, sending anyway: %s", where, exc)
        return True, None
    return bool(taken), (key, token) if taken else None


def give_slot(r: redis.Redis, slot: tuple[str, str] | None) -> None:
    if slot is None:
        return
    key, token = slot
    try:
        r.zrem(key, token)
    except redis.RedisError as exc:  # the lease expires on its own
        log.warning("could not give back webhook slot %s: %s", key, exc)


# -- the process ---------------------------------------------------------------------------

def deliver(task, job_id: str, event: str, msg_id: str, url: str, body: str, deferred: int = 0) -> str:
    """The task: one attempt at one event; schedules the next attempt when another may help.

    ``deferred``: how many times this attempt found its origin at its share (not attempts)."""
    app = task.app
    settings: Settings = app.dreamq_settings
    attempt = task.request.retries + 1
    if event in THROTTLED and attempt == 1 and _finished(app.dreamq_redis, job_id):
        # A progress or preview that arrives after the end says less than `completed`, and would
        # reach the receiver after it: not sent.
        return "skipped"
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    if secret is None:  # the submit checked; a delivery process without the secret cannot sign
        outcome = Outcome(error="DREAMQ_WEBHOOK_SECRET is not set in the delivery process", refused=True)
    else:
        may, slot = take_slot(app.dreamq_redis, url, settings)
        if not may:
            # Not on a thread: waiting here would hold one of the threads that other receivers need.
            # The same message (same attempt number) comes back after the countdown.
            countdown = min(DEFER_MAX_S, DEFER_S * 2 ** deferred) * random.uniform(0.8, 1.2)
            if deferred == 0:
                log.info("job %s: webhook %s (%s) waits: %s has %d attempts in flight", job_id, event, msg_id,
                         origin(url), settings.webhook_per_origin)
            task.signature_from_request(kwargs={"deferred": deferred + 1}, countdown=countdown).apply_async()
            return "deferred"
        try:
            # Dreamq-Event: which event this is (the body is the job, as the API shows it).
            headers = {**signed_headers(secret, msg_id, body), "Dreamq-Event": event}
            outcome = post(url, body, headers, settings)
        finally:
            give_slot(app.dreamq_redis, slot)
    again = outcome.retryable and attempt < settings.webhook_max_attempts
    status = "delivered" if outcome.ok else ("retrying" if again else "failed")
    try:
        record(app.dreamq_redis, job_id, event, attempt, outcome, status)
    except redis.RedisError as exc:  # the delivery happened (or not) all the same
        log.warning("job %s: could not record webhook attempt %d: %s", job_id, attempt, exc)
    log.info("job %s: webhook %s (%s) attempt %d: %s%s", job_id, event, msg_id, attempt,
             outcome.status or outcome.error, "; trying again" if again else "")
    if again:
        # kwargs={}: the next attempt waits for a slot afresh (``deferred`` from 0).
        raise task.retry(kwargs={}, countdown=retry_delay(attempt, settings), max_retries=None)
    return status


def _finished(r: redis.Redis, job_id: str) -> bool:
    try:
        status = r.hget(keys.job(job_id), "status")
    except redis.RedisError:
        return False  # send it: a stale progress is better than a lost one
    return status is None or status.decode() in FINISHED


def create_app(settings: Settings | None = None) -> Celery:
    """The delivery process's Celery app: the shared configuration, on its own queue, with threads."""
    settings = settings or get_settings()
    app = make_celery(settings)
    app.conf.update(
        task_default_queue=QUEUE,
        worker_concurrency=settings.webhook_concurrency,  # threads: a delivery mostly waits on the network
        # The thread pool has no time limits; an attempt is bounded by its own deadline.
        task_time_limit=None,
        task_soft_time_limit=None,
        worker_prefetch_multiplier=4,
    )
    app.dreamq_settings = settings
    app.dreamq_redis = connect(settings, socket_timeout=5, socket_connect_timeout=5)  # the sentinels' master, or the URL's
    from shared import hooks

    hooks.install(settings)  # as in every process of ours: DREAMQ_PLUGINS see the same lifecycle
    app.task(name=TASK, bind=True, acks_late=True, ignore_result=True)(deliver)
    return app


# `celery -A dreamq.delivery` finds ``app`` here, built on first use.
__getattr__ = lazy_app(__name__, create_app)
