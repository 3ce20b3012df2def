"""`dreamq up`, the README's main command: one process tree, embedded Redis, Ctrl-C stops it all."""
import io
import os
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest
import requests
from PIL import Image

from bench.receiver import Receiver
from standardwebhooks import Webhook

from ..webutil import _stop, _up, _wait_ready, wait_for
from dreamq.redis_server import free_port

pytestmark = pytest.mark.slow  # a minute or more: scheduled first (tests/conftest.py)


def test_up_serves_a_dream_and_keeps_jobs_across_restarts(tmp_path, photo):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "up.log", "w")
    # Webhooks to a receiver on 127.0.0.1: allowed here, as a local setup would.
    proc = _up(tmp_path / "data", port, log, DREAMQ_WEBHOOK_ALLOW_PRIVATE="1")
    try:
        with Receiver() as rx:
            _wait_ready(base, proc)
            buf = io.BytesIO()
            Image.fromarray(photo[:96, :96]).save(buf, format="PNG")
            form = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": "1", "iterations": "3",
                    "webhook": rx.url("/done")}
            # Prefer: wait through gunicorn's gevent worker: the answer is the finished job.
            r = requests.post(base + "/api/v1/jobs", files={"image": ("p.png", buf.getvalue(), "image/png")},
                              data=form, headers={"Prefer": "wait=30"}, timeout=40)
            assert r.status_code == 201 and r.json()["status"] == "succeeded", r.text
            assert r.headers["Preference-Applied"] == "wait=30"
            job_url = base + r.headers["Location"]
            png = requests.get(job_url + "/result", timeout=5).content
            assert np.asarray(Image.open(io.BytesIO(png))).shape == (96, 96, 3)
            # The delivery process `dreamq up` started sent `completed`, signed with the secret it
            # made in the data directory.
            (got,) = rx.wait(1, "/done")
            secret = (tmp_path / "data" / "webhook_secret").read_text().strip()
            assert Webhook(secret).verify(got.body, got.headers)["status"] == "succeeded"
    finally:
        _stop(proc)

    # Same data directory: the embedded Redis replays its append-only file.
    proc = _up(tmp_path / "data", port, log)
    try:
        _wait_ready(base, proc)
        assert requests.get(job_url, timeout=5).json()["status"] == "succeeded"
    finally:
        _stop(proc)
    assert "dreamq is up" in (tmp_path / "up.log").read_text()


# -- Supervision: `dreamq up --workers 2` survives the death of any of its processes ----------------
#
# One `dreamq up` for the tests below (module fixture), in file order; each test starts once
# both workers are ready again, and the last one stops it.  Real processes, real Redis, real
# HTTP; every wait polls for its condition.  `-s` prints the measured delays
# (docs/RELIABILITY.md, "Supervision").

LONG = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": "2", "iterations": "60"}
QUICK_FORM = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": "1", "iterations": "3"}


