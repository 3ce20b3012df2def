"""The queue with real Redis and real worker processes: no eager mode, no fakes."""
import os
import signal
import time

import numpy as np
import pytest

from .conftest import QUICK


def test_submit_runs_to_a_result_with_progress_and_preview(live_worker, tiny_photo):
    seen = []
    job_id = live_worker.submit(tiny_photo, **{**QUICK, "iterations": 12})
    job = live_worker.wait(job_id, seen=seen)
    assert job.status == "succeeded", job.error
    from PIL import Image
    import io

    from shared.store import PREVIEW, RESULT

    result = np.asarray(Image.open(io.BytesIO(live_worker.store.get(job_id, RESULT))))
    assert result.shape == tiny_photo.shape
    assert np.abs(result.astype(int) - tiny_photo.astype(int)).mean() > 2
    assert live_worker.store.get(job_id, PREVIEW) is not None and job.preview_url.endswith("preview.png")
    fractions = [j.progress.get("fraction", 0) for j in seen if j.status == "running"]
    assert len(set(fractions)) >= 2 and fractions == sorted(fractions)
    assert job.attempts == 1 and job.worker.endswith(f":{live_worker.procs[0].pid}")
    assert job.metrics["run_s"] > 0 and job.metrics["queue_s"] >= 0


def test_cancel_while_queued_never_starts(service, tiny_photo):
    job_id = service.submit(tiny_photo, **QUICK)  # no worker yet
    assert service.state.cancel(job_id) == "canceled"
    service.start_worker()
    time.sleep(2)  # the worker takes the message and must skip it
    job = service.state.get(job_id)
    assert job.status == "canceled" and job.attempts == 0 and job.started_at is None


def test_cancel_while_running_stops_promptly(live_worker, tiny_photo):
    job_id = live_worker.submit(tiny_photo, **{**QUICK, "iterations": 400})
    live_worker.wait(job_id, statuses=("running",))
    time.sleep(0.5)
    assert live_worker.state.cancel(job_id) == "running"
    t0 = time.monotonic()
    job = live_worker.wait(job_id, timeout=30)
    assert job.status == "canceled" and time.monotonic() - t0 < 5
    assert job.progress["fraction"] < 0.5


def test_two_workers_take_two_jobs_at_once(service, tiny_photo):
    service.start_workers(2)
    a = service.submit(tiny_photo, **{**QUICK, "iterations": 60})
    b = service.submit(tiny_photo, **{**QUICK, "iterations": 60})
    ja, jb = service.wait(a), service.wait(b)
    assert ja.status == jb.status == "succeeded"
    assert ja.worker != jb.worker
    assert ja.started_at < jb.finished_at and jb.started_at < ja.finished_at  # overlapped


def test_killed_worker_job_runs_again_and_only_once(service, tiny_photo):
    service.start_workers(2)
    job_id = service.submit(tiny_photo, **{**QUICK, "iterations": 60})
    running = service.wait(job_id, statuses=("running",))
    victim = int(running.worker.rsplit(":", 1)[1])
    time.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    job = service.wait(job_id, timeout=60)
    assert job.status == "succeeded" and job.attempts == 2
    assert int(job.worker.rsplit(":", 1)[1]) != victim
    assert time.monotonic() - killed_at < 30
    # A late duplicate of the first delivery (Redis redelivers unacked
    # messages after the visibility timeout) must not run it again.
    from shared.queue import enqueue

    enqueue(service.celery, job_id, running.dispatch)
    time.sleep(2)
    again = service.state.get(job_id)
    assert again.attempts == 2 and again.status == "succeeded" and again.finished_at == job.finished_at


