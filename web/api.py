"""HTTP API v1 (the contract is in openapi.py) plus /healthz, /readyz and /api/openapi.json."""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import select
import socket
import threading
import time

import kombu.exceptions
import redis
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from shared.images import check_size, declared_pixels, decode_image, encode_png
from shared.job import JOBS, QUEUED_S, SUCCEEDED, Job
from shared.models import DEFAULT_MODEL, MODELS
from shared.params import DreamParams, ParamsError, parse_params
from shared.queue import enqueue
from shared.store import INPUT, PREVIEW, RESULT
from shared.workers import live_workers, model_status, ready_workers

from . import metrics
from .auth import authenticate, bearer_token, can_see, owner_filter, request_owner
from .errors import ApiError, not_found, upload_too_large
from .limits import check_submission, client_key
from .services import services

bp = Blueprint("api", __name__, url_prefix="/api/v1")
ops = Blueprint("ops", __name__)

PARAM_FIELDS = tuple(DreamParams.model_fields)
MAX_LIMIT = 100


@bp.before_request
def require_token():
    if not authenticate(bearer_token()):  # the bearer header only: the pages' cookie is not an API credential
        raise ApiError(401, "unauthorized", "this server requires `Authorization: Bearer <token>`",
                       headers={"WWW-Authenticate": 'Bearer realm="dreamq"'})


# -- helpers shared with the pages ---------------------------------------------

def job_json(job: Job, queue_position: int | None = None) -> dict:
    data = job.public()
    data["queue_position"] = queue_position if job.status == QUEUED_S else None
    base = f"/api/v1/jobs/{job.id}"
    # result and preview are null until they exist, so a client knows when to fetch them.
    data["links"] = {"self": base, "result": f"{base}/result" if job.status == SUCCEEDED else None,
                     "preview": f"{base}/preview" if job.preview_url else None,
                     "cancel": f"{base}/cancel", "events": f"{base}/events"}
    return data


def get_job(job_id: str) -> Job:
    job = services().state.get(job_id)  # None for anything that is not a UUID: never a path
    if job is None or not can_see(job):  # another token's job is as absent as a missing one
        raise not_found()
    return job


def describe(job: Job) -> dict:
    state = services().state
    return job_json(job, state.queue_position(job.id) if job.status == QUEUED_S else None)


def check_caps() -> None:
    """Queue and per-client caps, before the body is read (try_save_new enforces both)."""
    svc = services()
    settings, state = svc.settings, svc.state
    if state.queue_depth() >= settings.max_queued:
        raise queue_full()
    if settings.max_queued_per_client and state.client_queued(client_key()) >= settings.max_queued_per_client:
        raise client_full(settings.max_queued_per_client)


def form_too_large(exc: RequestEntityTooLarge) -> ApiError:
    """Name the limit Werkzeug really hit: it raises the same bare 413 for all three."""
    settings = services().settings
    if request.content_length is not None and request.content_length > settings.max_content_length:
        return upload_too_large(settings.max_content_length)
    frames, tb = [], exc.__traceback__
    while tb is not None:  # the multipart parser's frames that raised tell which check failed
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in frames:
        owner = frame.f_locals.get("self")
        if getattr(owner, "max_parts", None) is not None and getattr(owner, "_parts_decoded", 0) > owner.max_parts:
            message = (f"the form has more than {settings.max_form_parts} parts (fields and files), "
                       "the DREAMQ_MAX_FORM_PARTS limit")
            return ApiError(413, "too_many_form_parts", message, {"form": message})
    for frame in frames:
        size, owner = frame.f_locals.get("field_size"), frame.f_locals.get("self")
        limit = getattr(owner, "max_form_memory_size", None)
        if frame.f_code.co_name == "receive_data" or (size is not None and limit is not None and size > limit):
            message = (f"a text field is over the {settings.max_form_memory_size} byte limit "
                       "(DREAMQ_MAX_FORM_MEMORY_SIZE); the photo goes in the `image` file field")
            return ApiError(413, "form_field_too_large", message, {"form": message})
    return upload_too_large(settings.max_content_length)


# Up to this many pixels (a 1920x1080 photo: ~25 MB to decode at worst) an upload needs no decode slot.
SMALL_IMAGE_PIXELS = 2_100_000


