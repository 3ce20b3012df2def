"""HTTP API v1 (the contract is in openapi.py) plus /healthz, /readyz and /api/openapi.json."""
from __future__ import annotations

import base64
import functools
import hashlib
import math
import mimetypes
import posixpath
import re
import select
import socket
import threading
import time

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestedRangeNotSatisfiable, RequestEntityTooLarge
from werkzeug.wsgi import FileWrapper

from shared import cache as result_cache
from shared import webhooks
from shared.images import ImageError, check_size, declared_pixels, decode_image, encode_png
from shared.job import QUEUED, SUCCEEDED, Job, dumps, frames_done, has_frames, job_json
from shared.jobs import SubmitRefused
from shared.kinds import DEFAULT_KIND, KINDS
from shared.models import DEFAULT_MODEL, MODELS
from shared.params import DreamParams, ParamsError, echo
from shared.store import StoreError
from shared.workers import live_workers, model_status, ready_workers

from .auth import authenticate, bearer_token, can_see, owner_filter, request_owner
from .errors import ApiError, not_found
from .forms import form_too_large
from .integrations import idempotency_key, prefer_wait, submit_once, wait_for
from .limits import check_submission, client_key
from .services import services

bp = Blueprint("api", __name__, url_prefix="/api/v1")
ops = Blueprint("ops", __name__)

# The upload's file fields: the photo, and an optional guide image (kinds whose files have a "guide" role).
FILE_FIELDS = ("image", "guide")
# Every parameter of every kind, DreamParams' first: the form's fields (the pages show them again on an error).
PARAM_FIELDS = tuple(dict.fromkeys([*DreamParams.model_fields,
                                    *(name for k in KINDS.values() for name in k.params.model_fields)]))
FORM_FIELDS = ("kind", *PARAM_FIELDS)
MAX_LIMIT = 100
STREAM_CHUNK = 256 * 1024  # bytes per read when a result is streamed from the store


@bp.before_request
def require_token():
    if not authenticate(bearer_token()):  # the bearer header only: the pages' cookie is not an API credential
        raise ApiError(401, "unauthorized", "this server requires `Authorization: Bearer <token>`",
                       headers={"WWW-Authenticate": 'Bearer realm="dreamq"'})


# -- helpers shared with the pages: what a kind declares, read with fallbacks ----------

def result_name(kind, params: dict) -> str:
    """The result's name in the job's store folder (a video's depends on its format)."""
    name = getattr(kind, "result_name", None)
    return name(params) if callable(name) else kind.file("result")


def result_media_type(kind, params: dict) -> str:
    media_type = getattr(kind, "result_media_type", None)
    return media_type(params) if callable(media_type) else kind.media_type


def frame_name(kind, n: int) -> str:
    """The store name of frame ``n`` (from 0) of the kind's numbered "frame" series."""
    return kind.file("frame", n)


def get_job(job_id: str) -> Job:
    job = services().state.get(job_id)  # None for anything that is not a UUID: never a path
    if job is None or not can_see(job):  # another token's job is as absent as a missing one
        raise not_found()
    return job


def public_job(job: Job) -> dict:
    state = services().state
    return job_json(job, state.queue_position(job.id) if job.status == QUEUED else None)


def check_caps() -> None:
    """Queue and per-client caps, before the body is read (try_save_new enforces both)."""
    svc = services()
    settings, state = svc.settings, svc.state
    if state.queue_depth() >= settings.max_queued:
        raise queue_full()
    if settings.max_queued_per_client and state.client_queued(client_key()) >= settings.max_queued_per_client:
        raise client_full(settings.max_queued_per_client)


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


