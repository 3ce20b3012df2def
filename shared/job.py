"""The job record: what a job is and where it stands, as kept in Redis.

The record is the single source of truth for a job's state; Celery only carries
``(job_id, dispatch token)``.  How a record changes state lives in ``shared/jobs.py``.

States: queued -> running -> succeeded | failed | canceled (and queued -> canceled).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .kinds import DEFAULT_KIND, get_kind

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = "queued", "running", "succeeded", "failed", "canceled"
FINISHED = (SUCCEEDED, FAILED, CANCELED)
JSON_FIELDS = ("params", "progress", "error", "metrics", "warnings", "webhook", "webhook_delivery")


def dumps(value: Any) -> str:
    """JSON as every client parses it: NaN and Infinity raise ValueError here, never reach a reader
    (Python's json writes them as bare words that JSON.parse refuses)."""
    return json.dumps(value, allow_nan=False)


def is_job_id(value: str) -> bool:
    """Only canonical UUID4 strings are job ids (anything else is a 404, never a path)."""
    try:
        return len(value) == 36 and str(uuid.UUID(value, version=4)) == value
    except (ValueError, AttributeError, TypeError):
        return False


@dataclass
class Job:
    id: str
    status: str
    params: dict[str, Any]
    created_at: float
    kind: str = DEFAULT_KIND
    started_at: float | None = None
    finished_at: float | None = None
    enqueued_at: float | None = None
    attempts: int = 0
    worker: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    error: dict[str, str] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what ran differently from what was asked, and why
    input_url: str | None = None
    preview_url: str | None = None
    result_url: str | None = None
    dispatch: str | None = None
    cancel_requested: bool = False
    owner: str | None = None  # a hash of the token that created the job (never the token); None: no tokens set
    webhook: dict[str, Any] | None = None  # {"url", "events_filter"}: where its events are POSTed (shared/webhooks.py)
    webhook_delivery: dict[str, Any] = field(default_factory=dict)  # what the deliveries did (dreamq/delivery.py)
    # A result-cache hit stores no files: this names the job whose store folder holds them
    # (always the one that ran, never another hit; shared/cache.py).  None: its own folder.
    files_from: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def files_id(self) -> str:
        """The store folder of the job's files: read a job's stored files through this, never ``id``."""
        return self.files_from or self.id

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> "Job":
        d = {k.decode(): v.decode() for k, v in raw.items()}
        floats = ("created_at", "started_at", "finished_at", "enqueued_at")
        kw: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name not in d or d[name] == "":
                continue
            value: Any = d[name]
            if name in JSON_FIELDS:
                value = json.loads(value)
            elif name in floats:
                value = float(value)
            elif name == "attempts":
                value = int(value)
            elif name == "cancel_requested":
                value = value == "1"
            kw[name] = value
        kw.setdefault("params", {})
        return cls(**kw)

    def public(self) -> dict[str, Any]:
        """The job as clients see it (the web adds links and queue position)."""
        kind = get_kind(self.kind)
        progress = kind.progress(self.params) if kind else {"fraction": 0.0, "eta_s": None}
        progress.update(self.progress)
        if self.status == SUCCEEDED:
            progress["fraction"] = 1.0
            progress["eta_s"] = 0.0
        return {
            "id": self.id, "kind": self.kind, "status": self.status, "progress": progress, "params": self.params,
            "created_at": _iso(self.created_at), "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at), "attempts": self.attempts, "worker": self.worker,
            "error": self.error, "warnings": self.warnings,
            # queue_s and run_s always (null until known); what else a kind measured, when it did.
            "metrics": {"queue_s": self.metrics.get("queue_s"), "run_s": self.metrics.get("run_s"), **self.metrics},
            "webhook": self.webhook_json(),
        }

    def webhook_json(self) -> dict[str, Any] | None:
        """Where the job's events go and every delivery attempt so far; null without a webhook."""
        if not self.webhook:
            return None
        d = self.webhook_delivery or {}
        return {"url": self.webhook.get("url"), "events_filter": self.webhook.get("events_filter", []),
                "status": d.get("status", "pending"), "attempts": d.get("attempts", 0),
                "delivered": d.get("delivered", 0), "last_event": d.get("last_event"),
                "last_status": d.get("last_status"), "last_error": d.get("last_error"),
                "last_attempt_at": _iso(d.get("last_attempt_at")),
                "history": d["history"] if isinstance(d.get("history"), list) else []}  # Lua's cjson writes [] as {}


# -- the job as the API shows it: GET /api/v1/jobs/{id}, and the body of its webhooks --

def job_json(job: Job, queue_position: int | None = None) -> dict:
    data = job.public()
    data["queue_position"] = queue_position if job.status == QUEUED else None
    base = f"/api/v1/jobs/{job.id}"
    # result and preview are null until they exist, so a client knows when to fetch them.
    data["links"] = {"self": base, "result": f"{base}/result" if job.status == SUCCEEDED else None,
                     "preview": f"{base}/preview" if job.preview_url else None,
                     "cancel": f"{base}/cancel", "events": f"{base}/events"}
    kind = get_kind(job.kind)
    if has_frames(kind):  # the latest finished frame of a video, null until the first is done
        done = frames_done(job)
        data["links"]["frame"] = f"{base}/frames/{done - 1}" if done else None
    return data


def has_frames(kind) -> bool:
    """Whether jobs of ``kind`` keep numbered frames (kind=zoom)."""
    return kind is not None and "frame" in kind.files


def frames_done(job: Job) -> int:
    """How many frames of a video job are finished (frames 0 to this - 1), from its progress."""
    p = job.progress or {}
    done = p.get("frames_done")
    if done is None and p.get("frame") is not None:
        done = p["frame"] + 1  # the index of the last finished frame
    if job.status == SUCCEEDED:
        done = job.params.get("frames", done)
    try:
        return max(0, int(done or 0))
    except (TypeError, ValueError):
        return 0


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
