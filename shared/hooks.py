"""Who listens to the job lifecycle, installed by one explicit call in every process that changes jobs.

    install(settings)   # the web (create_app), a worker, the delivery process, the test harness

subscribes to the signals of shared/jobs.py: the metrics counters (shared/stats.py), the result
cache (shared/cache.py), the webhooks (shared/webhooks.py) and every module of DREAMQ_PLUGINS
(imported, then its ``install(settings)`` called if it has one).  So a plugin sees every
transition, whichever process made it: a job canceled from the web while queued, a cache hit.
Installing twice is harmless: blinker connects a receiver once.
"""
from __future__ import annotations

import importlib
import logging

from . import cache, stats, webhooks
from .jobs import job_finished, job_output, job_progress, job_started, job_submitted

log = logging.getLogger("dreamq")

# signal -> receivers, in the order they run.
SUBSCRIBERS = (
    (job_submitted, (stats.on_submitted,)),
    (job_started, (webhooks.on_start,)),
    (job_progress, (webhooks.on_progress,)),
    (job_output, (webhooks.on_output,)),
    (job_finished, (stats.on_finished, cache.on_finished, webhooks.on_completed)),
)


def install(settings) -> None:
    for signal, receivers in SUBSCRIBERS:
        for receiver in receivers:
            signal.connect(receiver)
    for name in settings.plugins:  # DREAMQ_PLUGINS
        module = importlib.import_module(name)
        plugin_install = getattr(module, "install", None)
        if callable(plugin_install):
            plugin_install(settings)
        log.info("plugin %s loaded", name)