def decode_slots() -> threading.BoundedSemaphore:
    # Per process: one decode of a 40 Mpx image takes up to ~0.5 GB for a second or two.
    slots = current_app.extensions.get("dreamq.decodes")
    if slots is None:
        slots = current_app.extensions.setdefault(
            "dreamq.decodes", threading.BoundedSemaphore(services().settings.max_decodes))
    return slots


def off_loop(fn):
    """Run CPU-bound ``fn`` in a real thread under gevent (Pillow, numpy and zlib release the
    GIL), so one process's event loop keeps answering /healthz during a two-second decode."""
    try:
        from gevent import monkey
    except ImportError:
        return fn()
    if not monkey.is_module_patched("threading"):
        return fn()
    import gevent

    def run():  # an exception is handed back, not raised there: gevent would log a traceback for each bad image
        try:
            return True, fn()
        except Exception as exc:  # noqa: BLE001 — re-raised below, in the request
            return False, exc

    ok, value = gevent.get_hub().threadpool.apply(run)
    if not ok:
        raise value
    return value


def submit_from_request() -> Job:
    """Validate the multipart request, store the normalised input and queue the job."""
    svc = services()
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       "send multipart/form-data: the photo as an `image` file field, parameters as form fields"
                       + (" (JSON bodies are not accepted)" if request.is_json else ""))
    # Everything that can refuse without the body does so before reading it.
    check_submission(svc.settings.rate_limit_per_minute)
    check_caps()
    try:
        form, files = request.form, request.files
    except RequestEntityTooLarge as exc:
        raise form_too_large(exc) from None

    fields: dict[str, str] = {}
    for key in set(form) | set(files):
        if len(form.getlist(key)) + len(files.getlist(key)) > 1:
            fields[key] = "given more than once"
    if "image" in form and "image" not in fields:
        fields["image"] = "must be a file upload, not a text field"
    for key in files:
        if key != "image":
            fields.setdefault(key, "unknown file field; the photo goes in `image`")
    # Blank form fields mean "the default" (an untouched input of the HTML form).
    raw = {k: v for k, v in form.items() if k not in fields and k != "image" and v.strip() != ""}
    params = None
    try:
        params = parse_params(raw)
    except ParamsError as exc:
        fields.update({k: v for k, v in exc.fields.items() if k not in fields})
    upload = files.get("image") if "image" not in fields else None
    data = upload.read() if upload is not None else b""
    # A browser sends an empty, nameless part when no file was chosen: that is a missing image.
    if "image" not in fields and not data and not (upload is not None and upload.filename):
        fields["image"] = "required: attach the photo as a file field named `image`"
    if fields or params is None:
        raise ApiError(422, "invalid_params", "invalid request: " + "; ".join(f"{k}: {v}" for k, v in fields.items()),
                       fields)

    # The filename is ignored: nothing a client names reaches the file system.
    # Bombs are refused from their header; only big images queue for one of the few decode
    # slots, so a normal photo is never stuck behind them.
    big = declared_pixels(data, svc.settings.max_pixels) > SMALL_IMAGE_PIXELS
    slots = decode_slots() if big else None
    if slots is not None and not slots.acquire(timeout=svc.settings.decode_wait_s):
        raise ApiError(503, "busy", "too many large images are being decoded; try again shortly",
                       headers={"Retry-After": "5"})

    def normalise(blob: bytes) -> tuple[bytes, str | None]:
        rgb = decode_image(blob, max_pixels=svc.settings.max_pixels, max_side=params.max_side)
        small = check_size(rgb.shape[0], rgb.shape[1], params)  # a warning when small octaves are skipped
        return encode_png(rgb), small  # the worker decodes this PNG again

    try:
        png, small = off_loop(functools.partial(normalise, data))
    finally:
        if slots is not None:
            slots.release()
    del data

    state = svc.state
    job = state.create(params.model_dump(), warnings=[small] if small else [])
    job.owner = request_owner()
    job.input_url = svc.store.put(job.id, INPUT, png)
    outcome = state.try_save_new(job, max_queued=svc.settings.max_queued, client=client_key(),
                                 max_per_client=svc.settings.max_queued_per_client)
    if outcome != "ok":  # lost the race for the last slots
        svc.store.delete(job.id)
        raise queue_full() if outcome == "queue_full" else client_full(svc.settings.max_queued_per_client)
    try:
        enqueue(svc.celery, job.id, job.dispatch)
    except (redis.RedisError, kombu.exceptions.KombuError, OSError) as exc:
        # No message, no worker will ever take it: undo the record rather than leave it queued forever.
        state.forget(job.id)
        svc.store.delete(job.id)
        current_app.logger.warning("could not queue job %s: %s", job.id, exc)  # the detail stays in the log
        raise ApiError(503, "redis_unavailable", "could not queue the job; try again shortly",
                       headers={"Retry-After": "5"})
    metrics.record_submitted(svc.redis, job.id, params.model)
    return job


