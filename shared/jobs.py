"""The job lifecycle: submitting a job, and every change of its state, each in one place.

Every state change is one Lua script on the job record (shared/job.py), so the web
and a worker can never overwrite each other (e.g. a cancel racing completion), and a
stale or duplicate delivery can never run a job.  A running job whose worker is lost
goes back to queued with a new dispatch token, until ``max_attempts`` starts, then
fails with ``worker_lost``.

Hook points: the signals below are sent by the process that made the change, after
it is in Redis (blinker, as Flask's own signals).  Metrics (shared/stats.py), the
result cache (shared/cache.py), webhooks (shared/webhooks.py) and DREAMQ_PLUGINS subscribe, in
every process, through one explicit call: shared/hooks.py install(settings).

    job_submitted(jobs, job=Job)             the record is written and its message sent
    job_started(jobs, job_id=str, worker=str)
    job_progress(jobs, job_id=str, progress=dict)
    job_output(jobs, job_id=str)             a new preview (or video frame) is stored
    job_finished(jobs, job_id=str, status=str)   succeeded, failed or canceled, however it ended

Fair share
----------
Celery delivers, but does not choose: a message means "a job is ready", not "run this job".
Every queued job also waits in its owner's own queue (``keys.fair_queue``: interactive before
batch, then submission order), and each owner with jobs queued is in ``keys.FAIR_OWNERS`` with
its virtual time: the jobs it has started, each counting 1/weight (``keys.FAIR_WEIGHTS``, set by
an admin; 1 by default).  A worker that gets a message runs ``pick``: one Lua script that takes
the owner with the least virtual time, starts that owner's next job, and adds 1/weight to the
owner's time.  An owner that had nothing queued joins at the clock (the virtual time of the last
pick): it is served next, but earns no credit for the time it was away.  So one owner's 500 queued
jobs delay another owner's single job by one job-time, not 500, and an owner's own jobs still run
in its own order.  The owner is the token's hash, or the client's address in open mode (``share``).

The count stays right: every queued job sent one message, every pick uses one message and starts
one job, and a job canceled while queued drops its own message when it is still in the list (when
it is not, the message it "owned" ran another job, and the one left over finds nothing to pick).
So the messages are never fewer than the queued jobs; one left over is acked as ``skipped``.  A
batch (``pick_batch``, below) starts several jobs on one message: the others' messages stay in the list,
so the count still holds, and each of them, later, picks the next fair job or is skipped.  A
job whose message is lost is found by the stranded re-dispatch (worker/worker.py), as before.

Batching
--------
With DREAMQ_BATCH above 1, a worker's pick goes on after the first job: while the next fair pick
(the owner with the least virtual time, its head job) is queued with the same non-empty
``batch_key`` (kind image: model, shape and step parameters; shared/kinds/image.py), it starts
that job too, up to DREAMQ_BATCH jobs, each exactly as the first (attempts, virtual time).  So a
batch takes jobs in fair order and stops at the first that could not join it.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable

import redis
from blinker import Namespace

from . import keys
from .job import CANCELED, FAILED, FINISHED, JSON_FIELDS, QUEUED, Job, Priority, dumps, is_job_id
from .kinds import DEFAULT_KIND, get_kind

log = logging.getLogger(__name__)

signals = Namespace()
job_submitted = signals.signal("job-submitted")
job_started = signals.signal("job-started")
job_progress = signals.signal("job-progress")
job_output = signals.signal("job-output")
job_finished = signals.signal("job-finished")


class SubmitRefused(Exception):
    """A submission that the caps or the broker refused; nothing of it was kept."""

    def __init__(self, reason: str, detail: object = None):
        self.reason, self.detail = reason, detail  # queue_full | client_full | not_queued
        super().__init__(reason)


# -- fair share (see the module's doc) -------------------------------------------
# Lua shared by the scripts that move a job into or out of its owner's queue.  An owner's queue key is
# made here from its name (``keys.fair_queue``), so these scripts assume one Redis (or a Sentinel
# pair), not a Redis Cluster.
_FAIR = """
local function share_of(jkey)
  local s = redis.call('HGET', jkey, 'share')
  if not s or s == '' then s = redis.call('HGET', jkey, 'owner') end
  return s or ''
