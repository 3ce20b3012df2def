"""A plugin that only watches: every lifecycle signal it hears, in whichever process, goes to a
Redis list, so a test can see that a plugin hears every transition (``DREAMQ_PLUGINS=bench.probe_plugin``).
"""
from __future__ import annotations

import json
import os

from shared import keys
from shared.jobs import job_finished, job_started, job_submitted

SEEN = f"{keys.PREFIX}:test:seen"  # a list of {"event", "job", "status", "pid"}


def _note(jobs, event: str, job_id: str, **extra) -> None:
    jobs.r.rpush(SEEN, json.dumps({"event": event, "job": job_id, "pid": os.getpid(), **extra}))


def _submitted(jobs, job, **_):
    _note(jobs, "submitted", job.id)


def _started(jobs, job_id, **_):
    _note(jobs, "started", job_id)


def _finished(jobs, job_id, status, **_):
    _note(jobs, "finished", job_id, status=status)


def install(settings) -> None:
    job_submitted.connect(_submitted)
    job_started.connect(_started)
    job_finished.connect(_finished)
