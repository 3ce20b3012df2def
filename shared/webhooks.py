"""Webhooks: which URLs a job may name, which events it gets, how each delivery is signed,
and the lifecycle subscriber that queues a delivery for each event.

The names are Replicate's, so that clients port easily: a submit names ``webhook`` (an
http or https URL) and ``webhook_events_filter``, any of

    start       the job started on a worker
    progress    its progress changed (at most one per DREAMQ_WEBHOOK_PROGRESS_INTERVAL_S)
    output      a new preview, or a video's new frame (throttled the same way)
    completed   it ended: succeeded, failed or canceled (the default filter)

The body of every delivery is the job JSON, as ``GET /api/v1/jobs/{id}`` shows it at the
event.  Deliveries are signed with the Standard Webhooks scheme (https://www.standardwebhooks.com):
``webhook-id`` (the same on every attempt of one event: a receiver drops repeats by it),
``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>``,
keyed by DREAMQ_WEBHOOK_SECRET; a receiver verifies with ``standardwebhooks.Webhook(secret).verify``.

SSRF: the host is resolved when the job is submitted and again before each attempt
(dreamq/delivery.py), and every address it resolves to must be public: loopback, private,
link-local (169.254.169.254, cloud metadata), shared, multicast, reserved and unspecified
addresses are refused, in IPv4 and IPv6 and in the IPv4 forms IPv6 can carry (mapped, 6to4,
Teredo, NAT64).  The resolver (glibc's ``inet_aton``) reads ``2130706433``, ``0x7f.1`` and
``0177.0.0.1`` as 127.0.0.1, so those spellings are checked as the address they reach.  A
delivery connects to the address it checked, never resolving again in between.
DREAMQ_WEBHOOK_ALLOW_PRIVATE=1 lifts the address check (local setups, tests).

Nothing here runs a delivery: the subscriber only sends a message to the delivery process's
queue, so that neither a GPU worker nor a web request ever waits on a receiver.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import keys
from .job import QUEUED, dumps, job_json
from .jobs import job_finished, job_output, job_progress, job_started


log = logging.getLogger(__name__)

EVENTS = ("start", "progress", "output", "completed")
DEFAULT_EVENTS = ("completed",)
THROTTLED = ("progress", "output")
MAX_URL_LENGTH = 2048

Resolver = Callable[[str, int], list[str]]  # (host, port) -> the addresses it resolves to


class WebhookRefused(ValueError):
    """A webhook URL or events filter that a submit may not name; the message says why.

    ``temporary``: the host did not resolve, which a later attempt may see otherwise."""

    def __init__(self, message: str, temporary: bool = False):
        super().__init__(message)
        self.temporary = temporary


# -- which URLs ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A checked webhook URL: where to connect (``addresses``) and what to send as Host and path."""

    url: str
    scheme: str
    host: str  # as in the URL (for Host, SNI and the certificate), IPv6 without brackets
    port: int
    path: str  # path and query
    addresses: tuple[str, ...]  # what the host resolved to, every one allowed; connect to these only
    username: str | None = None
    password: str | None = None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: mapped, 6to4, Teredo, NAT64 (64:ff9b::/96)."""
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def address_refusal(address: str) -> str | None:
    """Why a connection to ``address`` is refused (loopback, private...), or None for a public one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone ("fe80::1%eth0") is link-local anyway
    except ValueError:
        return "not an IP address"
    # The IPv4 address an IPv6 one carries first: it is where a mapped address really goes.
    for candidate in [*(_embedded_ipv4(ip) if ip.version == 6 else []), ip]:
        for flag in ("loopback", "link_local", "unspecified", "multicast", "reserved", "private"):
            if getattr(candidate, f"is_{flag}"):
                return flag.replace("_", "-")
        if not candidate.is_global:  # 100.64.0.0/10 (shared), documentation ranges...
            return "non-public"
    return None