end
local function order_of(jkey)
  local t = tonumber(redis.call('HGET', jkey, 'created_at')) or 0
  if redis.call('HGET', jkey, 'priority') == 'batch' then t = t + 1e10 end
  return t
end
local function enter(owners, clock, qprefix, share, id, order)
  redis.call('ZADD', qprefix .. share, order, id)
  redis.call('ZADD', owners, 'NX', redis.call('GET', clock) or '0', share)
end
local function leave(owners, qprefix, share, id)
  local q = qprefix .. share
  redis.call('ZREM', q, id)
  if redis.call('ZCARD', q) == 0 then redis.call('ZREM', owners, share) end
end
"""
PRIORITY_OFFSET = 1e10  # a batch job's order: after every interactive one of its owner (_FAIR's order_of)

# -- atomic transitions --------------------------------------------------------
# KEYS[1] = job hash.  _START, _FINISH and _UPDATE_RUNNING return "ok" when they acted, else
# the status they saw ("missing": no record).  _CANCEL returns "ok" when it canceled a queued
# job, else the status it saw (a running job gets cancel_requested).  _REQUEUE returns
# "queued" or "failed" (what it made of the job), else the status it saw.

_START = _FAIR + """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if s ~= 'queued' or redis.call('HGET', KEYS[1], 'dispatch') ~= ARGV[1] then return s end
leave(KEYS[4], ARGV[5], share_of(KEYS[1]), ARGV[4])
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

_CANCEL = _FAIR + """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[1],
             'error', '{"code": "canceled", "message": "canceled before it started"}')
  redis.call('ZREM', KEYS[2], ARGV[2])
  leave(KEYS[3], ARGV[3], share_of(KEYS[1]), ARGV[2])
  return 'ok'
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

_REQUEUE = _FAIR + """
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
enter(KEYS[4], KEYS[5], ARGV[7], share_of(KEYS[1]), ARGV[5], order_of(KEYS[1]))
return 'queued'
"""

# A worker got a message: start the next job of the owner with the least virtual time (see the
# module's doc).  KEYS: FAIR_OWNERS, FAIR_CLOCK, FAIR_WEIGHTS, QUEUED, RUNNING, then the message's
# own job hash.  ARGV: worker, now, owner-queue prefix, job-key prefix, the message's job id and
# dispatch token, and the most jobs to start (a batch, "Batching").  Returns the started jobs' ids
# (empty: none).  After the first, it goes on while the next fair pick is queued with the first's
# (non-empty) batch_key, each started exactly as the first.  An entry whose job is no longer queued
# (expired, or left behind) is dropped on the way.  When no owner has a job queued, the message's
# own job starts if its token is current: a job queued before fair share (no owner queue) still runs.
_PICK = _FAIR + """
local function start(jkey, id)
  redis.call('HINCRBY', jkey, 'attempts', 1)
  redis.call('HSET', jkey, 'status', 'running', 'worker', ARGV[1], 'started_at', ARGV[2],
             'progress', '{}', 'cancel_requested', '')
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZADD', KEYS[5], ARGV[2], id)
end
local most = tonumber(ARGV[7] or '1') or 1
local picked, key = {}, nil
for _ = 1, 1000 do
  if #picked >= most then break end
  local top = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #top == 0 then break end
  local share, vt = top[1], tonumber(top[2])
  local q = ARGV[3] .. share
  local head = redis.call('ZRANGE', q, 0, 0)
  if #head == 0 then
    redis.call('ZREM', KEYS[1], share)
  else
    local id = head[1]
    local jkey = ARGV[4] .. id
    local queued = redis.call('HGET', jkey, 'status') == 'queued'
    if queued and #picked > 0 and redis.call('HGET', jkey, 'batch_key') ~= key then break end
    leave(KEYS[1], ARGV[3], share, id)
    if queued then
      local w = tonumber(redis.call('HGET', KEYS[3], share) or '1') or 1
      if w <= 0 then w = 1 end
      if redis.call('ZSCORE', KEYS[1], share) then redis.call('ZADD', KEYS[1], vt + 1 / w, share) end
      redis.call('SET', KEYS[2], vt)
      start(jkey, id)
      table.insert(picked, id)
      if #picked == 1 then
        key = redis.call('HGET', jkey, 'batch_key')
        if not key or key == '' then break end
      end
    end
  end