def give_back_memory() -> None:
    """Return the heap a big decode freed to the system (glibc keeps it, per thread arena, for
    reuse): without it a process stays at ~400 MB after one wave of 40 Mpx uploads, and only
    request-count recycling, which starved the service, gave it back (docs/RELIABILITY.md)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


@functools.cache
def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None


def submit_from_request() -> Job:
    """Validate the multipart request, store the normalised input (and guide) and queue the job."""
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
    for key in FILE_FIELDS:
        if key in form and key not in fields:
            fields[key] = "must be a file upload, not a text field"
    for key in files:
        if key not in FILE_FIELDS:
            fields.setdefault(key, "unknown file field; the photo goes in `image` (and a guide image in `guide`)")
    # Blank form fields mean "the default" (an untouched input of the HTML form).
    raw = {k: v for k, v in form.items() if k not in fields and k not in FILE_FIELDS and v.strip() != ""}
    use_cache = True  # `cache`: a request option, never a dream parameter (shared/cache.py)
    if "cache" in raw:
        flag = raw.pop("cache").strip().lower()
        if flag in ("false", "0", "no", "off"):
            use_cache = False
        elif flag not in ("true", "1", "yes", "on"):
            fields["cache"] = "true or false"
    webhook = submitted_webhook(raw, fields)  # request options too: where the job's events go
    kind = KINDS.get(raw.pop("kind", DEFAULT_KIND))
    if kind is None:
        fields["kind"] = f"one of {', '.join(KINDS)}"
        kind = KINDS[DEFAULT_KIND]  # to name the other fields' problems too
    params = None
    try:
        params = kind.parse(raw)
    except ParamsError as exc:
        fields.update({k: v for k, v in exc.fields.items() if k not in fields})
    upload = files.get("image") if "image" not in fields else None
    data = upload.read() if upload is not None else b""
    # A browser sends an empty, nameless part when no file was chosen: that is a missing image
    # (and, for the optional guide, no guide).
    if "image" not in fields and not data and not (upload is not None and upload.filename):
        fields["image"] = "required: attach the photo as a file field named `image`"
    guide_upload = files.get("guide") if "guide" not in fields else None
    guide = guide_upload.read() if guide_upload is not None else b""
    has_guide = bool(guide) or bool(guide_upload is not None and guide_upload.filename)
    if has_guide and "guide" not in kind.files:
        fields["guide"] = f"a {kind.name} job takes no guide image"
    if "guide_layer" in raw and not has_guide and "guide" not in fields and "guide_layer" not in fields:
        fields["guide_layer"] = "given without a guide image: attach one as a file field named `guide`"
    if fields or params is None:
        raise ApiError(422, "invalid_params", "invalid request: " + "; ".join(f"{k}: {v}" for k, v in fields.items()),
                       fields)

    # The filenames are ignored: nothing a client names reaches the file system.
    # Bombs are refused from their header; only big images queue for one of the few decode
    # slots, so a normal photo is never stuck behind them.
    pixels = declared_pixels(data, svc.settings.max_pixels)
    guide_pixels = guide_image_error(declared_pixels, guide, svc.settings.max_pixels) if has_guide else 0
    big = max(pixels, guide_pixels) > SMALL_IMAGE_PIXELS
    slots = decode_slots() if big else None
    if slots is not None and not slots.acquire(timeout=svc.settings.decode_wait_s):
        raise ApiError(503, "busy", "too many large images are being decoded; try again shortly",
                       headers={"Retry-After": "5"})

    def normalise(blob: bytes, guide_blob: bytes | None) -> tuple[bytes, str | None, tuple[int, int], bytes | None]:
        # One image at a time, in one slot: the photo's array is gone before the guide is decoded.
        rgb = decode_image(blob, max_pixels=svc.settings.max_pixels, max_side=params.max_side,
                           budget_s=svc.settings.decode_budget_s)
        small = check_size(rgb.shape[0], rgb.shape[1], params)  # a warning when small octaves are skipped
        shape = rgb.shape[:2]
        png = encode_png(rgb)  # the worker decodes this PNG again
        del rgb
        guide_png = None
        if guide_blob is not None:
            # Fitted to the size the worker takes its features at (as it would fit it): a big guide
            # is not kept whole.
            guide_rgb = guide_image_error(decode_image, guide_blob, max_pixels=svc.settings.max_pixels,
                                          max_side=getattr(MODELS[params.model], "guide_side", None),
                                          budget_s=svc.settings.decode_budget_s)
            guide_png = encode_png(guide_rgb)
        return png, small, shape, guide_png

    try:
        png, small, (height, width), guide_png = off_loop(
            functools.partial(normalise, data, guide if has_guide else None))
    finally:
        if slots is not None:
            slots.release()
            give_back_memory()
    del data, guide

    if kind.check_work is not None:  # e.g. kind=zoom: frames x pixels within DREAMQ_ZOOM_MAX_WORK
        try:
            kind.check_work(params, height, width, svc.settings)
        except ParamsError as exc:
            raise ApiError(422, "invalid_params", "invalid request: " + str(exc), exc.fields) from None

    extra = {"guide": guide_png} if guide_png is not None else None
    cached = None  # (key, identity): the result cache's, when the ready workers agree on the engine
    if use_cache:
        try:
            cached = result_cache.key_for(svc.redis, kind.name, params.model_dump(), png, extra,
                                          scope=None if svc.settings.cache_shared else request_owner())
            hit = cached and result_cache.answer(svc.state, cached[0], owner=request_owner(),
                                                 warnings=[small] if small else [], input_png=png, files=extra,
                                                 webhook=webhook)
        except (redis.RedisError, StoreError) as exc:  # the cache is an optimisation: queue the job instead
            current_app.logger.warning("result cache unavailable: %s", exc)
            cached = hit = None
        if hit:
            return hit

    def note_key(job_id: str) -> None:  # before the message: the worker that finishes it records the entry
        if cached:
            result_cache.remember(svc.redis, job_id, cached[0], cached[1], svc.settings.job_ttl_s)

    try:
        job = svc.state.submit(params, png, kind=kind.name, owner=request_owner(), client=client_key(),
                               warnings=[small] if small else [], max_queued=svc.settings.max_queued,
                               max_per_client=svc.settings.max_queued_per_client,
                               files=extra, webhook=webhook, before_enqueue=note_key)
    except SubmitRefused as exc:
        if exc.reason == "queue_full":
            raise queue_full() from None
        if exc.reason == "client_full":
            raise client_full(svc.settings.max_queued_per_client) from None
        current_app.logger.warning("could not queue a job: %s", exc.detail)  # the detail stays in the log
        raise ApiError(503, "redis_unavailable", "could not queue the job; try again shortly",
                       headers={"Retry-After": "5"}) from None
    return job


def submitted_webhook(raw: dict[str, str], fields: dict[str, str]) -> dict | None:
    """Pop ``webhook`` and ``webhook_events_filter`` from the form: ``{"url", "events_filter"}``, or None.

    The host is resolved here (and again at each delivery): a URL that reaches a loopback,
    private or link-local address is a 422 now, not a silent failure later."""
    url, events = raw.pop("webhook", None), raw.pop("webhook_events_filter", None)
    if url is None:
        if events is not None and "webhook_events_filter" not in fields:
            fields["webhook_events_filter"] = "given without a `webhook` URL"
        return None
    svc = services()
    try:
        events = webhooks.parse_events(events)
    except webhooks.WebhookRefused as exc:
        fields.setdefault("webhook_events_filter", str(exc))
    if svc.settings.webhook_secret is None:
        fields.setdefault("webhook", "this server does not send webhooks: DREAMQ_WEBHOOK_SECRET, the key that "
                                     "signs them, is not set")
        return None
    try:
        webhooks.check_url(url.strip(), allow_private=svc.settings.webhook_allow_private, resolve=svc.resolver)
    except webhooks.WebhookRefused as exc:
        fields.setdefault("webhook", str(exc))
        return None
    return {"url": url.strip(), "events_filter": events} if "webhook_events_filter" not in fields else None


def guide_image_error(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, an ImageError of it naming the `guide` field rather than `image`."""
    try:
        return fn(*args, **kwargs)
    except ImageError as exc:
        renamed = ImageError(exc.code, f"the guide image: {exc}")
        renamed.field = "guide"
        raise renamed from None


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
    state, owner = services().state, owner_filter()  # None: everyone's jobs (an admin, or open mode)
    jobs = state.list(limit, before, owner=owner)
    more = bool(jobs) and state.count_before(jobs[-1].created_at, owner=owner) > 0
    return jobs, encode_cursor(jobs[-1].created_at) if more else None


