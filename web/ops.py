"""The operators' routes, open without a token: /healthz (the process answers), /readyz (Redis
answers and a worker is ready) and /api/openapi.json (the API's contract).
"""
from __future__ import annotations

import os

import redis
from flask import Blueprint, current_app, jsonify

from shared.workers import live_workers, ready_workers

from .errors import ApiError
from .services import services

bp = Blueprint("ops", __name__)

# `dreamq up` passes its web a random nonce and waits for it in this header: the answer is its own
# web's, not that of another server on the port (dreamq/up.py).
INSTANCE_ENV, INSTANCE_HEADER = "DREAMQ_UP_INSTANCE", "X-Dreamq-Instance"


@bp.after_request
def _instance(response):
    instance = os.environ.get(INSTANCE_ENV)
    if instance:
        response.headers[INSTANCE_HEADER] = instance
    return response


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
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


@bp.get("/api/openapi.json")
def openapi_json():
    from .openapi import SPEC

    return jsonify(SPEC)