end
if #picked > 0 then return picked end
local s = redis.call('HGET', KEYS[6], 'status')
if s == 'queued' and redis.call('HGET', KEYS[6], 'dispatch') == ARGV[6] then
  start(KEYS[6], ARGV[5])
  return {ARGV[5]}
end
return {}
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


# KEYS: job hash, JOBS, QUEUED, the client's set of queued ids, FAIR_OWNERS, FAIR_CLOCK, and the
# owner's index (only for a job with an owner).  ARGV: max queued (0: no cap), ttl, id, created_at,
# enqueued_at, max queued for this client (0: no cap), the owner-queue prefix, then field/value pairs.
# The client set is pruned here of ids no longer queued (started, canceled, expired), so the
# scripts that move jobs need not know about clients.  1: saved; 0: queue full; -1: client full.
_SAVE_NEW = _FAIR + """
if tonumber(ARGV[1]) > 0 and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[1]) then return 0 end
local per_client = tonumber(ARGV[6])
if per_client > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    if not redis.call('ZSCORE', KEYS[3], id) then redis.call('ZREM', KEYS[4], id) end
  end
  if redis.call('ZCARD', KEYS[4]) >= per_client then return -1 end
end
for i = 8, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
enter(KEYS[5], KEYS[6], ARGV[7], share_of(KEYS[1]), ARGV[3], order_of(KEYS[1]))
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
if per_client > 0 then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[3])
  redis.call('EXPIRE', KEYS[4], ARGV[2])
end
if KEYS[7] then
  redis.call('ZADD', KEYS[7], ARGV[4], ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. (tonumber(ARGV[4]) - tonumber(ARGV[2])))
  redis.call('EXPIRE', KEYS[7], ARGV[2])
end
return 1
"""


# KEYS: keys.SHARED_FILES, JOBS.  ARGV: now, cutoff (now - TTL).  Takes the folders no live hit reads any
# more out of keys.SHARED_FILES (at most 1000 a call) and returns those whose own job has expired too;
# one whose job still lives is left to that job's expiry (``expired``).  One script: a folder is
# handed out once, whichever worker sweeps.
_UNSHARED = """
local out = {}
for _, f in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)) do
  local own = redis.call('ZSCORE', KEYS[2], f)
  if not own or tonumber(own) <= tonumber(ARGV[2]) then table.insert(out, f) end
  redis.call('ZREM', KEYS[1], f)
end
return out
"""


_SAVED = {1: "ok", 0: "queue_full", -1: "client_full"}  # what _SAVE_NEW's answer means


