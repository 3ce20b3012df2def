"""Finding the caller's jobs: one by id (another token's job is as absent as a missing one), a page
of them by cursor (newest first), and each as the API shows it.
"""
from __future__ import annotations

import base64
import math

from shared.job import QUEUED, Job, job_json

from .auth import can_see, owner_filter
from .errors import ApiError, not_found, sees_error_detail
from .services import services

MAX_LIMIT = 100


def get_job(job_id: str) -> Job:
    job = services().state.get(job_id)  # None for anything that is not a UUID: never a path
    if job is None or not can_see(job):  # another token's job is as absent as a missing one
        raise not_found()
    return job


def public_job(job: Job) -> dict:
    state = services().state
    return job_json(job, state.queue_position(job) if job.status == QUEUED else None, detail=sees_error_detail())


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
