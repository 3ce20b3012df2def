"""Faults, injected into real processes: what survives, and how long recovery takes.

    .venv/bin/python -m bench.faults [--only NAME ...]

Every scenario starts its own embedded Redis (so it may kill it), real
``dreamq worker`` processes (bench/cluster.py's Service) and, where it needs
one, a real gunicorn web server on 127.0.0.1.  Each checks its outcome
(AssertionError otherwise; TimeoutError when what it waits for never comes)
and returns the figures it measured; ``tests/integration/test_reliability.py`` runs the
same functions.  Scenarios:

  kill_lone_worker   SIGKILL the only worker mid-job; the job runs when a new worker starts
  crash_loop         a job that kills its worker every time fails `worker_lost` after max_attempts
  redis_outage       SIGKILL the embedded Redis: the web answers 503, then recovers; nothing lost
  web_restart        SIGKILL the web mid-job and start a new one: the job finishes, the new web shows it
  time_limit         a job over DREAMQ_JOB_TIME_LIMIT_S fails `timeout`; the worker serves the next job
  store_unwritable   the worker cannot write files (RLIMIT_FSIZE): `store_error`; the worker survives
  worker_sigterm     SIGTERM a worker mid-job: the job goes back to the queue, succeeds on another
  queue_cap          DREAMQ_MAX_QUEUED: submissions above it get 503 and nothing is enqueued

The crash loop loads a worker plugin, bench/crash_plugin.py (DREAMQ_PLUGINS=bench.crash_plugin).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.cluster import SAMPLE, Service, wait_for
from bench.machine import print_header

TINY = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": 1, "iterations": 1}
# About 3-6 s on one CPU thread at 96x96: long enough to be hit mid-run.
LONG = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": 2, "iterations": 60}
BASE_ENV = {"DREAMQ_MODELS": "vgg16_hed"}
FINISHED = ("succeeded", "failed", "canceled")


def test_image(side: int = 96) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(SAMPLE).convert("RGB").resize((side, side), Image.LANCZOS))


def png(image: np.ndarray) -> bytes:
    from shared.images import encode_png

    return encode_png(image)


@contextlib.contextmanager
def cluster(tmp: Path, env: dict[str, str] | None = None):
    """An embedded Redis of its own and a Service (bench/cluster.py) to start workers on it."""
    from dreamq.redis_server import EmbeddedRedis

    tmp.mkdir(parents=True, exist_ok=True)
    server = EmbeddedRedis(tmp / "redis").start()
    svc = Service(server.url, tmp, {**BASE_ENV, **(env or {})})
    svc.server = server
    try:
        yield svc
    finally:
        svc.stop()
        server.stop(kill=True)


def web_env(svc, **extra: str) -> dict[str, str]:
    return {"DREAMQ_REDIS_URL": svc.server.url, "DREAMQ_DATA_DIR": str(svc.settings.data_dir),
            "DREAMQ_EVENTS_MAX_S": "2", **extra}


def pid_of(job) -> int:
    return int(job.worker.rsplit(":", 1)[1])


# -- scenarios ---------------------------------------------------------------------


def kill_lone_worker(tmp: Path, image: np.ndarray) -> dict:
    with cluster(tmp) as svc:
        first = svc.start_worker()
        job_id = svc.submit(image, **LONG)
        svc.wait(job_id, statuses=("running",))
        time.sleep(0.5)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        time.sleep(1.0)
        orphan = svc.state.get(job_id)
        assert orphan.status == "running" and orphan.attempts == 1, orphan  # no one else to notice yet
        t0 = time.monotonic()
        second = svc.start_worker(wait=False)
        svc.wait_ready(second.pid)
        ready_s = time.monotonic() - t0
        again = svc.wait(job_id, statuses=("running",) + FINISHED, timeout=60)
        requeue_s = time.monotonic() - t0
        job = svc.wait(job_id, timeout=120)
        assert job.status == "succeeded", job.error
        assert job.attempts == 2 and pid_of(job) == second.pid, job
        assert again.attempts == 2
        return {"new_worker_ready_s": round(ready_s, 2), "job_running_again_s": round(requeue_s, 2),
                "attempts": job.attempts, "status": job.status}


def crash_loop(tmp: Path, image: np.ndarray, max_attempts: int = 2) -> dict:
    """max_attempts + 1 workers with the crash hook; every delivery of the poisoned job kills one."""
    from bench.crash_plugin import CRASH, ENV

    with cluster(tmp, {"DREAMQ_MAX_ATTEMPTS": str(max_attempts)}) as svc:
        procs = [svc.start_worker(wait=False, **ENV) for _ in range(max_attempts + 1)]
        for p in procs:
            svc.wait_ready(p.pid)
        t0 = time.monotonic()
        job_id = svc.submit(image, before_enqueue=lambda i: svc.redis.set(CRASH + i, "1"), **TINY)
        job = svc.wait(job_id, timeout=30 * max_attempts + 30)
        fail_s = time.monotonic() - t0
        assert job.status == "failed" and job.error["code"] == "worker_lost", (job.status, job.error)
        assert job.attempts == max_attempts, job
        assert str(max_attempts) in job.error["message"]
        dead = [p for p in procs if p.poll() is not None]
        alive = [p for p in procs if p.poll() is None]
        assert len(dead) == max_attempts and all(p.returncode == -signal.SIGKILL for p in dead), \
            [p.returncode for p in procs]
        assert len(alive) == 1
        # The surviving worker still serves other jobs.
        ok = svc.wait(svc.submit(image, **TINY), timeout=60)
        assert ok.status == "succeeded" and pid_of(ok) == alive[0].pid, ok
        # and the poisoned job is never started again
        time.sleep(1)
        assert svc.state.get(job_id).attempts == max_attempts
        return {"max_attempts": max_attempts, "workers_killed": len(dead), "failed_after_s": round(fail_s, 2),
                "error": job.error["code"], "survivor_served_next_job": True}


def redis_outage(tmp: Path, image: np.ndarray) -> dict:
    import requests

    from bench.load import WebServer

    with cluster(tmp) as svc:
        web = WebServer(web_env(svc), tmp / "web.log", workers=1, threads=4).start()
        try:
            worker = svc.start_worker()
            body = {k: str(v) for k, v in TINY.items()}
            files = {"image": ("photo.png", png(image), "image/png")}
            r = requests.post(f"{web.url}/api/v1/jobs", data=body, files=files, timeout=10)
            assert r.status_code == 202, r.text
            done_id = r.json()["id"]
            assert svc.wait(done_id, timeout=60).status == "succeeded"
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
            r = requests.post(f"{web.url}/api/v1/jobs", data=body, files=files, timeout=10)
            assert r.status_code == 202, r.text
            queued_id = r.json()["id"]
            time.sleep(1.5)  # appendfsync everysec

            svc.server.stop(kill=True)  # SIGKILL: no shutdown save
            down = {}
            t0 = time.monotonic()
            for name, call in (
                    ("status", lambda: requests.get(f"{web.url}/api/v1/jobs/{done_id}", timeout=10)),
                    ("list", lambda: requests.get(f"{web.url}/api/v1/jobs", timeout=10)),
                    ("submit", lambda: requests.post(f"{web.url}/api/v1/jobs", data=body, files=files, timeout=10)),
                    ("readyz", lambda: requests.get(f"{web.url}/readyz", timeout=10))):
                t = time.monotonic()
                resp = call()
                down[name] = (resp, time.monotonic() - t)
            for name, (resp, _) in down.items():
                assert resp.status_code == 503, (name, resp.status_code, resp.text)
                assert resp.headers["Content-Type"].startswith("application/json"), name
            for name in ("status", "list", "submit"):
                resp = down[name][0]
                err = resp.json()["error"]
                assert err["code"] == "redis_unavailable" and "Redis" in err["message"], err
                assert resp.headers.get("Retry-After", "").isdigit(), resp.headers
            assert down["readyz"][0].json()["status"] == "unready"
            assert requests.get(f"{web.url}/healthz", timeout=10).status_code == 200  # liveness stays up
            outage_s = time.monotonic() - t0

            svc.server.start()  # same port and directory: the append-only file is replayed
            t1 = time.monotonic()

            def back():
                resp = requests.get(f"{web.url}/api/v1/jobs/{done_id}", timeout=10)
                return resp if resp.status_code == 200 else None

            resp = wait_for(back, 20, "the web to reach Redis again", every=0.1)
            recover_s = time.monotonic() - t1
            assert resp.json()["status"] == "succeeded"
            assert requests.get(f"{web.url}/api/v1/jobs/{done_id}/result", timeout=10).status_code == 200
            queued = requests.get(f"{web.url}/api/v1/jobs/{queued_id}", timeout=10).json()
            assert queued["status"] == "queued" and queued["queue_position"] == 1, queued
            assert not svc.state.get(done_id) is None
            # The queued job's Celery message survived too: a new worker runs it.
            svc.start_worker()
            assert svc.wait(queued_id, timeout=60).status == "succeeded"
            return {"answers_while_down": {k: v[0].status_code for k, v in down.items()},
                    "slowest_answer_while_down_s": round(max(v[1] for v in down.values()), 3),
                    "web_recovered_after_s": round(recover_s, 2), "finished_job_kept": True,
                    "queued_job_kept_and_ran": True, "outage_checks_s": round(outage_s, 2)}
        finally:
            web.stop()


def web_restart(tmp: Path, image: np.ndarray) -> dict:
    import requests

    from bench.load import WebServer

    with cluster(tmp) as svc:
        svc.start_worker()
        web = WebServer(web_env(svc), tmp / "web.log", workers=1, threads=4).start()
        try:
            body = {k: str(v) for k, v in LONG.items()}
            r = requests.post(f"{web.url}/api/v1/jobs", data=body,
                              files={"image": ("photo.png", png(image), "image/png")}, timeout=10)
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            wait_for(lambda: requests.get(f"{web.url}/api/v1/jobs/{job_id}", timeout=5).json()["status"] == "running",
                     60, "the job to run")
            web.stop(kill=True)  # SIGKILL the web mid-job
            killed = svc.state.get(job_id)
            assert killed.status == "running", killed
            t0 = time.monotonic()
            web.start()
            restart_s = time.monotonic() - t0
            during = svc.state.get(job_id).status

            def finished():
                job = requests.get(f"{web.url}/api/v1/jobs/{job_id}", timeout=5).json()
                return job if job["status"] in FINISHED else None

            job = wait_for(finished, 120, "the job to finish", every=0.2)
            assert job["status"] == "succeeded" and job["attempts"] == 1, job
            result = requests.get(f"{web.url}/api/v1/jobs/{job_id}/result", timeout=10)
            assert result.status_code == 200 and result.content.startswith(b"\x89PNG")
            listed = requests.get(f"{web.url}/api/v1/jobs", timeout=10).json()["jobs"]
            assert [j["id"] for j in listed] == [job_id]
            return {"web_restart_s": round(restart_s, 2), "job_status_at_web_restart": during,
                    "final": job["status"], "attempts": job["attempts"]}
        finally:
            web.stop()


@contextlib.contextmanager
def limited_worker(tmp: Path, time_limit_s: int = 2):
    """One worker with DREAMQ_JOB_TIME_LIMIT_S; its output through a pipe (see store_unwritable)."""
    with cluster(tmp, {"DREAMQ_JOB_TIME_LIMIT_S": str(time_limit_s)}) as svc:
        svc.worker = svc.start_worker(piped=True)
        yield svc


def time_limit(svc, image: np.ndarray) -> dict:
    limit = svc.settings.job_time_limit_s
    job_id = svc.submit(image, **{**LONG, "iterations": 500})
    job = svc.wait(job_id, timeout=limit + 60)
    assert job.status == "failed" and job.error["code"] == "timeout", (job.status, job.error)
    assert f"{limit}s" in job.error["message"]
    assert limit <= job.metrics["run_s"] < limit + 5, job.metrics
    assert svc.worker.poll() is None
    nxt = svc.wait(svc.submit(image, **TINY), timeout=60)
    assert nxt.status == "succeeded" and pid_of(nxt) == svc.worker.pid, nxt
    return {"limit_s": limit, "failed_after_run_s": job.metrics["run_s"], "error": job.error["code"],
            "progress_at_stop": job.progress.get("fraction"), "worker_served_next_job": True}


def store_unwritable(svc, image: np.ndarray) -> dict:
    """Every file the worker writes is cut at 1 KiB (RLIMIT_FSIZE, as a full disk): EFBIG on the first PNG.

    (As root, chmod would not stop the worker; a file size limit does, and only for that process.)
    """
    pid = svc.worker.pid
    before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (1024, before[1]))  # the soft limit only
    try:
        job = svc.wait(svc.submit(image, **{**LONG, "iterations": 4}), timeout=60)
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, before)
    assert job.status == "failed" and job.error["code"] == "store_error", (job.status, job.error)
    # Clients get a generic message with the job id; the store's own error stays in the worker log.
    assert job.error["message"].startswith("the image store failed") and job.id in job.error["message"], job.error
    assert "File too large" not in job.error["message"], job.error
    deadline = time.monotonic() + 30  # the worker logs right after it records the failure
    while not ((logs := svc.read_logs()).count(job.id) and "File too large" in logs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.id in logs and "File too large" in logs, logs[-2000:]
    assert svc.worker.poll() is None
    nxt = svc.wait(svc.submit(image, **TINY), timeout=60)
    assert nxt.status == "succeeded" and pid_of(nxt) == pid, nxt
    return {"error": job.error["code"], "message": job.error["message"].replace(job.id, "<id>"),
            "worker_served_next_job": True}


def worker_sigterm(tmp: Path, image: np.ndarray) -> dict:
    with cluster(tmp) as svc:
        first = svc.start_worker()
        job_id = svc.submit(image, **LONG)
        svc.wait(job_id, statuses=("running",))
        time.sleep(0.5)
        t0 = time.monotonic()
        first.send_signal(signal.SIGTERM)
        given_back = svc.wait(job_id, statuses=("queued",) + FINISHED, timeout=30)
        give_back_s = time.monotonic() - t0
        first.wait(30)
        exit_s = time.monotonic() - t0
        assert given_back.status == "queued" and given_back.attempts == 1 and not given_back.worker, given_back
        assert first.returncode == 0, first.returncode
        assert svc.state.queue_depth() == 1
        second = svc.start_worker()
        job = svc.wait(job_id, timeout=120)
        assert job.status == "succeeded" and job.attempts == 2 and pid_of(job) == second.pid, job
        return {"given_back_after_s": round(give_back_s, 2), "worker_exited_after_s": round(exit_s, 2),
                "worker_exit_code": first.returncode, "final": job.status, "attempts": job.attempts}


def queue_cap(tmp: Path, image: np.ndarray, cap: int = 5, extra: int = 4, burst: int = 20) -> dict:
    """No worker: a cap of ``cap`` queued jobs, then ``extra`` more submissions one by one, then a burst."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from bench.load import WebServer
    from shared.keys import JOBS, QUEUED_JOBS
    from shared.queue import QUEUE

    with cluster(tmp) as svc:
        web = WebServer(web_env(svc, DREAMQ_MAX_QUEUED=str(cap)), tmp / "web.log", workers=2, threads=8).start()
        store_dir = svc.settings.data_dir / "store"

        def post(_=None):
            return requests.post(f"{web.url}/api/v1/jobs", data={k: str(v) for k, v in TINY.items()},
                                 files={"image": ("photo.png", png(image), "image/png")}, timeout=30)

        def counts():
            return {"queued": svc.redis.zcard(QUEUED_JOBS), "records": svc.redis.zcard(JOBS),
                    "celery_messages": svc.redis.llen(QUEUE),
                    "stored_inputs": len(list(store_dir.glob("*/input.png"))) if store_dir.exists() else 0}

        try:
            answers = [post() for _ in range(cap + extra)]
            codes = [r.status_code for r in answers]
            assert codes == [202] * cap + [503] * extra, codes
            for r in answers[cap:]:
                assert r.json()["error"]["code"] == "queue_full" and r.headers["Retry-After"] == "60", r.text
            after_serial = counts()
            assert after_serial == {"queued": cap, "records": cap, "celery_messages": cap, "stored_inputs": cap}, \
                after_serial
            # A concurrent burst while full: every answer is 503, nothing more is queued.
            with ThreadPoolExecutor(burst) as pool:
                burst_codes = [r.status_code for r in pool.map(post, range(burst))]
            after_burst = counts()
            assert burst_codes == [503] * burst and after_burst == after_serial, (burst_codes, after_burst)
            # Concurrent submissions at the edge: drain one slot, race `burst` clients for it.
            svc.state.cancel(svc.state.queued_ids()[0])
            with ThreadPoolExecutor(burst) as pool:
                edge = [r.status_code for r in pool.map(post, range(burst))]
            edge_counts = counts()
            # One slot: exactly one winner, the rest 503, and a loser's stored input is removed again.
            assert edge.count(202) == 1 and edge.count(503) == burst - 1, edge
            # (+1: the canceled job keeps its record; its message and its input went at the cancel)
            assert edge_counts == {"queued": cap, "records": cap + 1, "celery_messages": cap,
                                   "stored_inputs": cap}, edge_counts
            return {"cap": cap, "serial": f"{cap} x 202, {extra} x 503 queue_full", "after_serial": after_serial,
                    "burst_when_full": f"{burst} x 503", "edge_race": f"1 slot, {burst} clients: "
                    f"{edge.count(202)} x 202, {edge.count(503)} x 503", "queued_after_edge_race": edge_counts["queued"]}
        finally:
            web.stop()


SCENARIOS = ["kill_lone_worker", "crash_loop", "redis_outage", "web_restart", "time_limit", "store_unwritable",
             "worker_sigterm", "queue_cap"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=SCENARIOS, default=SCENARIOS)
    args = ap.parse_args()
    print_header()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tmp = Path(tempfile.mkdtemp(prefix="dreamq-faults-"))
    image = test_image()
    results: dict[str, dict] = {}
    failed = False
    limited = None
    for name in args.only:
        t0 = time.monotonic()
        try:
            if name in ("time_limit", "store_unwritable"):
                if limited is None:
                    limited_cm = limited_worker(tmp / "limited")
                    limited = limited_cm.__enter__()
                figures = globals()[name](limited, image)
            else:
                figures = globals()[name](tmp / name, image)
            figures["scenario_s"] = round(time.monotonic() - t0, 1)
            results[name] = figures
            print(f"PASS {name}: {json.dumps(figures)}", flush=True)
        except Exception as exc:  # report and go on with the next scenario
            failed = True
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(f"FAIL {name}: {results[name]['error']}", flush=True)
    if limited is not None:
        limited_cm.__exit__(None, None, None)
    print(f"logs and data under {tmp}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