def test_job_for_unavailable_model_fails_clearly(live_worker, tiny_photo):
    info = live_worker.worker_info(live_worker.procs[0].pid)
    assert info["models"]["vgg16_hed"] == "ready"
    assert info["models"]["inception_v3"].startswith("unavailable")
    job_id = live_worker.submit(np.asarray(tiny_photo.repeat(3, 0).repeat(3, 1)), model="inception_v3", iterations=1)
    job = live_worker.wait(job_id)
    assert job.status == "failed" and job.error["code"] == "model_unavailable"
    assert "DREAMQ_INCEPTION_V3_WEIGHTS" in job.error["message"]
    # The worker survives and serves the next job.
    assert live_worker.wait(live_worker.submit(tiny_photo, **QUICK)).status == "succeeded"


def test_embedded_redis_restart_keeps_queued_jobs(tmp_path, tiny_photo):
    from shared.redis_server import EmbeddedRedis

    from .conftest import Service

    server = EmbeddedRedis(tmp_path / "redis").start()
    svc = Service(server.url, tmp_path, {})
    try:
        job_id = svc.submit(tiny_photo, **QUICK)
        time.sleep(1.5)  # appendfsync everysec
        server.stop()
        server.start()  # same port, same directory: the append-only file is replayed
        svc = Service(server.url, tmp_path, {})
        assert svc.state.get(job_id).status == "queued"
        svc.start_worker()
        assert svc.wait(job_id).status == "succeeded"
    finally:
        svc.stop()
        server.stop()


def test_worker_per_gpu_processes(service):
    """`dreamq worker --gpus 0,1`: one process per device, each told its own."""
    import subprocess
    import sys

    from .conftest import ROOT

    log = open(service.logs / "gpus.log", "w")
    parent = subprocess.Popen([sys.executable, "-m", "dreamq.cli", "worker", "--gpus", "0,1"], env=service.env,
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    service.procs.append(parent)
    import psutil

    deadline = time.monotonic() + 120
    devices = {}
    while time.monotonic() < deadline and len(devices) < 2:
        for child in psutil.Process(parent.pid).children():
            info = service.worker_info(child.pid)
            if info and info["ready"]:
                devices[child.pid] = info["device"]
        time.sleep(0.2)
    assert sorted(devices.values()) == ["gpu:0", "gpu:1"], service.read_logs()


def test_expired_jobs_lose_their_files(clean_redis, redis_url, tmp_path, tiny_photo):
    from shared.images import encode_png
    from shared.job import JobQueueState
    from shared.queue import make_celery
    from shared.settings import Settings
    from shared.store import INPUT, open_store
    from worker.worker import Worker

    settings = Settings(redis_url=redis_url, data_dir=tmp_path, job_ttl_s=60)
    state = JobQueueState(clean_redis, ttl_s=60)
    store = open_store(settings)
    old = state.create({"model": "vgg16_hed"})
    old.created_at -= 61  # created a minute ago
    store.put(old.id, INPUT, encode_png(tiny_photo))
    state.save_new(old)
    fresh = state.create({"model": "vgg16_hed"})
    store.put(fresh.id, INPUT, encode_png(tiny_photo))
    state.save_new(fresh)
    Worker(settings, make_celery(settings)).sweep_expired(every_s=0)
    assert store.get(old.id, INPUT) is None and state.get(old.id) is None
    assert store.get(fresh.id, INPUT) is not None and state.get(fresh.id) is not None
    assert clean_redis.ttl(f"dreamq:job:{fresh.id}") > 0  # the record itself expires in Redis too


def test_progress_is_written_a_few_times_per_second_not_every_step(live_worker, tiny_photo):
    live_worker.redis.config_resetstat()
    job = live_worker.wait(live_worker.submit(tiny_photo, **{**QUICK, "iterations": 150}))
    assert job.status == "succeeded"
    stats = live_worker.redis.info("commandstats")
    # Every write of a job record is one script call: start, progress, previews, finish.
    writes = stats.get("cmdstat_evalsha", {}).get("calls", 0) + stats.get("cmdstat_eval", {}).get("calls", 0)
    steps = 2 * 150
    allowed = 4 * job.metrics["run_s"] + 2 * 2 + 2 + 2  # 4/s, a flush and a preview per octave, start, finish
    assert 4 <= writes <= allowed < steps, (writes, allowed, job.metrics)