class Up:
    """A running `dreamq up --workers 2` and what the tests look at: HTTP, its Redis, its children."""

    def __init__(self, tmp, image_png: bytes):
        self.tmp, self.image_png = tmp, image_png
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = tmp / "data"
        self.log_path = tmp / "up.log"
        # Max 2 attempts: the crash-loop test fails its job after two dead workers, not three.
        self.proc = _up(self.data, self.port, open(self.log_path, "w"), workers=2, DREAMQ_HEARTBEAT_TTL_S="3",
                        DREAMQ_MAX_ATTEMPTS="2", DREAMQ_PLUGINS="bench.crash_plugin", DREAMQ_INTRA_OP_THREADS="1",
                        DREAMQ_INTER_OP_THREADS="1")

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{(self.data / 'redis' / 'port').read_text().strip()}/0"

    def redis(self):
        import redis

        return redis.Redis.from_url(self.redis_url, socket_timeout=5)

    def log(self) -> str:
        return self.log_path.read_text()

    def children(self, word: str) -> list:
        return [p for p in psutil.Process(self.proc.pid).children() if word in " ".join(p.cmdline())]

    def submit(self, form=LONG) -> str:
        # cache=false: these tests watch workers run each job; an identical job would be answered
        # from the result cache of an earlier one.
        r = requests.post(self.base + "/api/v1/jobs", files={"image": ("p.png", self.image_png, "image/png")},
                          data={**form, "cache": "false"}, timeout=10)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def job(self, job_id: str) -> dict:
        return requests.get(f"{self.base}/api/v1/jobs/{job_id}", timeout=10).json()

    def wait_job(self, job_id, done, timeout=120, what="job state"):
        try:
            return wait_for(lambda: (lambda j: j if done(j) else None)(self.job(job_id)), timeout, what)
        except TimeoutError as exc:  # say where it stands now, and what the processes said
            raise TimeoutError(f"{exc}: job {self.job(job_id)}\n{self.log()[-3000:]}") from None

    def ready_worker_pids(self) -> set[int]:
        from shared.workers import live_workers, ready_workers

        return {w["pid"] for w in ready_workers(live_workers(self.redis()))}

    def two_ready(self) -> bool:
        """/readyz says 2 ready workers, and they are the live children (no heartbeat of a dead one)."""
        assert self.proc.poll() is None, "dreamq up exited"
        try:
            answer = requests.get(self.base + "/readyz", timeout=2)
        except requests.RequestException:
            return False
        workers = {p.pid for p in self.children("dreamq.cli worker")}
        return (answer.status_code == 200 and answer.json()["ready_workers"] == 2 and len(workers) == 2
                and self.ready_worker_pids() == workers)

    def wait_two_ready(self, timeout=180) -> float:
        try:
            wait_for(self.two_ready, timeout, "2 ready workers", every=0.1)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log()[-3000:]}") from None
        return time.monotonic()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def up2(tmp_path_factory, photo):
    buf = io.BytesIO()
    Image.fromarray(photo).resize((96, 96), Image.LANCZOS).save(buf, format="PNG")
    up = Up(tmp_path_factory.mktemp("up2"), buf.getvalue())
    try:
        up.wait_two_ready()
        yield up
    finally:
        up.stop()


def _kill_busy_worker(up) -> dict:
    """Kill (SIGKILL) the worker running a job, mid-job; the job must still succeed."""
    job_id = up.submit()
    job = up.wait_job(job_id, lambda j: j["status"] == "running" and j.get("progress"), 60, "progress")
    pid = int(job["worker"].rsplit(":", 1)[1])
    before = {p.pid for p in up.children("dreamq.cli worker")}
    assert pid in before
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    line = wait_for(lambda: next((ln for ln in up.log().splitlines() if f"(pid {pid}) killed by SIGKILL" in ln), None),
                    10, "the restart log line")
    assert "; restarting in " in line, line
    # Both clocks at once: the job started again (its attempts went to 2), the replacement ready.
    marks = {}

    def watch() -> bool:
        now, job = time.monotonic(), up.job(job_id)
        if job["attempts"] >= 2:
            marks.setdefault("running_again", now)
        if job["status"] in ("succeeded", "failed", "canceled"):
            marks.setdefault("done", job)
        if "ready" not in marks and up.two_ready():
            marks["ready"] = now
        return len(marks) == 3

    try:
        wait_for(watch, 180, "the job done and 2 ready workers")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: {marks} {up.job(job_id)}\n{up.log()[-3000:]}") from None
    done = marks["done"]
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    assert up.proc.poll() is None
    return {"pid": pid, "log": line.split(" WARNING ")[-1],
            "job_running_again_s": round(marks["running_again"] - killed, 1),
            "replacement_ready_s": round(marks["ready"] - killed, 1),
            "ran_again_on": "the other worker" if int(done["worker"].rsplit(":", 1)[1]) in before else "the replacement"}


