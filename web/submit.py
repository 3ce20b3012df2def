"""Submitting a job from a request, the API's and the pages' alike: the caps, the form, the
uploads, the kind's own work limit, the result cache, then the queue.

Everything that can refuse without the body does so before reading it; a refusal stores nothing.
"""
from __future__ import annotations

import redis
from flask import current_app

from shared import cache as result_cache
from shared.job import Job
from shared.jobs import SubmitRefused
from shared.params import ParamsError
from shared.store import StoreError

from .auth import request_owner
from .availability import check_model
from .errors import ApiError
from .forms import check_multipart, read_form
from .limits import check_submission, client_key
from .services import services
from .uploads import normalise_uploads


def submit_from_request() -> Job:
    """Validate the multipart request, store the normalised input (and guide) and queue the job."""
    svc = services()
    check_multipart()
    check_submission(svc.settings.rate_limit_per_minute)
    check_caps()
    form, image, guide = read_form()
    kind, params, webhook = form.kind, form.params, form.webhook
    # Before the uploads are decoded: a model no live worker can run is refused at once.
    no_worker = check_model(svc.redis, params.model)
    png, small, (height, width), guide_png = normalise_uploads(image, guide, params)
    del image, guide  # the uploads' bytes are not kept while the job is stored and queued

    if kind.check_work is not None:  # e.g. kind=zoom: frames x pixels within DREAMQ_ZOOM_MAX_WORK
        try:
            kind.check_work(params, height, width, svc.settings)
        except ParamsError as exc:
            raise ApiError(422, "invalid_params", "invalid request: " + str(exc), exc.fields) from None

    extra = {"guide": guide_png} if guide_png is not None else None
    cached = None  # (key, identity): the result cache's, when the ready workers agree on the engine
    if form.use_cache:
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
                               warnings=([small] if small else []) + no_worker, max_queued=svc.settings.max_queued,
                               max_per_client=svc.settings.max_queued_per_client,
                               files=extra, webhook=webhook, before_enqueue=note_key, priority=form.priority,
                               batch_key=kind.batch_key_of(params, height, width, guide_png is not None))
    except SubmitRefused as exc:
        if exc.reason == "queue_full":
            raise queue_full() from None
        if exc.reason == "client_full":
            raise client_full(svc.settings.max_queued_per_client) from None
        current_app.logger.warning("could not queue a job: %s", exc.detail)  # the detail stays in the log
        raise ApiError(503, "redis_unavailable", "could not queue the job; try again shortly",
                       headers={"Retry-After": "5"}) from None
    return job


def check_caps() -> None:
    """Queue and per-client caps, before the body is read (try_save_new enforces both)."""
    svc = services()
    settings, state = svc.settings, svc.state
    if state.queue_depth() >= settings.max_queued:
        raise queue_full()
    if settings.max_queued_per_client and state.client_queued(client_key()) >= settings.max_queued_per_client:
        raise client_full(settings.max_queued_per_client)


def queue_full() -> ApiError:
    return ApiError(503, "queue_full", "the queue is full; try again in a minute", headers={"Retry-After": "60"})


def client_full(limit: int) -> ApiError:
    return ApiError(429, "too_many_queued", f"you already have {limit} queued jobs (DREAMQ_MAX_QUEUED_PER_CLIENT); "
                    "wait for one to start, or cancel one", headers={"Retry-After": "30"})
