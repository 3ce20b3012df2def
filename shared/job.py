"""The job record in Redis: the single source of truth for a job's state.

Celery only carries ``(job_id, dispatch token)``; what a job is, where it
stands and where its pictures are lives here.  Every state change is one Lua
script, so the web and a worker can never overwrite each other (e.g. a cancel
racing completion), and a stale or duplicate delivery can never run a job.

States: queued -> running -> succeeded | failed | canceled (and queued -> canceled).
A running job whose worker is lost goes back to queued with a new dispatch
token, until ``max_attempts`` starts, then fails with ``worker_lost``.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis

PREFIX = "dreamq"
JOBS = f"{PREFIX}:jobs"  # zset id -> created_at (listing, expiry)
QUEUED = f"{PREFIX}:queued"  # zset id -> when its current message was sent (position, depth, stranded jobs)
RUNNING = f"{PREFIX}:running"  # zset id -> started_at (lost-worker detection)

QUEUED_S, RUNNING_S, SUCCEEDED, FAILED, CANCELED = "queued", "running", "succeeded", "failed", "canceled"
FINISHED = (SUCCEEDED, FAILED, CANCELED)
JSON_FIELDS = ("params", "progress", "error", "metrics", "warnings")


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def is_job_id(value: str) -> bool:
    """Only canonical UUID4 strings are job ids (anything else is a 404, never a path)."""
    try:
        return len(value) == 36 and str(uuid.UUID(value, version=4)) == value
    except (ValueError, AttributeError, TypeError):
        return False


@dataclass
class Job:
    id: str
    status: str
    params: dict[str, Any]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    enqueued_at: float | None = None
    attempts: int = 0
    worker: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    error: dict[str, str] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what ran differently from what was asked, and why
    input_url: str | None = None
    preview_url: str | None = None
    result_url: str | None = None
    dispatch: str | None = None
    cancel_requested: bool = False
    owner: str | None = None  # a hash of the token that created the job (never the token); None: no tokens set

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> "Job":
        d = {k.decode(): v.decode() for k, v in raw.items()}
        floats = ("created_at", "started_at", "finished_at", "enqueued_at")
        kw: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name not in d or d[name] == "":
                continue
            value: Any = d[name]
            if name in JSON_FIELDS:
                value = json.loads(value)
            elif name in floats:
                value = float(value)
            elif name == "attempts":
                value = int(value)
            elif name == "cancel_requested":
                value = value == "1"
            kw[name] = value
        kw.setdefault("params", {})
        return cls(**kw)

    def public(self) -> dict[str, Any]:
        """The job as clients see it (the web adds links and queue position)."""
        progress = {"fraction": 0.0, "octave": None, "octaves": self.params.get("octaves"), "step": None,
                    "steps": self.params.get("iterations"), "loss": None, "eta_s": None}
        progress.update(self.progress)
        if self.status == SUCCEEDED:
            progress["fraction"] = 1.0
            progress["eta_s"] = 0.0
        return {
            "id": self.id, "status": self.status, "progress": progress, "params": self.params,
            "created_at": _iso(self.created_at), "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at), "attempts": self.attempts, "worker": self.worker,
            "error": self.error, "warnings": self.warnings,
            "metrics": {"queue_s": self.metrics.get("queue_s"), "run_s": self.metrics.get("run_s"),
                        **{k: self.metrics[k] for k in ("dream_s", "precision") if k in self.metrics}},
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


# -- atomic transitions --------------------------------------------------------
# KEYS[1] = job hash.  Each returns the status the job had (and "ok" when it acted).

_START = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if s ~= 'queued' or redis.call('HGET', KEYS[1], 'dispatch') ~= ARGV[1] then return s end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[2], 'started_at', ARGV[3],
           'progress', '{}', 'cancel_requested', '')
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 'ok'
"""

_FINISH = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if s ~= 'running' or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then return s end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZREM', KEYS[2], ARGV[2])
return 'ok'
"""

_UPDATE_RUNNING = """
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= 'running' or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then return s or 'missing' end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 'ok'
"""

_CANCEL = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[1],
             'error', '{"code": "canceled", "message": "canceled before it started"}')
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 'canceled'
end
if s == 'running' then redis.call('HSET', KEYS[1], 'cancel_requested', '1') end
return s
"""