def test_redact_url_hides_only_the_password():
    from dreamq.up import redact_url

    assert redact_url("redis://:s3cret@queue-host:6379/0") == "redis://:**@queue-host:6379/0"
    assert redact_url("rediss://user:s3cret@[::1]:6380/1") == "rediss://user:**@[::1]:6380/1"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("s3://bucket/prefix") == "s3://bucket/prefix"


def test_up_banner_names_the_web_the_broker_and_the_store(up2):
    log = up2.log()
    assert f"dreamq is up: http://127.0.0.1:{up2.port}/" in log
    assert f"  broker: {up2.redis_url} (embedded; append-only file in {(up2.data / 'redis').resolve()})" in log
    assert f"  store:  file://{(up2.data / 'store').resolve()}" in log
    assert f"  webhooks signed with the secret in {(up2.data / 'webhook_secret').resolve()}" in log


def test_up_restarts_a_worker_killed_mid_job_and_the_job_succeeds_on_its_second_attempt(up2):
    figures = [_kill_busy_worker(up2) for _ in range(3)]
    print("\nworker SIGKILLed mid-job, 3 times:", *figures, sep="\n  ")
    assert up2.log().count("killed by SIGKILL; restarting in") == 3


def _submit_direct(up, crash: bool) -> str:
    """Submit through the jobs module, as the web does, with bench.crash_plugin armed before
    the message is sent."""
    from bench.crash_plugin import CRASH
    from shared.jobs import Jobs
    from shared.queue import make_celery
    from shared.settings import Settings
    from shared.store import open_store

    settings = Settings(_env_file=None, redis_url=up.redis_url, data_dir=up.data)
    r = up.redis()
    jobs = Jobs(r, settings.job_ttl_s, store=open_store(settings), celery=make_celery(settings))
    arm = (lambda job_id: r.set(CRASH + job_id, "1")) if crash else None
    return jobs.submit(dict(QUICK_FORM), up.image_png, before_enqueue=arm).id


def test_up_a_job_that_kills_every_worker_fails_worker_lost_and_the_service_goes_on(up2):
    up2.wait_two_ready()
    kills = up2.log().count("killed by SIGKILL; restarting in")
    job_id = _submit_direct(up2, crash=True)
    # DREAMQ_MAX_ATTEMPTS=2: two workers die on it, then it fails instead of killing a third.
    done = up2.wait_job(job_id, lambda j: j["status"] in ("succeeded", "failed", "canceled"), 120, "the end")
    assert done["status"] == "failed" and done["error"]["code"] == "worker_lost", done
    assert done["attempts"] == 2
    assert up2.log().count("killed by SIGKILL; restarting in") == kills + 2
    up2.wait_two_ready()
    ok = up2.wait_job(up2.submit(QUICK_FORM), lambda j: j["status"] in ("succeeded", "failed"), 60, "the end")
    assert ok["status"] == "succeeded", ok
    assert up2.log().count("killed by SIGKILL; restarting in") == kills + 2  # no third death


def test_up_restarts_its_web_server(up2):
    up2.wait_two_ready()
    old = up2.children("gunicorn")[0]
    killed = time.monotonic()
    old.send_signal(signal.SIGKILL)
    wait_for(lambda: f"web (pid {old.pid}) killed by SIGKILL; restarting in" in up2.log(), 10, "the restart line")

    def new_web_answers() -> bool:
        webs = up2.children("gunicorn")
        try:
            return bool(webs) and webs[0].pid != old.pid and requests.get(up2.base + "/healthz", timeout=2).ok
        except requests.RequestException:
            return False

    wait_for(new_web_answers, 60, "a new web answering", every=0.1)
    print(f"\nweb SIGKILLed: a new one answers after {time.monotonic() - killed:.1f} s")
    ok = up2.wait_job(up2.submit(QUICK_FORM), lambda j: j["status"] in ("succeeded", "failed"), 60, "the end")
    assert ok["status"] == "succeeded", ok


