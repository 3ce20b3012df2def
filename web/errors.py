"""Every error a client can cause is JSON ``{"error": {code, message, fields?}}`` on the API
(an HTML page elsewhere) with a 4xx/503 status; a 500 only for real bugs, logged."""
from __future__ import annotations

import redis
from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared.images import ImageError
from shared.store import StoreError

IMAGE_STATUS = {"unsupported_image": 415, "image_too_large": 413, "image_too_complex": 422, "image_too_small": 422}

# Werkzeug's names are fine for most statuses; these read better to API clients.
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              413: "upload_too_large", 415: "unsupported_media_type", 429: "rate_limited"}


# Redis' answers while Sentinel moves the master (web/errors.py ``refused``): the client may retry.
FAILOVER_ERRORS = ("READONLY", "MASTERDOWN", "NOREPLICAS")

MAX_MESSAGE = 2000  # characters: far above any message of ours, far below an echoed upload


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message[:MAX_MESSAGE]
        # A field's name can be the client's (an unknown form field): cut, as values are (params.echo).
        self.fields = {_cut(k, 64): _cut(v, MAX_MESSAGE) for k, v in fields.items()} if fields else fields
        self.headers = headers or {}

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return {"error": error}


def not_found(what: str = "job") -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


def upload_too_large(limit: int | None) -> ApiError:
    message = f"the upload is over the {limit / 1024 / 1024:g} MB limit" if limit else "the upload is too large"
    return ApiError(413, "upload_too_large", message, {"image": message})


def from_image_error(exc: ImageError) -> ApiError:
    return ApiError(IMAGE_STATUS.get(exc.code, 422), exc.code, str(exc), {exc.field: str(exc)})


def from_http(exc: HTTPException) -> ApiError:
    if isinstance(exc, RequestEntityTooLarge):
        return upload_too_large(request.max_content_length)
    headers = {k: v for k, v in exc.get_headers() if k in ("Allow", "WWW-Authenticate", "Retry-After")}
    code = HTTP_CODES.get(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"))
    return ApiError(exc.code or 500, code, exc.description or exc.name, headers=headers)


def _is_job_id(value) -> bool:
    from shared.job import is_job_id

    return isinstance(value, str) and is_job_id(value)  # never echo an arbitrary path segment


def sees_error_detail() -> bool:
    """Whether this request shows a failed job's ``error.detail`` (the operator's: exception text,
    paths, URLs): only to an admin token.  With no tokens set everyone counts as admin (web/auth.py),
    so there no one sees it: a server left open to a network keeps it in the worker's log."""
    return bool(g.get("dreamq_admin")) and g.get("dreamq_owner") is not None


def wants_json() -> bool:
    path = request.path
    # .json: the pages' own JSON routes (for their scripts).
    return path.startswith("/api/") or path.endswith(".json") or path in ("/healthz", "/readyz", "/metrics")


def respond(err: ApiError):
    if wants_json():
        response = jsonify(err.body())
    else:
        response = render_template("error.html", error=err)
    return response, err.status, err.headers


def register(app: Flask) -> None:
    app.register_error_handler(ApiError, respond)
    app.register_error_handler(ImageError, lambda exc: respond(from_image_error(exc)))
    app.register_error_handler(HTTPException, lambda exc: respond(from_http(exc)))

    def unavailable(exc):
        app.logger.warning("redis unavailable: %s", exc)
        return respond(ApiError(503, "redis_unavailable", "the job queue (Redis) is unreachable; try again shortly",
                                headers={"Retry-After": "5"}))

    app.register_error_handler(redis.exceptions.ConnectionError, unavailable)  # MasterNotFoundError too
    app.register_error_handler(redis.exceptions.TimeoutError, unavailable)

    def refused(exc):
        # A Sentinel failover, seen from a server that is no longer (or not yet) the master: READONLY
        # (a demoted master; inside a script, the script's error quotes it), MASTERDOWN (a replica
        # that lost its master), NOREPLICAS (min-replicas-to-write).  A 503, never a 500.
        if isinstance(exc, (redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError)) or any(
                word in str(exc) for word in FAILOVER_ERRORS):
            return unavailable(exc)
        return bug(exc)

    app.register_error_handler(redis.exceptions.ResponseError, refused)

    def store_down(exc):
        app.logger.error("store unavailable: %s", exc)
        return respond(ApiError(503, "store_unavailable", "the image store is unavailable; try again shortly",
                                headers={"Retry-After": "5"}))

    app.register_error_handler(StoreError, store_down)

    def bug(exc):
        # The traceback goes to the log; the client gets the job id (if any) to quote, nothing more.
        job_id = (request.view_args or {}).get("job_id")
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        message = "internal server error (logged)" + (f" for job {job_id}" if _is_job_id(job_id) else "")
        return respond(ApiError(500, "internal_error", message))

    app.register_error_handler(Exception, bug)