# A canceled queued job's Celery message would only be skipped by a worker, but while it
# waits, the broker list counts one job more than will run (and an autoscaler reading it
# would start a worker for nothing).  KEYS[1] = the Celery list (kombu LPUSHes the JSON
# envelope there); ARGV[1] = job id, ARGV[2] = task name.  A message matches when its task
# is ours and its args/kwargs repr names the job: the body itself is base64.  LREM of the
# exact message is safe: one a worker already took is simply no longer there.
_DROP_MESSAGES = """
local removed = 0
for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.find(raw, ARGV[1], 1, true) then
    local ok, msg = pcall(cjson.decode, raw)
    local h = ok and type(msg) == 'table' and msg.headers
    if type(h) == 'table' and h.task == ARGV[2] then
      local a, k = h.argsrepr, h.kwargsrepr
      if (type(a) == 'string' and string.find(a, ARGV[1], 1, true))
          or (type(k) == 'string' and string.find(k, ARGV[1], 1, true)) then
        removed = removed + redis.call('LREM', KEYS[1], 1, raw)
      end
    end
  end
end
return removed
"""

_REQUEUE = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then redis.call('ZREM', KEYS[3], ARGV[5]) return 'missing' end
if s ~= 'running' or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then return s end
redis.call('ZREM', KEYS[3], ARGV[5])
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if attempts >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[3], 'error', ARGV[6])
  return 'failed'
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'dispatch', ARGV[2], 'worker', '', 'enqueued_at', ARGV[3],
           'progress', '{}')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
return 'queued'
"""

# A queued job whose broker message is gone gets a new dispatch token, so that a new message
# can run it (worker/worker.py says when).  Only while it is still queued with the token the
# caller saw, and only when its current message was sent before the cutoff (its QUEUED score):
# of two workers deciding at once, one acts; a job that just started or was just dispatched
# again is left alone.  The score becomes now; ``enqueued_at`` stays, so ``queue_s`` counts the
# whole wait.  KEYS: job hash, QUEUED.  ARGV: token seen, new token, now, job id, cutoff.
_REDISPATCH = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then redis.call('ZREM', KEYS[2], ARGV[4]) return 'missing' end
if s ~= 'queued' or redis.call('HGET', KEYS[1], 'dispatch') ~= ARGV[1] then return s end
local sent = redis.call('ZSCORE', KEYS[2], ARGV[4])
if sent and tonumber(sent) > tonumber(ARGV[5]) then return 'recent' end
redis.call('HSET', KEYS[1], 'dispatch', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 'ok'
"""


# KEYS: job hash, JOBS, QUEUED, the client's set of queued ids.  ARGV: max queued (0: no cap),
# ttl, id, created_at, enqueued_at, max queued for this client (0: no cap), then field/value pairs.
# The client set is pruned here of ids no longer queued (started, canceled, expired), so the
# scripts that move jobs need not know about clients.  1: saved; 0: queue full; -1: client full.
_SAVE_NEW = """
if tonumber(ARGV[1]) > 0 and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[1]) then return 0 end
local per_client = tonumber(ARGV[6])
if per_client > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    if not redis.call('ZSCORE', KEYS[3], id) then redis.call('ZREM', KEYS[4], id) end
  end
  if redis.call('ZCARD', KEYS[4]) >= per_client then return -1 end
end
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
if per_client > 0 then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[3])
  redis.call('EXPIRE', KEYS[4], ARGV[2])
end
return 1
"""


def client_queued_key(client: str) -> str:
    return f"{PREFIX}:client:{client}:queued"