def png_response(data: bytes, *, cache: str, filename: str, mimetype: str = "image/png") -> Response:
    response = Response(data, mimetype=mimetype)
    response.headers["Cache-Control"] = cache
    disposition = "attachment" if request.args.get("download") else "inline"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    response.set_etag(hashlib.sha256(data).hexdigest()[:32])
    return response.make_conditional(request)


def stored_file_response(job: Job, name: str, *, mimetype: str, cache: str, filename: str) -> Response | None:
    """A file of the job's store folder with ETag, conditional GET and byte ranges (206, 416),
    streamed from the store when it can open files (a video is never read into memory whole);
    None when the file is not there."""
    store = services().store
    opener, sizer = getattr(store, "open", None), getattr(store, "size", None)
    if opener is None or sizer is None:  # a store that only reads whole files
        data = store.get(job.files_id, name)
        if data is None:
            return None
        body, size, etag = [data], len(data), hashlib.sha256(data).hexdigest()[:32]
        fh = None
    else:
        try:
            size = sizer(job.files_id, name)  # files_id: a cache hit reads the folder of the job that ran
            fh = opener(job.files_id, name) if size is not None else None
        except FileNotFoundError:
            fh = None
        if fh is None:
            return None
        body = FileWrapper(fh, STREAM_CHUNK)  # seekable: a range is read from its start, not skipped to
        # A result is written once, when the job succeeds: its identity is the job's, its name and size.
        etag = hashlib.sha256(f"{job.id}/{name}/{size}/{job.finished_at!r}".encode()).hexdigest()[:32]
    response = Response(body, mimetype=mimetype, direct_passthrough=True)
    response.content_length = size
    response.headers["Cache-Control"] = cache
    disposition = "attachment" if request.args.get("download") else "inline"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    response.set_etag(etag)
    environ = request.environ
    if "," in request.headers.get("Range", ""):
        # Several ranges: RFC 9110 lets a server answer 200 with the whole file, which every
        # client takes, rather than multipart/byteranges (Werkzeug would answer 416).
        environ = {k: v for k, v in environ.items() if k != "HTTP_RANGE"}
    try:
        return response.make_conditional(environ, accept_ranges=True, complete_length=size)
    except RequestedRangeNotSatisfiable:
        response.close()
        raise ApiError(416, "range_not_satisfiable",
                       f"the range {echo(request.headers.get('Range', ''))} is not within the {size} bytes of the file",
                       headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"}) from None
    except BaseException:
        response.close()
        raise


def input_response(job: Job, role: str) -> Response:
    """An input file of the job (``input``: the photo, ``guide``: the guide image), as the pages show it."""
    kind = KINDS.get(job.kind)
    if kind is None or role not in kind.files:
        raise not_found("file")
    data = services().store.get(job.files_id, kind.file(role))
    if data is None:
        raise not_found("file")
    return png_response(data, cache="private, max-age=86400", filename=f"{role}-{job.id}.png")


# -- routes --------------------------------------------------------------------

@bp.post("/jobs")
def create_job():
    # Both headers are read before anything else: a bad Idempotency-Key is refused without a job.
    wait, key = prefer_wait(), idempotency_key()
    if key is None:
        job, replayed = submit_from_request(), False
    else:  # the first request with the key makes the job; a retry gets that job, as it is now
        job, replayed = submit_once(key, submit_from_request)
    headers = {"Location": f"/api/v1/jobs/{job.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if wait is None:
        return jsonify(public_job(job)), 202, headers
    conn = request.environ.get("gunicorn.socket")  # stop waiting for a client that hung up
    job = wait_for(job, wait, left=lambda: client_left(conn))
    headers["Preference-Applied"] = f"wait={wait}"
    return jsonify(public_job(job)), 201 if job.finished else 202, headers


@bp.get("/jobs")
def list_jobs():
    jobs, next_cursor = list_page(request.args.get("limit"), request.args.get("cursor"))
    return jsonify({"jobs": [public_job(j) for j in jobs], "next_cursor": next_cursor})


@bp.get("/jobs/<job_id>")
def show_job(job_id: str):
    return jsonify(public_job(get_job(job_id)))


@bp.get("/jobs/<job_id>/result")
def job_result(job_id: str):
    job = get_job(job_id)
    if job.status != SUCCEEDED:
        raise ApiError(409, "not_succeeded", f"the job is {job.status}; its result exists only once it has succeeded")
    kind = KINDS[job.kind]
    name = result_name(kind, job.params)
    media_type = result_media_type(kind, job.params)
    extension = posixpath.splitext(name)[1] or mimetypes.guess_extension(media_type) or ""
    response = stored_file_response(job, name, mimetype=media_type, cache="private, max-age=86400",
                                    filename=f"dream-{job.id}{extension}")
    if response is None:
        raise ApiError(404, "not_found", "the result has expired")
    return response


@bp.get("/jobs/<job_id>/preview")
def job_preview(job_id: str):
    job = get_job(job_id)
    data = services().store.get(job.files_id, KINDS[job.kind].file("preview"))
    if data is None:
        raise ApiError(404, "no_preview", "no preview yet: the first one comes when the first octave is done")
    return png_response(data, cache="no-cache", filename=f"preview-{job.id}.png")


@bp.get("/jobs/<job_id>/frames/<n>")
def job_frame(job_id: str, n: str):
    # A plain segment, checked here: the route matches (and asks for a token) whatever it is.
    job = get_job(job_id)
    kind = KINDS.get(job.kind)
    if not has_frames(kind):
        raise ApiError(404, "no_frame", f"a {job.kind} job has no frames: only video jobs (kind=zoom) have")
    if not re.fullmatch(r"[0-9]{1,9}", n):
        raise ApiError(404, "no_frame", "not a frame number: frames are numbered from 0")
    n = int(n)
    total = job.params.get("frames")
    if isinstance(total, int) and n >= total:
        raise ApiError(404, "no_frame", f"frame {n} is out of range: the job has {total} frames, 0 to {total - 1}")
    data = services().store.get(job.files_id, frame_name(kind, n))
    if data is None:
        done = frames_done(job)
        if n < done:
            why = "it has expired"
        elif job.finished:
            why = f"the job {job.status} with {done} frame{'s' if done != 1 else ''} finished"
        else:
            why = f"not finished yet ({done} of {total} are)" if total else "not finished yet"
        raise ApiError(404, "no_frame", f"no frame {n}: {why}")
    # A frame is rewritten only by a rerun of the same job: revalidate by ETag.
    return png_response(data, cache="private, no-cache", filename=f"frame-{job.id}-{n:05d}.png")


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    job = get_job(job_id)
    outcome = services().state.cancel(job.id)
    if outcome == "missing":
        raise not_found()
    if outcome in ("succeeded", "failed"):
        raise ApiError(409, "job_finished", f"the job has already {outcome}; there is nothing to cancel")
    # canceled (was queued, or already canceled) or running (the worker stops at its next step)
    return jsonify(public_job(get_job(job_id))), 202


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
        return f"event: {name}\ndata: {dumps(data)}\n\n"

    def stream():
        # Runs after the view returned: use only what was captured above, no request context.
        yield "retry: 2000\n\n"
        deadline = time.monotonic() + max_s
        last, last_sent = None, time.monotonic()
        while True:
            try:
                job = state.get(job_id)
                data = job and job_json(job, state.queue_position(job_id) if job.status == QUEUED else None)
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