class Jobs:
    """The lifecycle of jobs over one Redis connection: submit, then each transition.

    ``store``: the job files (submit writes the input; a cancel deletes it).  ``celery``:
    the app that sends messages (submit, requeue, re-dispatch).
    """

    def __init__(self, client: redis.Redis, ttl_s: int = 7 * 24 * 3600, store=None, celery=None,
                 replicas: int = 0, replicas_timeout_ms: int = 500):
        self.r = client
        # A new record must reach this many replicas (WAIT) before try_save_new returns (the web's
        # 202): a Sentinel failover right after keeps the job (docs/DEPLOYMENT.md, "Redis Sentinel").
        self.replicas, self.replicas_timeout_ms = replicas, replicas_timeout_ms
        self.ttl_s = ttl_s
        self.store = store
        self.celery = celery
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._update = client.register_script(_UPDATE_RUNNING)
        self._cancel = client.register_script(_CANCEL)
        self._drop_messages = client.register_script(_DROP_MESSAGES)
        self._requeue = client.register_script(_REQUEUE)
        self._redispatch = client.register_script(_REDISPATCH)
        self._save_new = client.register_script(_SAVE_NEW)
        self._unshared = client.register_script(_UNSHARED)
        self._pick = client.register_script(_PICK)

    # -- submitting --------------------------------------------------------------

    def submit(self, params, input_png: bytes, *, kind: str = DEFAULT_KIND, owner: str | None = None,
               client: str | None = None, warnings: list[str] | None = None, max_queued: int = 0,
               max_per_client: int = 0, files: dict[str, bytes] | None = None, webhook: dict | None = None,
               before_enqueue: Callable[[str], None] | None = None, priority: str = Priority.INTERACTIVE,
               batch_key: str | None = None) -> Job:
        """Queue a job: validate its parameters, store its input, write its record, send its message.

        ``params``: the kind's parameters (a model instance, or raw values to validate:
        ParamsError names each bad field).  ``input_png``: the input image, already decoded
        and normalised by the caller (the web does it off its event loop, under its decode
        limits).  ``files``: more input files by role (e.g. ``guide``), stored beside it.
        ``webhook``: ``{"url", "events_filter"}``, already checked (shared/webhooks.py).
        Raises SubmitRefused (``queue_full``, ``client_full``, ``not_queued``) with nothing
        kept.  ``before_enqueue(job_id)``: called between the record and the message (tests
        use it to lose the message on purpose).  ``priority``: ``interactive`` or ``batch``, within
        the owner's share; the share is the owner's, else (open mode) the client's.  ``batch_key``:
        jobs queued with the same key may run as one batch (the kind's ``batch_key``; "Batching").
        """
        spec = get_kind(kind)
        if spec is None:
            from .params import ParamsError

            raise ParamsError({"kind": f"unknown kind {kind!r}"})
        if not isinstance(params, spec.params):
            params = spec.parse(dict(params))
        job = self.new(params.model_dump(), kind=spec.name, warnings=warnings, owner=owner, client=client,
                       priority=priority, batch_key=batch_key)
        job.webhook = webhook or None
        self.store.put(job.id, spec.file("input"), input_png)  # not kept in the record: read by the folder and kind
        for role, data in (files or {}).items():
            self.store.put(job.id, spec.file(role), data)  # KeyError: a role the kind does not declare
        outcome = self.try_save_new(job, max_queued=max_queued, client=client, max_per_client=max_per_client)
        if outcome != "ok":  # lost the race for the last slots
            self.store.delete(job.id)
            raise SubmitRefused(outcome)
        if before_enqueue is not None:
            before_enqueue(job.id)
        try:
            self.send(job.id, job.dispatch)
        except Exception as exc:  # redis, kombu, OSError: no message, no worker would ever take it
            self.forget(job.id)  # undo the record rather than leave it queued forever
            self.store.delete(job.id)
            raise SubmitRefused("not_queued", exc) from exc
        job_submitted.send(self, job=job)
        return job

    def send(self, job_id: str, dispatch: str) -> None:
        """Send the message that runs ``job_id`` with this dispatch token."""
        from .queue import enqueue  # here: shared.queue imports Celery, which the record does not need

        enqueue(self.celery, job_id, dispatch)

    def new(self, params: dict[str, Any], job_id: str | None = None, warnings: list[str] | None = None,
            kind: str = DEFAULT_KIND, owner: str | None = None, client: str | None = None,
            priority: str = Priority.INTERACTIVE, batch_key: str | None = None) -> Job:
        """A queued job record, not yet saved (``try_save_new``).  Its fair share is its owner's, else
        (no tokens) its client's."""
        now = time.time()
        return Job(id=job_id or str(uuid.uuid4()), status=QUEUED, params=params, created_at=now, kind=kind,
                   enqueued_at=now, dispatch=uuid.uuid4().hex, warnings=list(warnings or []), owner=owner,
                   share=None if owner else client, priority=priority, batch_key=batch_key or None)

    create = new  # the name the tests and benches know

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
        script_keys, args = self._save_new_call(job, max_queued, client, max_per_client)
        if not self.replicas:
            return _SAVED[int(self._save_new(keys=script_keys, args=args))]
        # The script and WAIT on one connection (WAIT counts that connection's writes).  Too few
        # replicas in time: kept anyway (a replica down must not stop submissions), and said.
        with self.r.pipeline(transaction=False) as p:
            self._save_new(keys=script_keys, args=args, client=p)
            p.wait(self.replicas, self.replicas_timeout_ms)
            saved, acked = p.execute()
        if int(saved) == 1 and int(acked) < self.replicas:
            log.warning("job %s: its record reached %d of %d replicas in %d ms", job.id, int(acked), self.replicas,
                        self.replicas_timeout_ms)
        return _SAVED[int(saved)]

    def save_new_many(self, jobs: list[Job], max_queued: int = 0) -> list[str]:
        """``try_save_new`` for many jobs in one round trip (benchmarks and tests that need a deep
        queue): each job's script runs on its own, caps and all; one outcome per job."""
        with self.r.pipeline(transaction=False) as p:
            for job in jobs:
                script_keys, args = self._save_new_call(job, max_queued, None, 0)
                self._save_new(keys=script_keys, args=args, client=p)
            return [_SAVED[int(saved)] for saved in p.execute()]

    def _save_new_call(self, job: Job, max_queued: int, client: str | None, max_per_client: int):
        """The keys and arguments of ``_SAVE_NEW`` for this job."""
        # The record as the model writes it; fields at their default are left out (they read back
        # as the default), which keeps a queued job's bytes in Redis small.
        mapping = job.to_redis(sparse=True)
        per_client = max_per_client if client is not None else 0
        args: list[Any] = [max_queued, self.ttl_s, job.id, job.created_at, job.enqueued_at, per_client,
                           keys.FAIR_QUEUE_PREFIX]
        for k, v in mapping.items():
            args += [k, v]
        script_keys = [keys.job(job.id), keys.JOBS, keys.QUEUED_JOBS, keys.client_queued(client or ""),
                       keys.FAIR_OWNERS, keys.FAIR_CLOCK]
        if job.owner:
            script_keys.append(keys.owner_jobs(job.owner))
        return script_keys, args

    def save_finished(self, job: Job) -> None:
        """Write a job that is born finished (a result-cache hit, shared/cache.py): its record with
        the job TTL and its listing entry, in one transaction.  No queue, no message, no caps; the
        caller stores its files (or shares another job's: ``files_from``, ``share_files``) first
        and sends the signals after."""
        with self.r.pipeline() as p:
            self._write_finished(p, job)
            p.execute()

    def save_finished_many(self, jobs: list[Job]) -> None:
        """``save_finished`` for many jobs in one round trip (benchmarks and tests that need many records)."""
        with self.r.pipeline(transaction=False) as p:
            for job in jobs:
                self._write_finished(p, job)
            p.execute()

    def _write_finished(self, p, job: Job) -> None:
        times = {"enqueued_at": job.enqueued_at or job.created_at, "started_at": job.started_at or job.created_at,
                 "finished_at": job.finished_at or job.created_at}
        mapping = job.model_copy(update=times).to_redis(sparse=True)
        p.hset(keys.job(job.id), mapping=mapping)
        p.expire(keys.job(job.id), self.ttl_s)
        p.zadd(keys.JOBS, {job.id: job.created_at})
        if job.owner:
            p.zadd(keys.owner_jobs(job.owner), {job.id: job.created_at})
            p.expire(keys.owner_jobs(job.owner), self.ttl_s)

    # -- reading -------------------------------------------------------------------

    def client_queued(self, client: str) -> int:
        """How many of the client's jobs are still queued (read only: a cheap early answer)."""
        ids = self.r.zrange(keys.client_queued(client), 0, -1)
        if not ids:
            return 0
        with self.r.pipeline(transaction=False) as p:
            for i in ids:
                p.zscore(keys.QUEUED_JOBS, i)
            return sum(score is not None for score in p.execute())

    def get(self, job_id: str) -> Job | None:
        if not is_job_id(job_id):
            return None
        raw = self.r.hgetall(keys.job(job_id))
        return Job.from_redis(raw) if raw else None

    def control(self, job_id: str) -> tuple[str | None, bool, str | None]:
        """(status, cancel requested, worker): what a running job's worker polls between steps."""
        status, flag, owner = self.r.hmget(keys.job(job_id), "status", "cancel_requested", "worker")
        return (status.decode() if status else None), flag == b"1", (owner.decode() if owner else None)

    def queue_position(self, job: Job) -> int | None:
        """How many jobs start before this one, plus 1, as fair share would run them if every owner
        queued now kept jobs queued: its own jobs ahead times the owners with jobs queued, plus the
        owners before it in this round.  O(log n) in the queue's depth."""
        share = job.share_key
        with self.r.pipeline(transaction=False) as p:
            p.zrank(keys.fair_queue(share), job.id)
            p.zcard(keys.FAIR_OWNERS)
            p.zrank(keys.FAIR_OWNERS, share)
            rank, owners, turn = p.execute()
        if rank is None:  # not in an owner queue (queued before fair share): its place in the whole queue
            rank = self.r.zrank(keys.QUEUED_JOBS, job.id)
            return None if rank is None else rank + 1
        return rank * max(owners, 1) + (turn or 0) + 1

    def queue_depth(self) -> int:
        return self.r.zcard(keys.QUEUED_JOBS)

    def list(self, limit: int = 20, before: float | None = None, owner: str | None = None) -> list[Job]:
        """Newest first; ``before`` is the created_at of the last job of the previous page.

        ``owner``: only that owner's jobs, from its own index, so that a page costs O(page)
        however many jobs others have.  The records are read in one round trip."""
        index = keys.owner_jobs(owner) if owner is not None else keys.JOBS
        hi = f"({before!r}" if before is not None else "+inf"
        ids = [i.decode() for i in self.r.zrevrangebyscore(index, hi, "-inf", start=0, num=limit)]
        with self.r.pipeline(transaction=False) as p:
            for job_id in ids:
                p.hgetall(keys.job(job_id))
            records = p.execute()
        jobs, gone = [], []
        for job_id, raw in zip(ids, records):
            if raw:
                jobs.append(Job.from_redis(raw))
            else:
                gone.append(job_id)
        if gone and owner is not None:  # expired records: their owner's entries go now
            self.r.zrem(index, *gone)  # (the shared index keeps them: the expiry sweep finds their files there)
        return jobs

    def count_before(self, created_at: float, owner: str | None = None) -> int:
        """How many jobs (of ``owner``, if given) were created before ``created_at`` (is there a next page?)."""
        index = keys.owner_jobs(owner) if owner is not None else keys.JOBS
        return self.r.zcount(index, "-inf", f"({created_at!r}")

    # -- transitions ---------------------------------------------------------------
    # Each returns what the script saw or did; see the scripts above.

    def cancel(self, job_id: str) -> str:
        """Cancel: ``canceled`` (it was queued and is now final, or was canceled before),
        ``running`` (its worker is asked to stop at its next step), ``succeeded`` or ``failed``
        (too late), or ``missing``.

        A job canceled while queued also loses its Celery message(s), so that the broker
        list, like ``queue_depth``, counts only jobs that will run, and its stored input.
        """
        outcome = self._cancel(keys=[keys.job(job_id), keys.QUEUED_JOBS, keys.FAIR_OWNERS],
                               args=[time.time(), job_id, keys.FAIR_QUEUE_PREFIX]).decode()
        if outcome != "ok":
            return outcome
        # This call canceled it: what follows happens once.
        from .queue import QUEUE, TASK, announce_revoked  # here, not at the top: shared.queue imports Celery

        try:
            self.drop_messages(job_id, QUEUE, TASK)
        except redis.RedisError as exc:  # the cancel stands; a worker would skip the message anyway
            log.warning("job %s canceled; its broker message stays: %s", job_id, exc)
        else:  # no worker will see the message: say it was revoked, so Flower does not wait on it
            announce_revoked(self.celery, self.r.hget(keys.job(job_id), "dispatch"))
        if self.store is not None:
            # No worker will read the input now (start needs a queued job): without this,
            # cancel-and-resubmit would pile up inputs for the whole TTL.
            try:
                self.store.delete(job_id)
            except Exception as exc:  # noqa: BLE001 — the expiry sweep deletes it later
                log.warning("job %s canceled; its input stays: %s", job_id, exc)
        self._finished(job_id, CANCELED)
        return CANCELED

    def drop_messages(self, job_id: str, queue: str, task: str) -> int:
        """Remove the job's waiting messages from the Celery list ``queue``; returns how many."""
        return int(self._drop_messages(keys=[queue], args=[job_id, task]))

    def start(self, job_id: str, dispatch: str, worker: str) -> str:
        """queued -> running, only for the current dispatch token: ``ok``, else the status seen."""
        outcome = self._start(keys=[keys.job(job_id), keys.QUEUED_JOBS, keys.RUNNING_JOBS, keys.FAIR_OWNERS],
                              args=[dispatch, worker, time.time(), job_id, keys.FAIR_QUEUE_PREFIX]).decode()
        if outcome == "ok":
            job_started.send(self, job_id=job_id, worker=worker)
        return outcome

    def pick(self, worker: str, job_id: str = "", dispatch: str = "") -> str | None:
        """A message reached ``worker``: start the fairest queued job (see "Fair share"), and return its
        id; None when no job is queued.  ``job_id`` and ``dispatch``: the message's own, started only
        when no owner queue holds a job (a job queued by an older version)."""
        picked = self.pick_batch(worker, 1, job_id, dispatch)
        return picked[0] if picked else None

    def pick_batch(self, worker: str, n: int, job_id: str = "", dispatch: str = "") -> list[str]:
        """``pick``, then up to ``n`` jobs in all while the next fair pick shares the first's batch key
        (see "Batching"): the ids started, in fair order; empty when no job is queued."""
        picked = self._pick(keys=[keys.FAIR_OWNERS, keys.FAIR_CLOCK, keys.FAIR_WEIGHTS, keys.QUEUED_JOBS,
                                  keys.RUNNING_JOBS, keys.job(job_id)],
                            args=[worker, time.time(), keys.FAIR_QUEUE_PREFIX, keys.job(""), job_id, dispatch,
                                  max(1, int(n))])
        ids = [i.decode() for i in picked or []]
        for picked_id in ids:
            job_started.send(self, job_id=picked_id, worker=worker)
        return ids

    def set_weight(self, share: str, weight: float | None) -> None:
        """An owner's share of the workers against the others' (1 by default); None: back to 1."""
        if weight is None or weight == 1:
            self.r.hdel(keys.FAIR_WEIGHTS, share)
        else:
            self.r.hset(keys.FAIR_WEIGHTS, share, weight)

    def weights(self) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.r.hgetall(keys.FAIR_WEIGHTS).items()}

    def update(self, job_id: str, worker: str, **fields: Any) -> str:
        """Set fields of a job while ``worker`` runs it: ``ok``, else the status seen."""
        args: list[Any] = [worker]
        for k, v in fields.items():
            args += [k, dumps(v) if k in JSON_FIELDS else ("" if v is None else v)]
        outcome = self._update(keys=[keys.job(job_id)], args=args).decode()
        if outcome == "ok" and "progress" in fields:
            job_progress.send(self, job_id=job_id, progress=fields["progress"])
        if outcome == "ok" and fields.get("preview_url"):
            job_output.send(self, job_id=job_id)
        return outcome

    def finish(self, job_id: str, worker: str, status: str, error: dict | None = None, **fields: Any) -> str:
        """running -> succeeded | failed | canceled, only by the worker that runs it."""
        assert status in FINISHED, status
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
        metrics.update(fields.pop("metrics", None) or {})  # a kind's own figures (e.g. frames_resumed)
        args: list[Any] = [worker, job_id, "status", status, "finished_at", now, "metrics", dumps(metrics),
                           "error", dumps(error) if error else ""]
        for k, v in fields.items():
            args += [k, dumps(v) if k in JSON_FIELDS else v]
        outcome = self._finish(keys=[keys.job(job_id), keys.RUNNING_JOBS], args=args).decode()
        if outcome == "ok":
            self.r.expire(keys.job(job_id), self.ttl_s)
            self._finished(job_id, status)
        return outcome

    def requeue_lost(self, job_id: str, worker: str, max_attempts: int) -> tuple[str, str]:
        """Put a running job whose worker died (or stops) back in the queue; returns (outcome,
        new dispatch token).  ``queued``: send the token; ``failed``: it had ``max_attempts``."""
        token = uuid.uuid4().hex
        error = dumps({"code": "worker_lost",
                            "message": f"the worker running this job was lost {max_attempts} times; giving up"})
        outcome = self._requeue(keys=[keys.job(job_id), keys.QUEUED_JOBS, keys.RUNNING_JOBS, keys.FAIR_OWNERS,
                                      keys.FAIR_CLOCK],
                                args=[worker, token, time.time(), max_attempts, job_id, error,
                                      keys.FAIR_QUEUE_PREFIX]).decode()
        if outcome == FAILED:
            self._finished(job_id, FAILED)
        return outcome, token

    def redispatch(self, job_id: str, cutoff: float) -> tuple[str, str]:
        """Give a queued job sent before ``cutoff`` a new dispatch token; returns (outcome, token).

        ``ok``: enqueue the token now (a message of the old one is skipped by the worker
        that gets it); ``recent``: dispatched after the cutoff; else the job's status.
        """
        seen = self.r.hget(keys.job(job_id), "dispatch")
        token = uuid.uuid4().hex
        outcome = self._redispatch(keys=[keys.job(job_id), keys.QUEUED_JOBS],
                                   args=[seen or b"", token, time.time(), job_id, cutoff]).decode()
        return outcome, token

    def _finished(self, job_id: str, status: str) -> None:
        # Subscribers must not undo a transition that is already in Redis: log and go on.
        for receiver in job_finished.receivers_for(self):
            try:
                receiver(self, job_id=job_id, status=status)
            except Exception:  # noqa: BLE001
                log.exception("job %s: a job_finished subscriber failed", job_id)

    # -- housekeeping ----------------------------------------------------------------

    def running(self) -> list[tuple[str, str | None]]:
        """(job id, worker) of every job marked running."""
        ids = [raw.decode() for raw in self.r.zrange(keys.RUNNING_JOBS, 0, -1)]
        with self.r.pipeline(transaction=False) as p:
            for job_id in ids:
                p.hget(keys.job(job_id), "worker")
            workers = p.execute()
        return [(job_id, worker.decode() if worker else None) for job_id, worker in zip(ids, workers)]

    def dispatched_before(self, cutoff: float, limit: int = 1000) -> list[str]:
        """Queued jobs whose current message was sent before ``cutoff`` (a time), oldest first."""
        return [i.decode() for i in self.r.zrangebyscore(keys.QUEUED_JOBS, "-inf", cutoff, start=0, num=limit)]

    def queued_ids(self) -> list[str]:
        return [i.decode() for i in self.r.zrange(keys.QUEUED_JOBS, 0, -1)]

    def expired(self, now: float | None = None, limit: int = 1000) -> list[str]:
        """Ids past their TTL (to delete their files), the oldest ``limit`` of them: a sweep's pass
        costs one batch however many expired at once (``forget`` takes them out; the next pass
        goes on).  The record itself expires in Redis."""
        cutoff = (now or time.time()) - self.ttl_s
        return [i.decode() for i in self.r.zrangebyscore(keys.JOBS, "-inf", cutoff, start=0, num=limit)]

    # Store folders shared by result-cache hits (shared/cache.py): keys.SHARED_FILES scores each folder
    # with the latest expiry (created_at + TTL, the sweep's clock) of the hits that read it.

    def share_files(self, folder: str, until: float) -> None:
        """Keep the store folder ``folder`` (a job id) at least until ``until``: a hit reads it."""
        self.r.zadd(keys.SHARED_FILES, {folder: until}, gt=True)  # GT: a later hit only ever extends

    def files_shared(self, folder: str, now: float | None = None) -> bool:
        """Whether a live hit still reads ``folder`` (its own job's expiry must not delete it)."""
        until = self.r.zscore(keys.SHARED_FILES, folder)
        return until is not None and until > (now or time.time())

    def unshared_files(self, now: float | None = None) -> list[str]:
        """Shared folders whose last hit and own job have both expired (to delete now); each is
        returned once."""
        now = now or time.time()
        return [f.decode() for f in self._unshared(keys=[keys.SHARED_FILES, keys.JOBS], args=[now, now - self.ttl_s])]

    def forget(self, job_id: str) -> None:
        owner, share = self.r.hmget(keys.job(job_id), "owner", "share")
        with self.r.pipeline() as p:
            if owner:
                p.zrem(keys.owner_jobs(owner.decode()), job_id)
            p.zrem(keys.fair_queue((share or owner or b"").decode()), job_id)  # an owner left empty: pick drops it
            p.delete(keys.job(job_id))
            p.zrem(keys.JOBS, job_id)
            p.zrem(keys.QUEUED_JOBS, job_id)
            p.zrem(keys.RUNNING_JOBS, job_id)
            p.execute()