def check_url(url: str, *, allow_private: bool = False, resolve: Resolver = system_resolver) -> Target:
    """Parse and resolve a webhook URL; WebhookRefused says why a submit may not name it."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookRefused("an http or https URL")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookRefused(f"at most {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise WebhookRefused("a URL has no spaces or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookRefused(f"only http and https URLs, not {parts.scheme + ':' if parts.scheme else 'a relative URL'}")
    host = parts.hostname
    if not host:
        raise WebhookRefused("the URL has no host")
    if parts.fragment:
        raise WebhookRefused("a webhook URL has no #fragment")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:  # socket.gaierror: no such host; an IDN the codec refuses
        raise WebhookRefused(f"the host {host!r} does not resolve ({getattr(exc, 'strerror', None) or exc})",
                             temporary=True) from None
    if not addresses:
        raise WebhookRefused(f"the host {host!r} does not resolve", temporary=True)
    if not allow_private:
        for address in addresses:
            why = address_refusal(address)
            if why:
                article = "an" if why[0] in "aeiou" else "a"
                raise WebhookRefused(f"the host {host!r} resolves to {address}, {article} {why} address; webhooks go to "
                                     "public addresses only (DREAMQ_WEBHOOK_ALLOW_PRIVATE=1 allows others)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url=url, scheme=parts.scheme, host=host, port=port, path=path, addresses=tuple(addresses),
                  username=parts.username, password=parts.password)


def parse_events(raw: str | list[str] | None) -> list[str]:
    """``webhook_events_filter``: comma-separated names (a form field), or a list; default completed."""
    if raw is None:
        return list(DEFAULT_EVENTS)
    names = raw.split(",") if isinstance(raw, str) else list(raw)
    names = [n.strip() for n in names if isinstance(n, str) and n.strip()]
    unknown = [n for n in names if n not in EVENTS]
    if unknown or not names:
        raise WebhookRefused(f"any of {', '.join(EVENTS)}, comma-separated"
                             + (f" (not {', '.join(repr(n) for n in unknown[:3])})" if unknown else ""))
    return [e for e in EVENTS if e in names]  # in lifecycle order, once each


# -- queuing a delivery for each event ---------------------------------------------------

# The delivery process's own Celery queue and task (dreamq/delivery.py).
QUEUE = "dreamq.webhooks"
TASK = "dreamq.webhook"


def notify(jobs, job_id: str, event: str, throttle_s: float = 0.0) -> bool:
    """Queue the delivery of ``event`` if the job has a webhook that wants it; True if queued.

    The body is the job as it is now (the event's moment); the delivery process signs and sends
    it.  A throttled event (progress, output) is queued at most once per ``throttle_s`` per job,
    across processes (a Redis key with that expiry)."""
    r = jobs.r
    raw = r.hget(keys.job(job_id), "webhook")
    if not raw:
        return False
    hook = json.loads(raw)
    if event not in hook.get("events_filter", DEFAULT_EVENTS):
        return False
    if throttle_s > 0 and not r.set(keys.webhook_throttle(job_id, event), 1, nx=True, px=int(throttle_s * 1000)):
        return False
    job = jobs.get(job_id)
    if job is None or jobs.celery is None:
        return False
    body = dumps(job_json(job, jobs.queue_position(job) if job.status == QUEUED else None))
    # By name: the delivery process (dreamq/delivery.py) runs the task; no process here imports it.
    jobs.celery.send_task(TASK, args=[job_id, event, f"msg_{uuid.uuid4().hex}", hook["url"], body], queue=QUEUE)
    return True


def _subscriber(event: str, throttled: bool = False):
    def receive(jobs, job_id, **_):
        # A failed notification must never undo or stop the transition that caused it.
        try:
            throttle = 0.0
            if throttled:
                from .settings import get_settings

                throttle = get_settings().webhook_progress_interval_s
            notify(jobs, job_id, event, throttle)
        except Exception:  # noqa: BLE001 — Redis or the broker unreachable: logged, the job goes on
            log.exception("job %s: could not queue its %s webhook", job_id, event)

    receive.__name__ = f"on_{event}"
    return receive


# What shared/hooks.py subscribes, one per event.
on_start = _subscriber("start")
on_progress = _subscriber("progress", throttled=True)
on_output = _subscriber("output", throttled=True)
on_completed = _subscriber("completed")
