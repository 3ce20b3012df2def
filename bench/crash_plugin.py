"""Fault injection for the reliability tests and ``bench/faults.py``: a worker plugin.

Loaded only where asked, with ``DREAMQ_PLUGINS=bench.crash_plugin`` in a worker's
environment (the production worker holds no test code).  A job whose id has the key
``CRASH + <job id>`` in Redis kills its worker (SIGKILL, as the OOM killer would)
each time it starts, right after the start is in Redis.
"""
from __future__ import annotations

import logging
import os
import signal

from shared import keys
from shared.jobs import job_started

CRASH = f"{keys.PREFIX}:test:crash:"
ENV = {"DREAMQ_PLUGINS": __name__}  # what a worker's environment needs to load this

log = logging.getLogger("dreamq.worker")


@job_started.connect
def crash_if_armed(jobs, job_id: str, **_) -> None:
    if jobs.r.exists(CRASH + job_id):
        log.error("job %s: armed by bench.crash_plugin: killing this worker", job_id)
        os.kill(os.getpid(), signal.SIGKILL)