def queue_full() -> ApiError:
    return ApiError(503, "queue_full", "the queue is full; try again in a minute", headers={"Retry-After": "60"})


def client_full(limit: int) -> ApiError:
    return ApiError(429, "too_many_queued", f"you already have {limit} queued jobs (DREAMQ_MAX_QUEUED_PER_CLIENT); "
                    "wait for one to start, or cancel one", headers={"Retry-After": "30"})


def encode_cursor(created_at: float) -> str:
    return base64.urlsafe_b64encode(repr(created_at).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> float:
    try:
        value = float(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid_params", "invalid cursor", {"cursor": "not a cursor from next_cursor"}) from None
    if not math.isfinite(value):
        raise ApiError(422, "invalid_params", "invalid cursor", {"cursor": "not a cursor from next_cursor"})
    return value


def list_page(limit_arg: str | None, cursor: str | None) -> tuple[list[Job], str | None]:
    try:
        limit = int(limit_arg) if limit_arg not in (None, "") else 20
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(422, "invalid_params", "invalid limit", {"limit": f"an integer from 1 to {MAX_LIMIT}"})
    before = decode_cursor(cursor) if cursor else None
    state = services().state
    owner = owner_filter()
    if owner is None:
        jobs = state.list(limit, before)
        more = bool(jobs) and state.r.zcount(JOBS, "-inf", f"({jobs[-1].created_at!r}") > 0
    else:
        jobs = owned_jobs(owner, limit + 1, before)  # one more than asked: tells whether a next page exists
        more = len(jobs) > limit
        jobs = jobs[:limit]
    return jobs, encode_cursor(jobs[-1].created_at) if more else None


def owned_jobs(owner: str, count: int, before: float | None) -> list[Job]:
    """Up to ``count`` of ``owner``'s jobs, newest first, walking the shared index in batches."""
    state, found = services().state, []
    while len(found) < count:
        batch = state.list(MAX_LIMIT, before)
        found += [j for j in batch if j.owner == owner]
        if not batch:  # not "shorter than asked": expired records shorten a batch too
            break
        before = batch[-1].created_at
    return found[:count]


def png_response(data: bytes, *, cache: str, filename: str) -> Response:
    response = Response(data, mimetype="image/png")
    response.headers["Cache-Control"] = cache
    disposition = "attachment" if request.args.get("download") else "inline"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    response.set_etag(hashlib.sha256(data).hexdigest()[:32])
    return response.make_conditional(request)


# -- routes --------------------------------------------------------------------

@bp.post("/jobs")
def create_job():
    job = submit_from_request()
    return jsonify(describe(job)), 202, {"Location": f"/api/v1/jobs/{job.id}"}


@bp.get("/jobs")
def list_jobs():
    jobs, next_cursor = list_page(request.args.get("limit"), request.args.get("cursor"))
    return jsonify({"jobs": [describe(j) for j in jobs], "next_cursor": next_cursor})


@bp.get("/jobs/<job_id>")
def show_job(job_id: str):
    return jsonify(describe(get_job(job_id)))


@bp.get("/jobs/<job_id>/result")
def job_result(job_id: str):
    job = get_job(job_id)
    if job.status != SUCCEEDED:
        raise ApiError(409, "not_succeeded", f"the job is {job.status}; its result exists only once it has succeeded")
    data = services().store.get(job.id, RESULT)
    if data is None:
        raise ApiError(404, "not_found", "the result has expired")
    return png_response(data, cache="private, max-age=86400", filename=f"dream-{job.id}.png")


@bp.get("/jobs/<job_id>/preview")
def job_preview(job_id: str):
    job = get_job(job_id)
    data = services().store.get(job.id, PREVIEW)
    if data is None:
        raise ApiError(404, "no_preview", "no preview yet: the first one comes when the first octave is done")
    return png_response(data, cache="no-cache", filename=f"preview-{job.id}.png")


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    job = get_job(job_id)
    outcome = services().state.cancel(job.id)
    if outcome == "missing":
        raise not_found()
    if outcome in ("succeeded", "failed"):
        raise ApiError(409, "job_finished", f"the job has already {outcome}; there is nothing to cancel")
    # canceled (was queued, or already canceled) or running (the worker stops at its next step)
    return jsonify(describe(get_job(job_id))), 202


def client_left(conn) -> bool:
    """Whether the client of an event stream has closed its end: readable with nothing to read (EOF).

    A client sends nothing after its GET, so a readable socket means EOF or a reset."""
    if conn is None:
        return False
    try:
        if not select.select([conn], [], [], 0)[0]:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # reset, or already closed
        return True


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str):
    get_job(job_id)
    svc = services()
    state, max_s = svc.state, svc.settings.events_max_s
    conn = request.environ.get("gunicorn.socket")  # to notice a client that hung up

    def event(name: str, data: dict) -> str:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"

    def stream():
        # Runs after the view returned: use only what was captured above, no request context.
        yield "retry: 2000\n\n"
        deadline = time.monotonic() + max_s
        last, last_sent = None, time.monotonic()
        while True:
            try:
                job = state.get(job_id)
                data = job and job_json(job, state.queue_position(job_id) if job.status == QUEUED_S else None)
            except redis.RedisError:
                yield event("error", {"error": {"code": "redis_unavailable", "message": "lost the job queue"}})
                return
            if job is None:
                yield event("error", {"error": {"code": "not_found", "message": "the job has expired"}})
                return
            if data != last:
                yield event("end" if job.finished else "progress", data)
                last, last_sent = data, time.monotonic()
            if job.finished:
                return
            if time.monotonic() > deadline:
                yield event("timeout", {"message": "stream ended; reconnect for more"})
                return
            if client_left(conn):  # free the stream now, not at the next write that fails
                return
            if time.monotonic() - last_sent > 4:  # keeps proxies from closing an idle stream; a failed write ends it
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            time.sleep(0.25)

    return Response(stream(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@bp.get("/models")
def list_models():
    workers = live_workers(services().redis)
    loaded, bf16 = model_status(workers), model_status(workers, bf16_only=True)
    models = [{"name": m.name, "title": m.title, "default": m.name == DEFAULT_MODEL, "layers": list(m.layers),
               "default_layers": m.default_layers, "step": m.step, "max_loss": m.max_loss, "min_side": m.min_side,
               "presets": m.presets, "loaded": loaded.get(m.name, 0) > 0, "ready_workers": loaded.get(m.name, 0),
               # Workers that run precision=bf16 in bf16; the others run such jobs in fp32.
               "bf16_workers": bf16.get(m.name, 0)}
              for m in MODELS.values()]
    return jsonify({"models": models})


@ops.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@ops.get("/readyz")
def readyz():
    try:
        r = services().redis
        r.ping()
        workers = live_workers(r)
    except (redis.RedisError, ApiError) as exc:
        current_app.logger.warning("readyz: Redis unreachable: %s", exc)  # host and port only in the log
        return jsonify({"status": "unready", "reason": "Redis unreachable"}), 503
    ready = ready_workers(workers)
    if not ready:
        reason = "no worker is ready" + (f" ({len(workers)} still loading models)" if workers else " (none is running)")
        return jsonify({"status": "unready", "reason": reason, "workers": len(workers)}), 503
    return jsonify({"status": "ready", "workers": len(workers), "ready_workers": len(ready)})


@ops.get("/api/openapi.json")
def openapi_json():
    from .openapi import SPEC

    return jsonify(SPEC)
