"""For integrators: idempotent submits (``Idempotency-Key``) and synchronous answers (``Prefer: wait``)
on ``POST /api/v1/jobs``.

Idempotency-Key follows the IETF httpapi draft (draft-ietf-httpapi-idempotency-key-header): the
first request with a key creates the job and remembers, as long as the job is kept (DREAMQ_JOB_TTL_S), (the caller's key) -> (job id, the
request's fingerprint).  A retry with the same key and the same request gets the same job, as it is
now; the same key with another request is 422 ``idempotency_key_reused``; one that arrives while the
first is still being processed is 409 ``idempotency_key_in_use``.  A refused request stores nothing,
so a retry of it may succeed.  Keys are scoped to the caller: the owner hash of its token, or its
address when the server has no tokens.

The fingerprint is SHA-256 of the parsed form: the text fields and the bytes of each file (streamed
from Werkzeug's spooled upload, not read again into memory), not the raw body, so that a client
library that picks a new multipart boundary (or filename) on each retry still matches.

Prefer: wait[=N] (RFC 7240, as Replicate's API): hold the answer until the job finishes or N seconds
pass (default and cap WAIT_MAX_S), following the record in the event stream's loop (web/watch.py);
under the gevent worker its sleep yields, so no thread is held.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable

import redis
from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from shared import keys
from shared.job import Job

from .auth import request_owner
from .errors import ApiError
from .forms import form_too_large
from .limits import check_submission, client_key
from .services import services
from .watch import watch

HEADER = "Idempotency-Key"
IDEMPOTENCY_TTL_S = 24 * 3600  # the least a key is remembered (as the draft suggests); else as long as its job
LOCK_TTL_S = 120  # a first request in flight holds its key at most this long (decode waits included)
MAX_KEY_LENGTH = 255
KEY_RE = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")  # printable ASCII

WAIT_MAX_S = 60  # Prefer: wait's default and cap
HASH_CHUNK = 256 * 1024

# Deletes the lock only if it is still this request's (its TTL may have run out and another taken it).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


# -- Idempotency-Key -------------------------------------------------------------------

def invalid_key(why: str) -> ApiError:
    message = f"invalid `{HEADER}` header: {why}"
    return ApiError(400, "invalid_idempotency_key", message, {HEADER: why})


def idempotency_key() -> str | None:
    """The request's Idempotency-Key (an sf-string's quotes removed), None without the header; 400 if invalid."""
    if HEADER not in request.headers:
        return None
    value = request.headers.get(HEADER, "").strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':  # the draft's sf-string form: "key"
        value = value[1:-1]
    if not value:
        raise invalid_key("empty; send a unique value (a UUID, say) of 1 to 255 printable ASCII characters")
    if len(value) > MAX_KEY_LENGTH:
        raise invalid_key(f"{len(value)} characters; at most {MAX_KEY_LENGTH}")
    if not KEY_RE.fullmatch(value):
        raise invalid_key("only printable ASCII characters are allowed")
    return value


def scope_digest(key: str) -> str:
    """The key as stored: scoped to the caller (its owner hash, or its address with no tokens), hashed."""
    owner = request_owner()
    scope = f"owner:{owner}" if owner else f"addr:{client_key()}"
    return hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()


def fingerprint() -> str:
    """SHA-256 of what makes the request's job: its media type, its text fields and its files' bytes.

    Reads the form through Werkzeug (once: it is cached), so MAX_CONTENT_LENGTH and the form limits
    apply; each file is hashed in chunks from its spooled stream, then rewound."""
    h = hashlib.sha256(b"dreamq-submit-v1\0" + request.mimetype.encode() + b"\0")
    if request.mimetype != "multipart/form-data":
        return h.hexdigest()  # never stored: such a request is refused (415)
    try:
        form, files = request.form, request.files
    except RequestEntityTooLarge as exc:
        raise form_too_large(exc) from None
    for name, value in sorted(form.items(multi=True)):
        h.update(json.dumps(["field", name, value]).encode() + b"\0")
    for name, upload in sorted(files.items(multi=True), key=lambda item: item[0]):
        content = hashlib.sha256()
        stream = upload.stream
        stream.seek(0)
        while chunk := stream.read(HASH_CHUNK):
            content.update(chunk)
        stream.seek(0)
        h.update(json.dumps(["file", name, content.hexdigest()]).encode() + b"\0")
    return h.hexdigest()


def _stored(r: redis.Redis, digest: str) -> dict | None:
    raw = r.get(keys.idempotency(digest, "job"))
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _replay(record: dict) -> Job | None:
    """The stored job, as it is now, if this request is the same as the first; 422 if not.
    None when the job itself is gone (its record expired): the request is then a first one."""
    if record.get("fingerprint") != fingerprint():
        raise ApiError(422, "idempotency_key_reused",
                       f"this `{HEADER}` was used for a different request (other fields or files); "
                       "use a new key for a new request", {HEADER: "already used for a different request"})
    return services().state.get(record.get("job", ""))


def submit_once(key: str, submit: Callable[[], Job]) -> tuple[Job, bool]:
    """(the job, whether it was replayed): ``submit()``'s new job, or the one this key already made."""
    svc = services()
    r = svc.redis
    digest = scope_digest(key)
    record_key, lock_key = keys.idempotency(digest, "job"), keys.idempotency(digest, "lock")
    record = _stored(r, digest)
    if record is not None:
        # A replay creates nothing, but it is still a submission to the rate limit, counted before the body is read.
        check_submission(svc.settings.rate_limit_per_minute)
        job = _replay(record)
        if job is not None:
            return job, True
    token = uuid.uuid4().hex
    if not r.set(lock_key, token, nx=True, ex=LOCK_TTL_S):
        record = _stored(r, digest)  # the first may have finished meanwhile
        if record is None:
            raise ApiError(409, "idempotency_key_in_use",
                           f"a request with this `{HEADER}` is still being processed; retry once it has "
                           "been answered", {HEADER: "in use by a request in progress"},
                           headers={"Retry-After": "1"})
        check_submission(svc.settings.rate_limit_per_minute)
        job = _replay(record)
        if job is not None:
            return job, True
        raise ApiError(409, "idempotency_key_in_use", f"a request with this `{HEADER}` is still being processed",
                       {HEADER: "in use by a request in progress"}, headers={"Retry-After": "1"})
    try:
        record = _stored(r, digest)  # stored between our first look and taking the lock
        if record is not None:
            check_submission(svc.settings.rate_limit_per_minute)
            job = _replay(record)
            if job is not None:
                return job, True
        job = submit()  # refused (4xx/5xx): nothing is stored, the key stays free
        record = {"job": job.id, "fingerprint": fingerprint(), "created_at": time.time()}
        # Kept as long as the job (and at least the draft's 24 h): the key expires with the job.
        r.set(record_key, json.dumps(record), ex=max(IDEMPOTENCY_TTL_S, svc.settings.job_ttl_s))
        return job, False
    finally:
        try:
            r.eval(_RELEASE, 1, lock_key, token)
        except redis.RedisError:  # it expires by itself
            pass


# -- Prefer: wait ----------------------------------------------------------------------

def prefer_wait() -> int | None:
    """Seconds from ``Prefer: wait`` or ``wait=N`` (RFC 7240), capped at WAIT_MAX_S; None without it.
    A preference that does not parse is ignored, as RFC 7240 asks."""
    seconds = None
    for header in request.headers.getlist("Prefer"):
        for preference in header.split(","):
            token = preference.split(";", 1)[0].strip()
            name, eq, value = token.partition("=")
            if name.strip().lower() != "wait":
                continue
            value = value.strip().strip('"')
            if not eq:
                seconds = WAIT_MAX_S
            elif value.isascii() and value.isdigit():
                seconds = min(int(value), WAIT_MAX_S)
            if seconds is not None:
                return seconds
    return seconds


def wait_for(job: Job, seconds: float, left: Callable[[], bool] = lambda: False) -> Job:
    """The job once finished, or as it is after ``seconds`` (or when the client hangs up, or Redis fails)."""
    for seen in watch(services().state, job.id, seconds, left, job=job):
        if isinstance(seen, Job):  # Redis failing or the record expiring ends it: the job is answered as known
            job = seen
    return job