class JobQueueState:
    """Operations on job records; one instance per Redis connection."""

    def __init__(self, client: redis.Redis, ttl_s: int = 7 * 24 * 3600, store=None):
        self.r = client
        self.ttl_s = ttl_s
        self.store = store  # when given, canceling a queued job deletes its stored input
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._update = client.register_script(_UPDATE_RUNNING)
        self._cancel = client.register_script(_CANCEL)
        self._drop_messages = client.register_script(_DROP_MESSAGES)
        self._requeue = client.register_script(_REQUEUE)
        self._redispatch = client.register_script(_REDISPATCH)
        self._save_new = client.register_script(_SAVE_NEW)

    # web side
    def create(self, params: dict[str, Any], job_id: str | None = None, warnings: list[str] | None = None) -> Job:
        now = time.time()
        job = Job(id=job_id or str(uuid.uuid4()), status=QUEUED_S, params=params, created_at=now,
                  enqueued_at=now, dispatch=uuid.uuid4().hex, warnings=list(warnings or []))
        return job

    def save_new(self, job: Job, max_queued: int = 0, client: str | None = None, max_per_client: int = 0) -> bool:
        """Write a new queued job record and its index entries atomically; see ``try_save_new``."""
        return self.try_save_new(job, max_queued, client, max_per_client) == "ok"

    def try_save_new(self, job: Job, max_queued: int = 0, client: str | None = None,
                     max_per_client: int = 0) -> str:
        """Write a new queued job record and its index entries atomically: ``ok``, else nothing
        written and ``queue_full`` or ``client_full``.

        With ``max_queued``, only while fewer jobs are queued; with ``client`` and
        ``max_per_client``, only while that client has fewer queued.  Both are checked in the
        same script as the write, so concurrent submissions cannot overshoot either cap.
        """
        mapping = {"id": job.id, "status": job.status, "params": json.dumps(job.params), "created_at": job.created_at,
                   "enqueued_at": job.enqueued_at, "attempts": 0, "dispatch": job.dispatch,
                   "input_url": job.input_url or "", "progress": "{}", "metrics": "{}",
                   "warnings": json.dumps(job.warnings)}
        if getattr(job, "owner", None) and "owner" not in mapping:
            mapping["owner"] = job.owner
        per_client = max_per_client if client is not None else 0
        args: list[Any] = [max_queued, self.ttl_s, job.id, job.created_at, job.enqueued_at, per_client]
        for k, v in mapping.items():
            args += [k, v]
        keys = [job_key(job.id), JOBS, QUEUED, client_queued_key(client or "")]
        return {1: "ok", 0: "queue_full", -1: "client_full"}[int(self._save_new(keys=keys, args=args))]

    def client_queued(self, client: str) -> int:
        """How many of the client's jobs are still queued (read only: a cheap early answer)."""
        ids = self.r.zrange(client_queued_key(client), 0, -1)
        if not ids:
            return 0
        with self.r.pipeline(transaction=False) as p:
            for i in ids:
                p.zscore(QUEUED, i)
            return sum(score is not None for score in p.execute())

    def get(self, job_id: str) -> Job | None:
        if not is_job_id(job_id):
            return None
        raw = self.r.hgetall(job_key(job_id))
        return Job.from_redis(raw) if raw else None

    def cancel(self, job_id: str) -> str:
        """``canceled`` (was queued), ``running`` (asked to stop), a finished state, or ``missing``.

        A job canceled while queued also loses its Celery message(s), so that the broker
        list, like ``queue_depth``, counts only jobs that will run, and its stored input.
        """
        outcome = self._cancel(keys=[job_key(job_id), QUEUED], args=[time.time(), job_id]).decode()
        if outcome == CANCELED:
            from .queue import QUEUE, TASK  # here, not at the top: shared.queue may import this module

            try:
                self.drop_messages(job_id, QUEUE, TASK)
            except redis.RedisError as exc:  # the cancel stands; a worker would skip the message anyway
                logging.getLogger(__name__).warning("job %s canceled; its broker message stays: %s", job_id, exc)
            if self.store is not None:
                # No worker will read the input now (start needs a queued job): without this,
                # cancel-and-resubmit would pile up inputs for the whole TTL.
                try:
                    self.store.delete(job_id)
                except Exception as exc:  # noqa: BLE001 — the expiry sweep deletes it later
                    logging.getLogger(__name__).warning("job %s canceled; its input stays: %s", job_id, exc)
        return outcome

    def drop_messages(self, job_id: str, queue: str, task: str) -> int:
        """Remove the job's waiting messages from the Celery list ``queue``; returns how many."""
        return int(self._drop_messages(keys=[queue], args=[job_id, task]))

    def queue_position(self, job_id: str) -> int | None:
        rank = self.r.zrank(QUEUED, job_id)
        return None if rank is None else rank + 1

    def queue_depth(self) -> int:
        return self.r.zcard(QUEUED)

    def list(self, limit: int = 20, before: float | None = None) -> list[Job]:
        """Newest first; ``before`` is the created_at of the last job of the previous page."""
        hi = f"({before}" if before is not None else "+inf"
        ids = self.r.zrevrangebyscore(JOBS, hi, "-inf", start=0, num=limit)
        jobs = []
        for raw_id in ids:
            job = self.get(raw_id.decode())
            if job is None:
                self.r.zrem(JOBS, raw_id)  # expired record
            else:
                jobs.append(job)
        return jobs

    # worker side
    def start(self, job_id: str, dispatch: str, worker: str) -> str:
        return self._start(keys=[job_key(job_id), QUEUED, RUNNING],
                           args=[dispatch, worker, time.time(), job_id]).decode()

    def update(self, job_id: str, worker: str, **fields: Any) -> str:
        args: list[Any] = [worker]
        for k, v in fields.items():
            args += [k, json.dumps(v) if k in JSON_FIELDS else ("" if v is None else v)]
        return self._update(keys=[job_key(job_id)], args=args).decode()

    def finish(self, job_id: str, worker: str, status: str, error: dict | None = None, **fields: Any) -> str:
        job = self.get(job_id)
        now = time.time()
        metrics: dict[str, Any] = {}
        if job is not None and job.started_at:
            metrics = {"queue_s": round(job.started_at - (job.enqueued_at or job.created_at), 4),
                       "run_s": round(now - job.started_at, 4)}
        if "dream_s" in fields:  # the engine's share of run_s; the rest is the queue's overhead
            metrics["dream_s"] = fields.pop("dream_s")
        if "precision" in fields:  # what really ran, which may differ from what was asked
            metrics["precision"] = fields.pop("precision")
        args: list[Any] = [worker, job_id, "status", status, "finished_at", now, "metrics", json.dumps(metrics),
                           "error", json.dumps(error) if error else ""]
        for k, v in fields.items():
            args += [k, json.dumps(v) if k in JSON_FIELDS else v]
        result = self._finish(keys=[job_key(job_id), RUNNING], args=args).decode()
        if result == "ok":
            self.r.expire(job_key(job_id), self.ttl_s)
        return result

    def requeue_lost(self, job_id: str, worker: str, max_attempts: int) -> tuple[str, str]:
        """Put a job whose worker died back in the queue; returns (outcome, new dispatch token)."""
        token = uuid.uuid4().hex
        error = json.dumps({"code": "worker_lost",
                            "message": f"the worker running this job was lost {max_attempts} times; giving up"})
        outcome = self._requeue(keys=[job_key(job_id), QUEUED, RUNNING],
                                args=[worker, token, time.time(), max_attempts, job_id, error]).decode()
        return outcome, token

    def running(self) -> list[tuple[str, str | None]]:
        """(job id, worker) of every job marked running."""
        out = []
        for raw_id in self.r.zrange(RUNNING, 0, -1):
            job_id = raw_id.decode()
            worker = self.r.hget(job_key(job_id), "worker")
            out.append((job_id, worker.decode() if worker else None))
        return out

    def dispatched_before(self, cutoff: float, limit: int = 1000) -> list[str]:
        """Queued jobs whose current message was sent before ``cutoff`` (a time), oldest first."""
        return [i.decode() for i in self.r.zrangebyscore(QUEUED, "-inf", cutoff, start=0, num=limit)]

    def redispatch(self, job_id: str, cutoff: float) -> tuple[str, str]:
        """Give a queued job sent before ``cutoff`` a new dispatch token; returns (outcome, token).

        ``ok``: enqueue the token now (a message of the old one is skipped by the worker
        that gets it); ``recent``: dispatched after the cutoff; else the job's status.
        """
        seen = self.r.hget(job_key(job_id), "dispatch")
        token = uuid.uuid4().hex
        outcome = self._redispatch(keys=[job_key(job_id), QUEUED],
                                   args=[seen or b"", token, time.time(), job_id, cutoff]).decode()
        return outcome, token

    def queued_ids(self) -> list[str]:
        return [i.decode() for i in self.r.zrange(QUEUED, 0, -1)]

    def expired(self, now: float | None = None) -> list[str]:
        """Ids past their TTL (to delete their files): the record itself expires in Redis."""
        cutoff = (now or time.time()) - self.ttl_s
        return [i.decode() for i in self.r.zrangebyscore(JOBS, "-inf", cutoff)]

    def forget(self, job_id: str) -> None:
        with self.r.pipeline() as p:
            p.delete(job_key(job_id))
            p.zrem(JOBS, job_id)
            p.zrem(QUEUED, job_id)
            p.zrem(RUNNING, job_id)
            p.execute()
