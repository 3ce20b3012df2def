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
JSON_FIELDS = ("params", "progress", "error", "metrics", "warnings")


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

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

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
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
