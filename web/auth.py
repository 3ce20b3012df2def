"""Who is asking, and what they may see: tokens, job ownership, failed-login limits,
safe redirects and same-origin POSTs.

With no tokens configured (local use) everyone is admin: every job is visible, as before.
"""
from __future__ import annotations

import hashlib
import hmac
import unicodedata
from urllib.parse import urlsplit

from flask import g, request

from shared.job import Job

from . import limits
from .services import TOKEN_COOKIE, services

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


# -- tokens and owners -----------------------------------------------------------

def tokens_configured() -> bool:
    settings = services().settings
    return bool(settings.api_tokens or settings.admin_tokens)


def token_hash(token: str) -> str:
    # Jobs keep only this: a Redis dump or a backup reveals no credential.
    return hashlib.sha256(b"dreamq-owner\0" + token.encode()).hexdigest()


def _matches(token: str, tokens: list[str]) -> bool:
    token_b = token.encode()
    # Compare against every token, in constant time, so timing reveals nothing.
    return bool(token_b) and any([hmac.compare_digest(token_b, t.encode()) for t in tokens])  # noqa: C419


def bearer_token() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def cookie_token() -> str:
    return request.cookies.get(TOKEN_COOKIE, "").strip()


def authenticate(token: str) -> bool:
    """Is ``token`` good here?  Remembers on ``g`` whose request this is, for ownership checks."""
    settings = services().settings
    if not tokens_configured():
        g.dreamq_owner, g.dreamq_admin = None, True
        return True
    admin = _matches(token, settings.admin_tokens)
    if not admin and not _matches(token, settings.api_tokens):
        return False
    g.dreamq_owner, g.dreamq_admin = token_hash(token), admin
    return True


def is_valid_token(token: str) -> bool:
    settings = services().settings
    return _matches(token.strip(), settings.api_tokens) or _matches(token.strip(), settings.admin_tokens)


def request_owner() -> str | None:
    """The owner to store on a job created by this request (None when no tokens are set)."""
    return g.get("dreamq_owner")


def owner_filter() -> str | None:
    """Whose jobs a listing shows: None means everyone's (an admin, or no tokens set)."""
    if not tokens_configured() or g.get("dreamq_admin"):
        return None
    return g.get("dreamq_owner") or "-"  # "-" matches no job: an unauthenticated caller sees nothing


def can_see(job: Job) -> bool:
    if owner_filter() is None:
        return True
    return job.owner is not None and hmac.compare_digest(job.owner, owner_filter())


# -- failed logins -----------------------------------------------------------------
# Counted by Flask-Limiter in Redis (web/limits.py), so the limit holds across gunicorn processes.

def check_login_allowed() -> None:
    settings = services().settings
    limits.check_login_allowed(settings.login_max_failures, settings.login_window_s)


def record_login_failure() -> None:
    settings = services().settings
    limits.record_login_failure(settings.login_max_failures, settings.login_window_s)


# -- cookies, redirects, cross-site POSTs --------------------------------------------

def cookie_secure() -> bool:
    """Secure unless this is plain HTTP on localhost (where a Secure cookie would never come back)."""
    if request.is_secure:
        return True
    try:
        host = urlsplit("//" + request.host).hostname or ""
    except ValueError:
        return True
    return host not in LOCAL_HOSTS


def safe_next(target: str | None, default: str = "/") -> str:
    """``target`` when it is a path on this site, else ``default``: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    # Browsers drop tabs and newlines ("/\t/evil" becomes "//evil"), and CR/LF would split the header.
    if any(c.isspace() or unicodedata.category(c).startswith("C") for c in target):
        return default
    try:
        parts = urlsplit(target)
    except ValueError:
        return default
    return default if parts.scheme or parts.netloc else target


def same_origin() -> bool:
    """A POST from a page of this site.  Browsers send Sec-Fetch-Site or Origin on every POST; a
    request with neither is no browser's, so no cross-site forgery (the rule of Go's
    CrossOriginProtection)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")  # none: the user's own action (address bar, bookmark)
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin.lower() == request.host_url.rstrip("/").lower()