def test_up_restarts_its_embedded_redis_on_the_same_port_and_file_and_a_queued_job_runs(up2):
    """Killed while both workers are busy and a job waits: back on its port and file, the waiting job runs."""
    import uuid

    up2.wait_two_ready()
    busy = [up2.submit() for _ in range(2)]
    for job_id in busy:
        up2.wait_job(job_id, lambda j: j["status"] == "running", 60, "running")
    queued = up2.submit(QUICK_FORM)
    assert up2.job(queued)["status"] == "queued"
    r = up2.redis()
    # Redis writes its append-only file in command order (fsync once a second; a SIGKILL loses
    # only what was not yet written): once a marker written after the submission is in the
    # file, so is the queued job's record and its Celery message.
    marker = uuid.uuid4().hex
    r.set("dreamq:test:marker", marker)
    aof = up2.data / "redis" / "appendonly.aof"
    wait_for(lambda: marker.encode() in aof.read_bytes(), 10, "the marker in the append-only file")

    url = up2.redis_url
    old = up2.children("redis-server")[0]
    killed = time.monotonic()
    old.send_signal(signal.SIGKILL)
    wait_for(lambda: f"redis (pid {old.pid}) killed by SIGKILL; restarting in 1 s" in up2.log(), 10, "the restart line")

    def serving() -> bool:
        import redis

        try:
            return r.get("dreamq:test:marker") == marker.encode()
        except redis.RedisError:
            return False

    wait_for(serving, 30, "Redis back with the marker")
    back = time.monotonic()
    assert up2.redis_url == url and up2.children("redis-server")[0].pid != old.pid  # same port, new process
    finals = ("succeeded", "failed", "canceled")
    done = up2.wait_job(queued, lambda j: j["status"] in finals, 120, "the queued job's end")
    ran = time.monotonic()
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    # The jobs that were running ride out the restart: the workers' Redis calls retry.
    outcomes = [up2.wait_job(job_id, lambda j: j["status"] in finals, 120, "a busy job's end")["status"]
                for job_id in busy]
    print(f"\nembedded Redis SIGKILLed: serving again after {back - killed:.1f} s, "
          f"the queued job succeeded {ran - killed:.1f} s after the kill; the running ones: {outcomes}")
    assert outcomes == ["succeeded", "succeeded"], outcomes
    up2.wait_two_ready()


def test_up_sigterm_stops_web_workers_then_redis_and_the_running_job_goes_back_to_the_queue(up2):
    """The last test of the module: it stops the `dreamq up` of the others."""
    import redis

    from shared.jobs import Jobs
    from shared.queue import QUEUE
    from dreamq.redis_server import EmbeddedRedis

    up2.wait_two_ready()
    job_id = up2.submit()
    up2.wait_job(job_id, lambda j: j["status"] == "running" and j.get("progress"), 60, "progress")
    children = psutil.Process(up2.proc.pid).children(recursive=True)
    up2.proc.send_signal(signal.SIGTERM)
    assert up2.proc.wait(90) == 0
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    stops = [ln.split(" INFO ")[-1].split(" (pid")[0] for ln in up2.log().splitlines() if " INFO stopping " in ln]
    assert stops == ["stopping web", "stopping worker 1", "stopping webhooks", "stopping redis"], stops
    # The job went back to the queue before Redis stopped: its record and a message are in the file.
    # (Its attempts may read 2: the other worker, already stopping too, can still take the message
    # given back and give it back at once; see worker/worker.py `run`.)
    with EmbeddedRedis(up2.data / "redis") as server:
        r = redis.Redis.from_url(server.url)
        job = Jobs(r, 3600).get(job_id)
        assert job.status == "queued" and job.worker in (None, ""), job
        assert r.llen(QUEUE) >= 1
