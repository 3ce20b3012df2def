"""The ceiling of one Redis: no-op jobs through submit -> run -> finish, and what each stage costs.

    .venv/bin/python -m bench.ceiling [--workers 1,2,4,8] [--jobs 2000] [--submitters 4]
                                      [--stage-jobs 500] [--h200-jobs 3] [--idle-s 5]
                                      [--part all|stages|ceiling] [--json out.json]

Embedded Redis servers (dreamq/redis_server.py, append-only as `dreamq up` runs them), one per
part.  Jobs are of the bench-only kind ``noop`` (bench/noop_kind.py, loaded as a DREAMQ_PLUGINS
plugin): the whole lifecycle of a job, with a handler that returns at once.  Redis is read
around each measured window: INFO commandstats (commands by name, those a Lua script runs
inside included), used_memory (bytes kept), used_cpu_sys + used_cpu_user (the CPU the Redis
process spent, less what it spends idle) and aof_current_size (bytes written to its file).

Part 1, stages: one process, no worker process and no Celery consumer.  Each stage runs
``--stage-jobs`` times through the product's own code; every Redis client is in this process,
so the commands sent and the round trips are counted too (a pipeline, or one EVALSHA, is one):

  submit         Jobs.submit, as web/submit.py calls it, with the lifecycle hooks installed
                 (the metrics counters); the Celery message is sent
  run            Worker.run on a Worker built in this process (worker/worker.py: the fair-share
                 pick, the handler, finish, the heartbeats around a job), without Celery: what a
                 worker does for a job once it has its message
  progress, preview, cancel check: one of each, as a running job's worker writes them
  H200-like job  ``--h200-jobs`` noop jobs with the Redis traffic of the default image job on
                 an H200: 60 steps over 1.0 s, 3 previews (docs/PERFORMANCE.md: run_s 1.02 s);
                 then the same with a webhook that wants every event
  web submit     POST /api/v1/jobs on the web app (Flask's test client, in this process): what
                 the web adds (availability, the result-cache key); one client address a request;
                 then those jobs run (their result-cache entry)
  scrape         GET /metrics (web/metrics.py), per scrape
  sweep          Worker.sweep_expired over expired jobs, per job

Part 2, ceiling: K real ``dreamq worker`` processes (DREAMQ_PLUGINS=bench.noop_kind,
DREAMQ_MODELS=vgg16_hed: the worker wants the job's model loaded; the handler never uses it;
the first ones load it while part 1 runs) and, for each K of ``--workers``:

  idle           Redis commands a second with K idle workers (heartbeats, Celery's polling)
  end to end     ``--jobs`` jobs submitted by ``--submitters`` threads (Jobs.submit) while the K
                 workers run them: jobs/s from the first created_at to the last finished_at
  submit only    the workers' consumers paused (celery control cancel_consumer): ``--jobs`` submits
  drain only     the consumers resumed: the queue drained by K workers

Per window: jobs/s, Redis commands per job (by command), Redis CPU per job (so the rate at
which this Redis would be one busy core: 1 / CPU per job), bytes kept and written per job.  On
a machine with few cores the Python processes (submitters, workers) use the CPU long before
Redis does; the Redis CPU per job says where Redis alone would stop.  docs/SCALING.md reads it.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.machine import print_header

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "bench.noop_kind"
H200_JOB = {"steps": 60, "seconds": 1.0, "previews": 3}  # the default image job's traffic on an H200
IGNORED = {"info", "config|resetstat", "config"}  # the bench's own reads of Redis
IDLE_CPU = {"per_s": 0.0}  # Redis's own CPU a second with no client (its cron, the AOF): taken off each window


# -- reading Redis -------------------------------------------------------------------------------

class ClientCount:
    """Round trips and commands that the redis-py clients of this process send (part 1: every client
    is in this process).  Redis's own counts include the commands a Lua script runs inside; these do
    not: one EVALSHA is one command and one round trip, a pipeline of n commands is one round trip."""

    sends = 0
    reads = 0
    installed = False

    @classmethod
    def install(cls) -> None:
        from redis.connection import AbstractConnection

        if cls.installed:
            return
        send, read = AbstractConnection.send_packed_command, AbstractConnection.read_response

        def counted_send(self, *args, **kwargs):
            cls.sends += 1
            return send(self, *args, **kwargs)

        def counted_read(self, *args, **kwargs):
            cls.reads += 1
            return read(self, *args, **kwargs)

        AbstractConnection.send_packed_command = counted_send
        AbstractConnection.read_response = counted_read
        cls.installed = True


@dataclass
class Snapshot:
    calls: dict[str, int]
    memory: int
    cpu_s: float
    at: float
    client: tuple[int, int, int, int] = (0, 0, 0, 0)  # sends, reads before the snapshot's own reads; after
    aof: int = 0  # bytes of the append-only file: what the stage writes to disk


def snapshot(r) -> Snapshot:
    before = (ClientCount.sends, ClientCount.reads)
    stats = r.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    cpu = r.info("cpu")
    memory = int(r.info("memory")["used_memory"])
    aof = int(r.info("persistence").get("aof_current_size", 0))
    return Snapshot(calls, memory, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), time.monotonic(),
                    (*before, ClientCount.sends, ClientCount.reads), aof)


@dataclass
class Window:
    """What Redis did between two snapshots, for ``jobs`` jobs (or scrapes, or writes)."""

    name: str
    jobs: int
    calls: dict[str, int]
    memory: int
    cpu_s: float
    wall_s: float
    extra: dict = field(default_factory=dict)

    @classmethod
    def between(cls, name: str, jobs: int, a: Snapshot, b: Snapshot, wall_s: float | None = None,
                minus: dict[str, int] | None = None, **extra) -> "Window":
        calls = {k: v - a.calls.get(k, 0) - (minus or {}).get(k, 0) for k, v in b.calls.items()}
        calls = {k: v for k, v in calls.items() if v > 0 and k not in IGNORED}
        extra = {"aof_bytes_per_job": round((b.aof - a.aof) / max(1, jobs)), **extra}
        if ClientCount.installed:
            extra = {"round_trips_per_job": round((b.client[0] - a.client[2]) / max(1, jobs), 2),
                     "client_commands_per_job": round((b.client[1] - a.client[3]) / max(1, jobs), 2), **extra}
        span = b.at - a.at
        return cls(name, jobs, calls, b.memory - a.memory, max(0.0, b.cpu_s - a.cpu_s - IDLE_CPU["per_s"] * span),
                   wall_s if wall_s is not None else span, extra)

    @property
    def commands(self) -> int:
        return sum(self.calls.values())

    def per_job(self) -> dict:
        n = max(1, self.jobs)
        return {"jobs": self.jobs, "commands_per_job": round(self.commands / n, 2),
                "bytes_per_job": round(self.memory / n), "redis_cpu_us_per_job": round(self.cpu_s / n * 1e6, 1),
                "wall_s": round(self.wall_s, 3), "jobs_per_s": round(self.jobs / self.wall_s, 1) if self.wall_s else None,
                "redis_core_share": round(self.cpu_s / self.wall_s, 3) if self.wall_s else None,
                "by_command": {k: round(v / n, 2) for k, v in sorted(self.calls.items(), key=lambda kv: -kv[1])},
                **self.extra}


def table(rows: list[list], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def by_command(calls: dict[str, float], top: int = 14) -> str:
    items = [(k, v) for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v >= 0.01][:top]
    return ", ".join(f"{k} {v:g}" for k, v in items)


def photo(side: int = 96) -> bytes:
    from PIL import Image

    from bench.cluster import SAMPLE

    buf = io.BytesIO()
    Image.open(SAMPLE).convert("RGB").resize((side, side), Image.LANCZOS).save(buf, format="PNG")
    return buf.getvalue()


def client_of(i: int) -> str:
    """The client address of the i-th submitter: each its own fair share (shared/jobs.py), as
    distinct callers are in open mode."""
    return f"10.0.0.{i % 8}"


def settings_for(url: str, data_dir: Path, **overrides):
    from shared.settings import Settings

    return Settings(redis_url=url, data_dir=data_dir, plugins=[PLUGIN], models=["vgg16_hed"], **overrides)


def new_jobs(settings):
    import redis

    from shared.jobs import Jobs
    from shared.queue import make_celery
    from shared.store import open_store

    return Jobs(redis.Redis.from_url(settings.redis_url), settings.job_ttl_s, store=open_store(settings),
                celery=make_celery(settings))


def median_record_bytes(r, ids: list[str]) -> int | None:
    from shared import keys

    sizes = [r.memory_usage(keys.job(i), samples=0) for i in ids[:50]]  # 0: every field, not an estimate
    sizes = [s for s in sizes if s]
    return int(statistics.median(sizes)) if sizes else None


# -- part 1: the stages, in this process -----------------------------------------------------------

def run_stages(url: str, data_dir: Path, n: int, h200_jobs: int = 3) -> list[Window]:
    import numpy as np
    import redis

    from shared import hooks, keys
    from shared.images import encode_png
    from shared.queue import QUEUE
    from web import create_app
    from worker.worker import Worker

    ClientCount.install()
    r = redis.Redis.from_url(url)
    r.flushall()
    settings = settings_for(url, data_dir)
    hooks.install(settings)  # as the web's app factory does: the metrics counters hear each submit
    jobs = new_jobs(settings)
    png = photo()
    out: list[Window] = []

    worker = Worker(settings, jobs.celery)  # no models loaded: the noop handler never uses its engine
    worker.dreamers["vgg16_hed"] = object()
    worker.ready = True
    worker.heartbeat()  # its first imports Keras (the heartbeat names the backend): not measured

    # submit
    base = snapshot(r)
    ids = [jobs.submit({}, png, kind="noop", client=client_of(i)).id for i in range(n)]
    a = snapshot(r)
    sub = Window.between("submit", n, base, a)
    sub.extra["record_bytes"] = median_record_bytes(r, ids)
    out.append(sub)
    messages = r.llen(QUEUE)
    dispatch = [r.hget(keys.job(i), "dispatch").decode() for i in ids]
    before = r.info("memory")["used_memory"]
    r.delete(QUEUE)  # no Celery consumer here: the messages would only sit there
    sub.extra["message_bytes"] = round((before - r.info("memory")["used_memory"]) / max(1, messages))

    # run: what a worker does for a job once Celery has handed it the message
    a = snapshot(r)
    outcomes = [str(getattr(o, "value", o)) for o in (worker.run(i, d) for i, d in zip(ids, dispatch))]
    b = snapshot(r)
    run = Window.between("run", n, a, b, outcomes={o: outcomes.count(o) for o in set(outcomes)})
    run.extra["finished_bytes_per_job"] = round((b.memory - base.memory) / n)  # record + indexes, no message
    run.extra["record_bytes"] = median_record_bytes(r, ids)
    out.append(run)

    # one running job: its progress writes, previews, cancel checks
    job = jobs.submit({}, png, kind="noop")
    r.delete(QUEUE)
    assert jobs.start(job.id, job.dispatch, worker.id) == "ok"
    a = snapshot(r)
    for i in range(n):
        jobs.update(job.id, worker.id, progress={"fraction": i / n, "octave": 1, "octaves": 3, "step": i % 20,
                                                 "steps": 20, "loss": 1.2345, "eta_s": 12.3})
    out.append(Window.between("progress write", n, a, snapshot(r)))
    rgb = np.zeros((96, 96, 3), np.uint8)
    a = snapshot(r)
    for _ in range(n):  # worker/worker.py _run's preview()
        url_ = jobs.store.put(job.id, "preview.png", encode_png(rgb))
        jobs.update(job.id, worker.id, preview_url=url_)
    out.append(Window.between("preview", n, a, snapshot(r)))
    a = snapshot(r)
    for _ in range(n):
        jobs.control(job.id)
    out.append(Window.between("cancel check", n, a, snapshot(r)))
    jobs.finish(job.id, worker.id, "succeeded")

    # a job with the traffic of the default image job on an H200 (none: --h200-jobs 0)
    k = h200_jobs
    gpu_ids = [jobs.submit(H200_JOB, png, kind="noop").id for _ in range(k)]
    gpu_dispatch = [r.hget(keys.job(i), "dispatch").decode() for i in gpu_ids]
    r.delete(QUEUE)
    a = snapshot(r)
    for i, d in zip(gpu_ids, gpu_dispatch):
        worker.run(i, d)
    out.append(Window.between("run, H200-like job (60 steps in 1 s, 3 previews)", k, a, snapshot(r),
                              record_bytes=median_record_bytes(r, gpu_ids)))  # with its progress, preview_url

    # the same with a webhook that wants every event: what the lifecycle adds to queue the deliveries
    from shared.webhooks import EVENTS

    hook = {"url": "http://127.0.0.1:9/hook", "events_filter": list(EVENTS)}
    hook_ids = [jobs.submit(H200_JOB, png, kind="noop", webhook=hook).id for _ in range(k)]
    hook_dispatch = [r.hget(keys.job(i), "dispatch").decode() for i in hook_ids]
    r.delete(QUEUE)
    a = snapshot(r)
    for i, d in zip(hook_ids, hook_dispatch):
        worker.run(i, d)
    out.append(Window.between("run, H200-like job with a webhook (every event)", k, a, snapshot(r),
                              deliveries_queued=r.llen("dreamq.webhooks")))

    # the web's submit: one client address per request, as many clients would
    app = create_app(settings)
    client = app.test_client()
    m = min(n, 300)
    # A fingerprint in the heartbeat, as a worker that loaded the model reports: the web then keys
    # the result cache (a lookup, and a key per job), as it does in production.
    worker.fingerprints["vgg16_hed"] = "0" * 64
    worker.heartbeat()
    web_ids_before = {i.decode() for i in r.zrange(keys.JOBS, 0, -1)}
    a = snapshot(r)
    codes = []
    for i in range(m):
        resp = client.post("/api/v1/jobs", data={"kind": "noop", "image": (io.BytesIO(png), "p.png")},
                           headers={"Host": "localhost"},
                           environ_base={"REMOTE_ADDR": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"})
        codes.append(resp.status_code)
    b = snapshot(r)
    out.append(Window.between("web submit (POST /api/v1/jobs)", m, a, b,
                              statuses={c: codes.count(c) for c in set(codes)}))
    r.delete(QUEUE)
    web_ids = [i.decode() for i in r.zrange(keys.JOBS, 0, -1) if i.decode() not in web_ids_before]
    web_dispatch = [r.hget(keys.job(i), "dispatch").decode() for i in web_ids]
    c = snapshot(r)
    outcomes = [str(getattr(o, "value", o)) for o in (worker.run(i, d) for i, d in zip(web_ids, web_dispatch))]
    d = snapshot(r)
    web_run = Window.between("run (jobs the web submitted: a result-cache entry each)", len(web_ids), c, d,
                             outcomes={o: outcomes.count(o) for o in set(outcomes)})
    web_run.extra["finished_bytes_per_job"] = round((d.memory - a.memory) / max(1, len(web_ids)))
    out.append(web_run)

    # a metrics scrape (per scrape, not per job), with the jobs above in Redis
    scrapes = 20
    a = snapshot(r)
    for _ in range(scrapes):
        assert client.get("/metrics", headers={"Host": "localhost"}).status_code == 200
    out.append(Window.between("metrics scrape (per scrape)", scrapes, a, snapshot(r)))

    # the expiry sweep, as if the TTL had passed for every job above
    expired = r.zcard(keys.JOBS)
    worker._last_sweep = 0.0
    a = snapshot(r)
    worker.sweep_expired(every_s=0, now=time.time() + settings.job_ttl_s + 60)
    swept = expired - r.zcard(keys.JOBS)
    out.append(Window.between("sweep (per expired job)", swept, a, snapshot(r)))
    worker.stop_heartbeat()
    return out


# -- part 2: the ceiling, real worker processes ----------------------------------------------------

def submit_many(settings, n: int, threads: int, png: bytes, params: dict | None = None) -> tuple[list[str], float]:
    """``n`` submits by ``threads`` threads, each with its own connection and Celery app; (ids, seconds)."""
    per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    ids: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    clients = [new_jobs(settings) for _ in range(threads)]

    def submit(jobs, count, client):
        mine = []
        try:
            for _ in range(count):
                mine.append(jobs.submit(dict(params or {}), png, kind="noop", client=client).id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        with lock:
            ids.extend(mine)

    t0 = time.monotonic()
    ts = [threading.Thread(target=submit, args=(c, k, client_of(i))) for i, (c, k) in enumerate(zip(clients, per))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return ids, time.monotonic() - t0


def wait_finished(r, ids: list[str], timeout: float) -> tuple[dict[str, int], float, float, int]:
    """Wait until none is queued or running; (statuses, first created_at, last finished_at, polls)."""
    from shared import keys

    polls = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        polls += 1
        if not r.zcard(keys.QUEUED_JOBS) and not r.zcard(keys.RUNNING_JOBS):
            break
        time.sleep(0.05)
    else:
        raise TimeoutError(f"jobs still queued or running after {timeout} s")
    statuses: dict[str, int] = {}
    first, last = float("inf"), 0.0
    with r.pipeline(transaction=False) as p:
        for i in ids:
            p.hmget(keys.job(i), "status", "created_at", "finished_at")
        rows = p.execute()
    for status, created, finished in rows:
        name = status.decode() if status else "missing"
        statuses[name] = statuses.get(name, 0) + 1
        if created:
            first = min(first, float(created))
        if finished:
            last = max(last, float(finished))
    return statuses, first, last, polls


def pause(celery, on: bool, expect: int) -> int:
    from shared.queue import QUEUE

    control = celery.control.cancel_consumer if on else celery.control.add_consumer
    with celery.connection_for_write() as conn:
        replies = control(QUEUE, reply=True, timeout=5, limit=expect, connection=conn)
    if len(replies) != expect:
        print(f"  warning: {len(replies)} of {expect} workers answered {'cancel' if on else 'add'}_consumer")
    return len(replies)


def ceiling_service(url: str, data_dir: Path):
    """Real `dreamq worker` processes on ``url`` (bench/cluster.py), started with ``start_worker``."""
    from bench.cluster import Service

    # Heartbeats at the production period (2 s; bench.cluster's default is the tests' 0.5 s); TTL 30 s
    # so that an idle worker, while the consumers are paused, re-dispatches nothing (the grace is 2 TTL).
    return Service(url, data_dir, {"DREAMQ_MODELS": "vgg16_hed", "DREAMQ_PLUGINS": PLUGIN,
                                   "DREAMQ_HEARTBEAT_S": "2", "DREAMQ_HEARTBEAT_TTL_S": "30"})


def run_ceiling(svc, counts: list[int], n: int, submitters: int, timeout: float,
                idle_s: float = 5.0) -> list[dict]:
    from bench.cluster import wait_for
    from shared import hooks, keys
    from shared.queue import QUEUE

    settings = settings_for(svc.settings.redis_url, svc.settings.data_dir)
    hooks.install(settings)
    r = svc.redis
    png = photo()
    results = []
    for k in counts:
        t = time.monotonic()
        for _ in range(k - len(svc.procs)):
            svc.start_worker(wait=False)  # side by side: they load their model in parallel
        for proc in svc.procs:
            svc.wait_ready(proc.pid)
        print(f"  {k} worker(s) ready, after {time.monotonic() - t:.1f} s of waiting", flush=True)
        rss = [_rss_mb(p.pid) for p in svc.procs]
        row: dict = {"workers": k, "worker_rss_mb": round(statistics.median(rss)) if rss else None,
                     "load_average": round(os.getloadavg()[0], 2)}

        time.sleep(min(2.5, idle_s))  # the workers' first heartbeats and Celery's start-up chatter pass
        a = snapshot(r)
        time.sleep(idle_s)
        idle = Window.between("idle", 1, a, snapshot(r))
        row["idle_commands_per_s"] = round(idle.commands / idle.wall_s, 1)
        row["idle_by_command_per_s"] = {c: round(v / idle.wall_s, 2) for c, v in
                                        sorted(idle.calls.items(), key=lambda kv: -kv[1])}

        # end to end: submitting while the workers run
        a = snapshot(r)
        ids, submit_s = submit_many(settings, n, submitters, png)
        statuses, first, last, polls = wait_finished(r, ids, timeout)
        b = snapshot(r)
        e2e = Window.between("end to end", n, a, b, wall_s=last - first, minus={"zcard": 2 * polls},
                             statuses=statuses, submit_s=round(submit_s, 3),
                             broker_left=r.llen(QUEUE))
        e2e.extra["bytes_per_finished_job"] = round((b.memory - a.memory) / n)
        e2e.extra["record_bytes"] = median_record_bytes(r, ids)
        row["end_to_end"] = e2e.per_job()

        # submit only, with the consumers paused; then drain only
        pause(svc.celery, True, k)
        time.sleep(0.2)  # a message fetched just before the pause is run and finished
        wait_for(lambda: not r.zcard(keys.RUNNING_JOBS), 30, "the running jobs to finish")
        a = snapshot(r)
        ids, submit_s = submit_many(settings, n, submitters, png)
        b = snapshot(r)
        sub = Window.between("submit only", n, a, b, wall_s=submit_s, queued=r.llen(QUEUE))
        sub.extra["bytes_per_queued_job"] = round((b.memory - a.memory) / n)
        row["submit_only"] = sub.per_job()
        t_resume = time.time()
        pause(svc.celery, False, k)
        statuses, _, last, polls = wait_finished(r, ids, timeout)
        c = snapshot(r)
        row["drain_only"] = Window.between("drain only", n, b, c, wall_s=last - t_resume,
                                           minus={"zcard": 2 * polls}, statuses=statuses).per_job()
        results.append(row)
        _print_row(row)
    return results


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _print_row(row: dict) -> None:
    e, s, d = row["end_to_end"], row["submit_only"], row["drain_only"]
    print(f"  K={row['workers']}: end to end {e['jobs_per_s']} jobs/s ({e['commands_per_job']} commands, "
          f"{e['redis_cpu_us_per_job']} us Redis CPU, {e['bytes_per_finished_job']} B a finished job; "
          f"{e['statuses']}); submit only {s['jobs_per_s']}/s; drain only {d['jobs_per_s']}/s; "
          f"idle {row['idle_commands_per_s']} commands/s", flush=True)


def print_report(stages: list[Window], ceiling: list[dict]) -> None:
    if stages:
        print("\n## Stages (one process; per job unless the stage says otherwise)\n")
        rows = []
        for w in stages:
            p = w.per_job()
            rows.append([w.name, w.jobs, p["commands_per_job"], p.get("client_commands_per_job"),
                         p.get("round_trips_per_job"), p["redis_cpu_us_per_job"], p["bytes_per_job"],
                         p["aof_bytes_per_job"], by_command(p["by_command"])])
        print(table(rows, ["stage", "n", "commands (Redis's count, Lua's inside)", "commands sent",
                           "round trips", "Redis CPU µs", "bytes (used_memory Δ)", "AOF bytes", "by command"]))
        sub, run = stages[0], stages[1]
        like = next((w for w in stages if w.name.startswith("run, H200-like job (")), run)
        print(f"\nrecord (MEMORY USAGE, median): queued {sub.extra.get('record_bytes')} B, finished "
              f"{run.extra.get('record_bytes')} B, finished H200-like {like.extra.get('record_bytes')} B; Celery message {sub.extra.get('message_bytes')} B; "
              f"a finished job's bytes (record + indexes, no message) {run.extra.get('finished_bytes_per_job')} B; "
              f"run outcomes {run.extra.get('outcomes')}")
        for w in stages[2:]:
            if "finished_bytes_per_job" in w.extra:
                print(f"{w.name}: a finished job's bytes (record + indexes + cache keys, no message) "
                      f"{w.extra['finished_bytes_per_job']} B")
        for w in stages:
            for key in ("statuses", "deliveries_queued"):
                if key in w.extra:
                    print(f"{w.name}: {key} {w.extra[key]} (for {w.jobs})")
    if ceiling:
        print("\n## Ceiling (real worker processes)\n")
        rows = []
        for row in ceiling:
            e, s, d = row["end_to_end"], row["submit_only"], row["drain_only"]
            rows.append([row["workers"], e["jobs_per_s"], e["commands_per_job"], e["redis_cpu_us_per_job"],
                         round(1e6 / e["redis_cpu_us_per_job"]) if e["redis_cpu_us_per_job"] else "",
                         e["redis_core_share"], e["bytes_per_finished_job"], s["jobs_per_s"], s["commands_per_job"],
                         s["bytes_per_queued_job"], d["jobs_per_s"], d["commands_per_job"],
                         row["idle_commands_per_s"], e["aof_bytes_per_job"]])
        print(table(rows, ["workers", "e2e jobs/s", "e2e commands/job", "Redis CPU µs/job",
                           "Redis-bound jobs/s (1 core)", "Redis core share", "bytes/finished job",
                           "submit-only jobs/s", "submit commands/job", "bytes/queued job", "drain jobs/s",
                           "drain commands/job", "idle commands/s", "AOF bytes/job"]))
        last = ceiling[-1]
        print(f"\nend to end at {last['workers']} workers, commands per job: "
              f"{by_command(last['end_to_end']['by_command'], 30)}")
        print(f"drain only at {last['workers']} workers, commands per job: "
              f"{by_command(last['drain_only']['by_command'], 30)}")
        print(f"idle at {last['workers']} workers, commands/s: {by_command(last['idle_by_command_per_s'], 30)}")
        print(f"worker RSS (median) {last['worker_rss_mb']} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4,8", help="worker counts, comma-separated, ascending")
    ap.add_argument("--jobs", type=int, default=2000, help="jobs per window of part 2")
    ap.add_argument("--submitters", type=int, default=4, help="submitting threads in part 2")
    ap.add_argument("--stage-jobs", type=int, default=500, help="repeats of each stage of part 1")
    ap.add_argument("--h200-jobs", type=int, default=3, help="jobs of the H200-like stage of part 1 (1 s each)")
    ap.add_argument("--part", choices=("all", "stages", "ceiling"), default="all")
    ap.add_argument("--timeout", type=float, default=600, help="seconds a window may take, at most")
    ap.add_argument("--idle-s", type=float, default=5.0, help="seconds of the idle window of part 2")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print_header()

    import redis

    from bench import noop_kind
    from dreamq.redis_server import EmbeddedRedis

    noop_kind.install()  # before the web's modules read the kinds
    counts = sorted({int(x) for x in args.workers.split(",") if x.strip()})
    tmp = Path(tempfile.mkdtemp(prefix="dreamq-ceiling-"))
    server = EmbeddedRedis(tmp / "redis").start()
    info = redis.Redis.from_url(server.url).info("server")
    print(f"redis {info['redis_version']} (embedded, appendonly everysec), {args}", flush=True)
    a = snapshot(redis.Redis.from_url(server.url))
    time.sleep(min(3.0, args.idle_s))
    b = snapshot(redis.Redis.from_url(server.url))
    IDLE_CPU["per_s"] = (b.cpu_s - a.cpu_s) / (b.at - a.at)
    print(f"Redis with no client: {IDLE_CPU['per_s'] * 1e3:.2f} ms CPU a second (taken off every window below)")
    stages: list[Window] = []
    ceiling: list[dict] = []
    servers, svc = [server], None
    try:
        if args.part in ("all", "ceiling"):
            # Part 2's own Redis, its counts untouched by part 1; its first workers load their model
            # (seconds of TensorFlow) while part 1 runs, their idle traffic going to that Redis.
            servers.append(EmbeddedRedis(tmp / "redis-ceiling").start())
            svc = ceiling_service(servers[-1].url, tmp / "ceiling")
            for _ in range(counts[0]):
                svc.start_worker(wait=False)
        if args.part in ("all", "stages"):
            stages = run_stages(server.url, tmp / "stages", args.stage_jobs, args.h200_jobs)
        if svc is not None:
            ceiling = run_ceiling(svc, counts, args.jobs, args.submitters, args.timeout, args.idle_s)
    finally:
        if svc is not None:
            svc.stop()
        for s in servers:
            s.stop()
    print_report(stages, ceiling)
    if args.json:
        args.json.write_text(json.dumps({"stages": [{"name": w.name, **w.per_job()} for w in stages],
                                         "ceiling": ceiling}, indent=1))
    bad = [f"{row['workers']} workers, {part}: {row[part]['statuses']}" for row in ceiling
           for part in ("end_to_end", "drain_only") if set(row[part]["statuses"]) != {"succeeded"}]
    bad += [f"{w.name}: {w.extra[k]}" for w in stages for k, ok in (("outcomes", {"succeeded"}), ("statuses", {202}))
            if k in w.extra and set(w.extra[k]) != ok]
    print("\n".join(["", *bad, "FAILED"]) if bad else "\nOK")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
