"""Celery's own tools against a real dreamq worker: `celery -A worker worker` runs one,
`celery inspect` sees it while it works, its events are what Flower shows, a process with
no dreamq Worker gives messages back, and `dreamq worker --check` reports it.

One worker for the module, started the way Celery's docs teach (`celery -A worker worker
-Q dreamq`, the real CLI), and started *before* its Redis: it waits, then connects.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dreamq.redis_server import EmbeddedRedis, free_port

from ..conftest import QUICK, ROOT, Service
from .test_queue import in_its_steps, until

pytestmark = pytest.mark.slow  # a minute or more: scheduled first (tests/conftest.py)

NODE = f"celery@{socket.gethostname()}"  # Celery's default node name: no -n given
# 4,000 steps at one scale, never cut short by max_loss: minutes on any CPU, so it still runs
# when asked about; canceled (promptly, between two steps) once it has served.
LONG = {**QUICK, "octaves": 8, "octave_scale": 1.0, "iterations": 500, "max_loss": "none"}


def celery(*args: str) -> list[str]:
    """The `celery` command of this venv (the same program as `python -m celery`)."""
    exe = Path(sys.executable).with_name("celery")
    return [str(exe)] + list(args) if exe.exists() else [sys.executable, "-m", "celery", *args]


def answers_ping(svc: Service, node: str) -> bool:
    with svc.celery.connection_for_write() as conn:
        return bool(svc.celery.control.ping(destination=[node], timeout=1, connection=conn))


@pytest.fixture(scope="module")
def late(tmp_path_factory):
    """A `celery -A worker worker -Q dreamq` process started before its Redis, then the Redis."""
    tmp = tmp_path_factory.mktemp("celery_tools")
    port = free_port()
    svc = Service(f"redis://127.0.0.1:{port}/0", tmp, {})
    log = svc.logs / "celery-worker.log"
    proc = subprocess.Popen(celery("-A", "worker", "worker", "-Q", "dreamq", "--loglevel", "INFO"),
                            env=svc.env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    svc.procs.append(proc)
    server = EmbeddedRedis(tmp / "redis", port=port)
    try:
        # Redis is started only once the worker has tried twice and is still waiting.
        until(lambda: proc.poll() is not None or "unreachable (attempt 2" in log.read_text(), timeout=60,
              what="a second attempt to reach Redis")
        assert proc.poll() is None, svc.read_logs()
        server.start()
        until(lambda: proc.poll() is not None or ((svc.worker_info(proc.pid) or {}).get("ready")
                                                  and answers_ping(svc, NODE)),
              timeout=180, what="the worker ready")
        assert proc.poll() is None, svc.read_logs()
        svc.proc, svc.log = proc, log
        yield svc
    finally:
        svc.stop()
        server.stop()


def test_a_worker_started_before_redis_waits_then_connects(late):
    text = late.log.read_text()
    # Each failed try is logged with its delay, and the delays grow.
    assert "unreachable (attempt 1" in text and "trying again in 0.5 s" in text and "trying again in 1.0 s" in text
    assert "Redis answered at attempt" in text
    info = late.worker_info(late.proc.pid)
    assert info["ready"] and info["models"]["vgg16_hed"] == "ready"


class Events:
    """Celery events as Flower receives them, folded into the same ``State`` that Flower keeps."""

    def __init__(self, app):
        self.state = app.events.State()
        self.seen: list[dict] = []
        self.lock = threading.Lock()
        self.receiver = None

        def on_event(event):
            with self.lock:
                self.seen.append(event)
                self.state.event(event)

        def capture():
            with app.connection_for_read() as conn:
                self.receiver = app.events.Receiver(conn, handlers={"*": on_event})
                self.receiver.capture(limit=None, timeout=None, wakeup=False)

        threading.Thread(target=capture, daemon=True).start()

    def of_type(self, kind: str) -> list[dict]:
        with self.lock:
            return [e for e in self.seen if e["type"] == kind]

    def stop(self):
        if self.receiver is not None:
            self.receiver.should_stop = True


def test_celery_worker_runs_a_job_and_sends_the_events_flower_shows(late, tiny_photo):
    events = Events(late.celery)
    try:
        # A worker heartbeat received: the subscription is live, and Celery's heartbeats are on.
        until(lambda: any(e["hostname"] == NODE for e in events.of_type("worker-heartbeat")), timeout=30,
              what="a worker-heartbeat event")
        job_id = late.submit(tiny_photo, **QUICK)
        job = late.wait(job_id)
        assert job.status == "succeeded" and job.worker == f"{socket.gethostname()}:{late.proc.pid}"

        def the_task():
            for task in events.state.tasks.values():
                if task.state == "SUCCESS" and job_id in (task.args or ""):
                    return task
        task = until(the_task, timeout=30, what="the task's success event")
        assert task.name == "dreamq.dream" and task.worker.hostname == NODE
        assert task.runtime > 0 and task.sent and task.received and task.started and task.succeeded
        assert events.state.workers[NODE].alive
    finally:
        events.stop()


def inspect(svc: Service, what: str) -> dict:
    out = subprocess.run(celery("-A", "worker", "inspect", what, "--json", "--timeout", "5"), env=svc.env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[0])


def test_inspect_active_and_ping_answer_while_a_job_runs(late, tiny_photo):
    job_id = late.submit(tiny_photo, **LONG)
    in_its_steps(late, job_id)
    try:
        active = inspect(late, "active")[NODE]
        assert [t["args"][0] for t in active] == [job_id] and active[0]["name"] == "dreamq.dream"
        assert inspect(late, "ping")[NODE] == {"ok": "pong"}
        assert late.state.get(job_id).status == "running"  # both answered while it ran
    finally:
        late.state.cancel(job_id)
    assert late.wait(job_id).status == "canceled"


def test_a_task_reaching_a_process_without_a_dreamq_worker_goes_back_to_the_queue(late, tiny_photo, tmp_path):
    # The way Celery's docs teach: a module whose app has our task, run with `celery -A module worker`.
    (tmp_path / "bare_app.py").write_text(
        "from shared.queue import make_celery\nfrom worker import tasks\n\napp = make_celery()\ntasks.register(app)\n")
    log = late.logs / "bare.log"
    bare = subprocess.Popen(celery("-A", "bare_app", "worker", "-Q", "dreamq", "-P", "solo", "-n", "bare@%h",
                                   "--loglevel", "INFO"),
                            env={**late.env, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}, cwd=ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        until(lambda: bare.poll() is not None or answers_ping(late, f"bare@{socket.gethostname()}"), timeout=60,
              what="the bare worker consuming")
        assert bare.poll() is None, log.read_text()
        busy = late.submit(tiny_photo, **LONG)  # the real worker is busy: the bare one takes the next
        in_its_steps(late, busy)
        job_id = late.submit(tiny_photo, **QUICK)
        until(lambda: f"job {job_id}: this process has no dreamq Worker" in log.read_text(), timeout=60,
              what="the bare worker rejecting the job")
        late.state.cancel(busy)
        job = late.wait(job_id, timeout=120)
        assert job.status == "succeeded" and job.attempts == 1
        assert job.worker == f"{socket.gethostname()}:{late.proc.pid}"
    finally:
        bare.send_signal(signal.SIGTERM)
        bare.wait(30)


def dreamq_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dreamq.cli", "worker", "--check"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_dreamq_worker_check_follows_this_hosts_heartbeat(late):
    out = dreamq_check(late.env)
    assert out.returncode == 0 and out.stdout.startswith("healthy"), out.stdout + out.stderr
    out = dreamq_check({**late.env, "DREAMQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert out.returncode == 1 and "unhealthy: Redis unreachable" in out.stdout, out.stdout + out.stderr
