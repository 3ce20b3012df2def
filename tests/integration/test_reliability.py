"""Faults in real processes, and load: what dreamq survives and what it never loses.

The scenarios live in ``bench/faults.py`` (``python -m bench.faults`` prints their
figures); each starts its own embedded Redis, real `dreamq worker` processes and,
where needed, a real gunicorn on 127.0.0.1.  Complements tests/integration/test_queue.py
(a worker killed with another one running, duplicate delivery, Redis restart).
"""
from __future__ import annotations

import pytest

from bench import faults
from bench.load import WebServer, run_load, tiny_png

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image():
    return faults.test_image(96)


def test_worker_killed_with_no_other_worker_runs_the_job_on_the_next(tmp_path, image):
    figures = faults.kill_lone_worker(tmp_path, image)
    assert figures["attempts"] == 2 and figures["status"] == "succeeded"


def test_a_job_that_kills_its_worker_every_time_fails_worker_lost(tmp_path, image):
    figures = faults.crash_loop(tmp_path, image, max_attempts=2)
    assert figures["error"] == "worker_lost" and figures["workers_killed"] == 2


def test_redis_killed_and_restarted_keeps_jobs_and_the_web_recovers(tmp_path, image):
    figures = faults.redis_outage(tmp_path, image)
    assert set(figures["answers_while_down"].values()) == {503}
    assert figures["slowest_answer_while_down_s"] < 5  # refused connections fail fast, never hang a request


def test_web_killed_mid_job_loses_nothing(tmp_path, image):
    figures = faults.web_restart(tmp_path, image)
    assert figures["job_status_at_web_restart"] == "running" and figures["final"] == "succeeded"


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    with faults.limited_worker(tmp_path_factory.mktemp("limited"), time_limit_s=2) as svc:
        yield svc


def test_job_over_its_time_limit_fails_timeout_and_the_worker_goes_on(limited, image):
    figures = faults.time_limit(limited, image)
    assert figures["error"] == "timeout" and figures["failed_after_run_s"] < 2 + 5


def test_unwritable_store_fails_the_job_with_store_error_and_the_worker_goes_on(limited, image):
    assert faults.store_unwritable(limited, image)["error"] == "store_error"


def test_sigterm_gives_the_running_job_back_to_the_queue(tmp_path, image):
    figures = faults.worker_sigterm(tmp_path, image)
    assert figures["worker_exit_code"] == 0 and figures["attempts"] == 2


def test_queue_cap_refuses_with_503_and_enqueues_nothing_even_under_a_race(tmp_path, image):
    figures = faults.queue_cap(tmp_path, image, cap=5, extra=4, burst=20)
    assert figures["queued_after_edge_race"] == 5


def test_load_every_accepted_job_succeeds_and_nothing_is_lost(tmp_path):
    """The short version of `python -m bench.load` (500 submissions, 50 clients)."""
    with faults.cluster(tmp_path) as svc:
        svc.start_worker()
        web = WebServer(faults.web_env(svc), tmp_path / "web.log").start()
        try:
            result = run_load(web.url, svc.redis, tiny_png(48), submissions=100, clients=20, pollers=4,
                              deadline_s=120)
        finally:
            web.stop()
    summary = result.summary()
    assert not result.errors, result.errors[:5]  # every answer 202, or 429/503 with Retry-After
    assert not result.poll_errors, result.poll_errors[:5]
    assert summary["responses"].get(202, 0) == len(result.accepted) > 0
    assert result.final == {"succeeded": len(result.accepted)}, summary
    assert not result.lost and not any(result.leftover.values()), summary
    assert summary["status_requests"] > 0
