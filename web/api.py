"""HTTP API v1, the /api/v1 blueprint's routes (the contract is in openapi.py): create, list, show
and cancel jobs, their result, preview, frames and events, and the models.  What the routes do
lives in the modules they call: submit, lookup, files, watch and integrations.
"""
from __future__ import annotations

import mimetypes
import posixpath
import re

from flask import Blueprint, Response, jsonify, request

from shared.job import SUCCEEDED, frames_done, has_frames
from shared.kinds import KINDS
from shared.models import DEFAULT_MODEL, MODELS
from shared.workers import live_workers, model_status

from .auth import authenticate, bearer_token
from .errors import ApiError, not_found
from .files import (
    frame_name,
    png_response,
    result_media_type,
    result_name,
    stored_file_response,
)
from .integrations import idempotency_key, prefer_wait, submit_once, wait_for
from .lookup import get_job, list_page, public_job
from .services import services
from .submit import submit_from_request
from .watch import client_left, event_stream

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.before_request
def require_token():
    if not authenticate(bearer_token()):  # the bearer header only: the pages' cookie is not an API credential
        raise ApiError(401, "unauthorized", "this server requires `Authorization: Bearer <token>`",
                       headers={"WWW-Authenticate": 'Bearer realm="dreamq"'})


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
        with_frames = " or ".join(f"kind={k.name}" for k in KINDS.values() if k.has_frames)
        raise ApiError(404, "no_frame", f"this job (kind={job.kind}) has no frames: only {with_frames} jobs have")
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


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str):
    get_job(job_id)
    svc = services()
    conn = request.environ.get("gunicorn.socket")  # to notice a client that hung up
    return Response(event_stream(svc.state, job_id, svc.settings.events_max_s, conn), mimetype="text/event-stream",
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
