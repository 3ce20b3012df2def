"""A dreamq worker: one process, one device, warm models, one job at a time.

Loads and warms its models *before* it consumes (a job never pays for a
model load), announces itself in Redis with a heartbeat, runs jobs through
the engine, and puts back in the queue the jobs of workers that died.
``worker/celery.py`` drives it from Celery's worker (``celery -A worker worker``).

No stranded job
---------------
The job record, not the broker, says what must run.  A job whose record says
``queued`` may have no message left to run it: a foreign Celery worker acked it
(an unregistered task is discarded), the Celery list was flushed, the web died
between writing the record and sending the message, a worker died between
taking a message and starting it (the message then sits in that dead worker's
unacked set until Redis' visibility timeout, over an hour).  The job's message
is found again this way, on every heartbeat (``redispatch_stranded``):

* A worker whose Celery consumer has been taking messages from the dreamq queue
  for ``stranded_after_s`` (twice the heartbeat TTL: 16 s by default) without
  getting one knows that the queue's list is empty: with prefetch 1, an idle
  consumer takes any message there within milliseconds.
* So every job still queued whose current message was sent before that window
  (its score in ``dreamq:queued``) has no message that a worker can take.  The
  worker gives it a new dispatch token and enqueues it (``Jobs.redispatch``:
  one Lua script that acts only while the job is still queued with the token
  it saw and was sent before the cutoff, so of several idle workers only one acts).
* The grace also covers a message that is rightly elsewhere for a moment: sent
  just after its record, or taken by a worker that is about to start it.  If we
  re-dispatch anyway, the cost is one duplicate message, and it is harmless: a
  job starts once (a pick moves it out of the queue), a message left over finds
  nothing to pick and is acked.

A stranded job thus starts within ``stranded_after_s`` + one heartbeat of a ready
worker becoming idle (18 s by default; the goal is 90 s).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from shared import hooks, keys
from shared.job import CANCELED, FAILED, QUEUED, SUCCEEDED
from shared.jobs import Jobs
from shared.kinds import get_kind
from shared.settings import Settings
from shared.store import StoreError, open_store

from .kinds import HANDLERS, Context, Files, JobFailed
from .kinds.context import timed
from .preview import PreviewWriter

log = logging.getLogger("dreamq.worker")
MAX_DETAIL = 2000  # characters of a failure's detail kept on the record; the log has all of it


class Worker:
    def __init__(self, settings: Settings, celery_app, device: str = "cpu"):
        self.settings = settings
        self.celery = celery_app
        self.device = device
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        # Retries ride out a Redis restart (the supervisor brings it back in about a second):
        # without them a running job's next write fails, and so does marking it failed, and
        # the record stays `running` with a live owner that no recovery looks at.
        retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=12)
        from shared.redis_client import connect  # DREAMQ_REDIS_SENTINELS' master, else DREAMQ_REDIS_URL

        self.r = connect(settings, socket_timeout=10, health_check_interval=30, retry=retry)
        hooks.install(settings)  # metrics, result cache, webhooks and DREAMQ_PLUGINS hear this worker's transitions
        self.store = open_store(settings)
        self.jobs = Jobs(self.r, settings.job_ttl_s, store=None, celery=celery_app)  # store=None: a worker
        # never deletes an input on cancel (the web does), it only sends messages again
        self.dreamers: dict[str, Any] = {}
        self.unavailable: dict[str, str] = {}
        self.fingerprints: dict[str, str] = {}  # model -> SHA-256 of its weights (shared/cache.py)
        self.current_job: str | None = None
        self.bf16 = None  # Bf16Support, detected with the models
        self.ready = False
        self.stopping = threading.Event()
        self._beat = threading.Event()
        self._last_sweep = 0.0
        self.started_at = time.time()
        self.consuming_since: float | None = None  # set by worker/celery.py while Celery takes our messages
        self.last_activity = time.time()  # a delivery started or a job ended

    # -- start-up --------------------------------------------------------------

    def wait_for_redis(self, first_delay_s: float = 0.5, max_delay_s: float = 15.0) -> bool:
        """Return once Redis answers, trying again with backoff and logging each failed try.

        A worker started before Redis (compose, a host's boot) waits instead of exiting.
        False when told to stop first.
        """
        from shared.redis_client import describe  # which Redis, never its password

        delay, attempt = first_delay_s, 1
        while not self.stopping.is_set():
            try:
                self.r.ping()
            except redis.exceptions.RedisError as exc:  # refused, timeout, still loading its file
                log.warning("Redis at %s unreachable (attempt %d: %s); trying again in %.1f s",
                            describe(self.settings), attempt, exc, delay)
            else:
                if attempt > 1:
                    log.info("Redis answered at attempt %d", attempt)
                return True
            self.stopping.wait(delay)
            delay, attempt = min(delay * 2, max_delay_s), attempt + 1
        return False

    def load_models(self) -> None:
        """Build and warm every configured model; a missing one is reported, not fatal.

        Told to stop meanwhile, it returns after the model it is loading, not ready.
        """
        from .device import detect_bf16
        from .dream import Dreamer
        from .models import WeightsUnavailable, load_model, weights_fingerprint

        self.bf16 = detect_bf16(self.settings.bf16)
        log.info("bf16 %s on %s: %s", "native" if self.bf16.native else "not native", self.bf16.device,
                 self.bf16.reason)
        for name in self.settings.models:
            if self.stopping.is_set():
                return
            t0 = time.perf_counter()
            try:
                dreamer = Dreamer(load_model(name), auto_tile_pixels=self.settings.tile_above_pixels or None,
                                  auto_tile_size=self.settings.tile_size, shape_buckets=self.settings.shape_buckets)
                dreamer.warm_up()
            except WeightsUnavailable as exc:
                self.unavailable[name] = str(exc)
                log.warning("model %s unavailable: %s", name, exc)
                continue
            self.dreamers[name] = dreamer
            self.fingerprints[name] = weights_fingerprint(dreamer.model)  # once per model: the results carry it too
            log.info("model %s ready in %.1fs", name, time.perf_counter() - t0)
        self.ready = True
        self.heartbeat()

    def heartbeat_record(self) -> dict[str, Any]:
        import keras

        models = {name: "ready" for name in self.dreamers}
        models.update({name: f"unavailable: {why}" for name, why in self.unavailable.items()})
        return {"id": self.id, "host": socket.gethostname(), "pid": os.getpid(), "device": self.device,
                "backend": keras.backend.backend(), "models": models, "job": self.current_job,
                "bf16": self.bf16.as_dict() if self.bf16 else None,
                "ready": self.ready and not self.stopping.is_set(), "started_at": self.started_at,
                "fingerprints": dict(self.fingerprints)}

    # -- heartbeat and lost-worker recovery -----------------------------------

    def heartbeat(self) -> None:
        ttl = max(1, int(self.settings.heartbeat_ttl_s))
        with self.r.pipeline() as p:
            p.set(keys.worker(self.id), json.dumps(self.heartbeat_record()), ex=ttl)
            p.sadd(keys.WORKERS, self.id)
            p.execute()

    def start_heartbeat(self) -> threading.Thread:
        def loop():
            while not self._beat.wait(self.settings.heartbeat_s):
                try:
                    self.heartbeat()
                    self.recover_lost_jobs()
                    self.redispatch_stranded()
                    self.sweep_expired()
                except redis.exceptions.RedisError as exc:
                    log.warning("heartbeat: %s", exc)

        thread = threading.Thread(target=loop, name="dreamq-heartbeat", daemon=True)
        thread.start()
        return thread

    def stop_heartbeat(self) -> None:
        self._beat.set()
        try:
            with self.r.pipeline() as p:
                p.delete(keys.worker(self.id))
                p.srem(keys.WORKERS, self.id)
                p.execute()
        except redis.exceptions.RedisError:
            pass

    def recover_lost_jobs(self) -> None:
        """Requeue running jobs whose worker's heartbeat has expired (it was killed).

        Much sooner than Redis' visibility timeout, which must outlast the longest job.  One worker
        of the fleet checks per heartbeat period (a lease in Redis): when every worker checked every
        running job and heartbeat, the fleet's traffic grew as its square (docs/SCALING.md).
        """
        lease_ms = max(1, int(self.settings.heartbeat_s * 1000))
        if not self.r.set(keys.RECOVERY_LEASE, self.id, nx=True, px=lease_ms):
            return
        running = self.jobs.running()
        owners = sorted({owner for _, owner in running if owner and owner != self.id})
        with self.r.pipeline(transaction=False) as p:
            for owner in owners:
                p.exists(keys.worker(owner))
            alive = {owner for owner, live in zip(owners, p.execute()) if live}
        for job_id, owner in running:
            if owner == self.id or owner in alive:
                continue
            outcome, token = self.jobs.requeue_lost(job_id, owner or "", self.settings.max_attempts)
            if outcome == QUEUED:
                log.warning("job %s: worker %s lost, queued again", job_id, owner)
                self.jobs.send(job_id, token)
            elif outcome == FAILED:
                log.error("job %s: worker lost %d times, failed", job_id, self.settings.max_attempts)
        ids = list(self.r.smembers(keys.WORKERS))
        with self.r.pipeline(transaction=False) as p:
            for raw in ids:
                p.exists(keys.worker(raw.decode()))
            gone = [raw for raw, live in zip(ids, p.execute()) if not live]
        if gone:
            self.r.srem(keys.WORKERS, *gone)

    @property
    def stranded_after_s(self) -> float:
        # Heartbeat-scale, like the rest of our failure detection: several heartbeat
        # periods, far above the milliseconds a message is legitimately out of the list.
        return 2 * self.settings.heartbeat_ttl_s

    def idle_s(self) -> float:
        """How long this worker's consumer has been taking messages without getting one (0: busy)."""
        since = self.consuming_since
        if since is None or self.current_job or not self.ready or self.stopping.is_set():
            return 0.0
        return max(0.0, time.time() - max(since, self.last_activity))

    def redispatch_stranded(self) -> int:
        """Dispatch again the queued jobs that have no message left (see the module's doc)."""
        grace = self.stranded_after_s
        if self.idle_s() < grace:
            return 0
        cutoff = time.time() - grace
        sent = 0
        for job_id in self.jobs.dispatched_before(cutoff):
            outcome, token = self.jobs.redispatch(job_id, cutoff)
            if outcome == "ok":
                self.jobs.send(job_id, token)
                sent += 1
                log.warning("job %s: queued for over %.0f s and no message of it reached this idle worker; "
                            "dispatched again", job_id, grace)
        return sent

    def sweep_expired(self, every_s: float = 60.0, now: float | None = None) -> None:
        """Delete the stored files of jobs whose records have expired, except a folder that a live
        result-cache hit still reads (shared/cache.py): that one goes once its last hit expires."""
        if time.time() - self._last_sweep < every_s:
            return
        self._last_sweep = time.time()
        now = now or time.time()
        for job_id in self.jobs.expired(now):
            if not self.jobs.files_shared(job_id, now):
                self.store.delete(job_id)  # a hit's own id has no folder: nothing to delete
            self.jobs.forget(job_id)
        for folder in self.jobs.unshared_files(now):
            self.store.delete(folder)

    # -- running one job -------------------------------------------------------

    def run(self, job_id: str, dispatch: str) -> str:
        """A message reached this worker: run the job that fair share picks (shared/jobs.py), which
        may be another owner's than the message's; return what happened.  With DREAMQ_BATCH above 1,
        the jobs that join it (shared/jobs.py, "Batching") run with it as one batch."""
        self.last_activity = time.time()  # a message reached us: the queue was not empty
        if self.settings.batch > 1:
            picked = self.jobs.pick_batch(self.id, self.settings.batch, job_id, dispatch)
        else:
            one = self.jobs.pick(self.id, job_id, dispatch)
            picked = [one] if one is not None else []
        if not picked:
            # A message left over: its job was canceled, or ran on another message (a duplicate).
            log.info("message of job %s: no job queued, nothing started", job_id)
            return "skipped:empty"
        if picked[0] != job_id:
            log.info("message of job %s: started job %s (fair share)", job_id, picked[0])
        if len(picked) > 1:
            log.info("message of job %s: a batch of %d jobs: %s", job_id, len(picked), ", ".join(picked))
        # The heartbeat names the first; recovery reads each job's own worker field, so a lost
        # worker's whole batch goes back to the queue.
        self.current_job = picked[0]
        self.heartbeat()
        try:
            if len(picked) == 1:
                return self._run(picked[0])
            outcomes = self._run_batch(picked)
            return f"batch:{len(picked)}:" + ",".join(outcomes)
        finally:
            self.current_job = None
            self.last_activity = time.time()
            self.heartbeat()

    def _fail(self, job_id: str, code: str, message: str, detail: object = None) -> str:
        # ``message`` is a short sentence for whoever asked; the operator's detail (exception text,
        # URLs, paths, settings) goes to the log and to the record's error.detail, which only admin
        # tokens see (shared/job.py).
        error = {"code": code, "message": message}
        if detail:
            error["detail"] = str(detail)[:MAX_DETAIL]
        self.jobs.finish(job_id, self.id, FAILED, error=error)
        log.warning("job %s failed: %s: %s%s", job_id, code, message, f" ({detail})" if detail else "")
        return FAILED

    def _prepare(self, job_id: str):
        """The job, its kind, its validated parameters (precision resolved), that precision and the
        engine; or, when it cannot run here, the outcome of failing it (a str)."""
        job = self.jobs.get(job_id)
        kind = get_kind(job.kind)
        if kind is None:
            return self._fail(job_id, "invalid_params", f"this worker does not run jobs of kind {job.kind!r}")
        try:
            params = kind.params.model_validate(job.params)
        except ValueError as exc:
            return self._fail(job_id, "invalid_params", "the job's parameters are invalid", exc)
        precision = getattr(params, "precision", None)
        if precision is not None:
            from .device import resolve_precision

            precision, warning = resolve_precision(precision, self.bf16)
            params = params.model_copy(update={"precision": precision})
            if warning and warning not in job.warnings:  # a second attempt does not repeat it
                self.jobs.update(job_id, self.id, warnings=[*job.warnings, warning])
        engine = self.dreamers.get(params.model)
        if engine is None:
            why = self.unavailable.get(params.model, f"this worker does not load {params.model} (DREAMQ_MODELS)")
            return self._fail(job_id, "model_unavailable", f"the model {params.model} is not available on this server",
                              why)
        return job, kind, params, precision, engine

    def _context(self, job, kind, params, engine, started: float):
        """The handler's Context for one job, its stop check and its preview writer."""
        job_id = job.id
        files = Files(self.store, job_id, kind.files)
        stop = _StopCheck(self, job_id, started)

        def write_preview(png: bytes) -> None:  # on the preview thread (worker/preview.py)
            url = files.put("preview", png)
            self.jobs.update(job_id, self.id, preview_url=url)

        timings: dict[str, float] = {}
        previews = PreviewWriter(write_preview)
        ctx = Context(job=job, params=params, engine=engine, files=files,
                      progress=_ProgressWriter(self, job_id), preview=previews, should_stop=stop,
                      record=lambda **fields: self.jobs.update(job_id, self.id, **fields),
                      weights=self.fingerprints.get(params.model), timings=timings)
        return ctx, stop, previews

    def _ended(self, job_id: str, exc: Exception, stop: _StopCheck) -> str:
        """What a handler's exception makes of its job: stopped, or failed with the matching code."""
        from .dream import Canceled, LossNotFinite

        if isinstance(exc, Canceled):
            return self._stopped(job_id, stop.reason or "canceled")
        if isinstance(exc, LossNotFinite):
            return self._fail(job_id, "loss_not_finite",
                              f"{exc}: float32 overflowed; lower the layer weights or the step")
        if isinstance(exc, JobFailed):
            return self._fail(job_id, exc.code, exc.message, exc.detail)
        if isinstance(exc, StoreError):
            return self._fail(job_id, "store_error", f"the image store failed (job {job_id}; details in the worker log)",
                              exc)
        # a bug or a device error: fail the job, keep the worker
        if stop.reason:  # a callback failed because the job was being stopped: stopping wins
            return self._stopped(job_id, stop.reason)
        log.error("job %s crashed", job_id, exc_info=exc)
        return self._fail(job_id, "internal_error", f"internal error (job {job_id}; details in the worker log)",
                          f"{type(exc).__name__}: {exc}")

    def _succeeded(self, ctx: Context, outcome: dict, precision, started: float, **metrics: Any) -> str:
        job = ctx.job
        ctx.progress.flush()
        if precision is not None:
            outcome.setdefault("precision", precision)
        outcome["metrics"] = {**outcome.get("metrics", {}), **metrics, "timings": timing_metrics(job, ctx.timings)}
        self.jobs.finish(job.id, self.id, SUCCEEDED, **outcome)
        log.info("job %s succeeded in %.2fs", job.id, time.monotonic() - started)
        return SUCCEEDED

    def _run(self, job_id: str) -> str:
        started = time.monotonic()
        prepared = self._prepare(job_id)
        if isinstance(prepared, str):
            return prepared
        job, kind, params, precision, engine = prepared
        ctx, stop, previews = self._context(job, kind, params, engine, started)
        try:
            try:
                outcome = HANDLERS[kind.name](ctx)
            finally:
                with timed(ctx.timings, "store_s"):  # the last preview, if its write is still going on
                    previews.close()
        except Exception as exc:  # noqa: BLE001 — _ended says what it makes of the job
            return self._ended(job_id, exc, stop)
        return self._succeeded(ctx, outcome, precision, started)

    def _run_batch(self, job_ids: list[str]) -> list[str]:
        """Several jobs picked together (shared/jobs.py, "Batching") run as one batch: each with its
        own stop check, progress, previews and timings, one batched dream (the kind's ``run_batch``),
        each finished on its own with ``metrics.batch``.  A job canceled leaves the others running; a
        shutdown gives every unfinished one back to the queue.  Jobs that cannot join the batch (a
        kind without ``run_batch``, another shape, a guide) run one by one after it, as ``_run``."""
        started = time.monotonic()
        outcomes: dict[str, str] = {}
        members = []  # (job id, ctx, stop, previews, precision, loaded)
        alone: list[str] = []
        for job_id in job_ids:
            prepared = self._prepare(job_id)
            if isinstance(prepared, str):
                outcomes[job_id] = prepared
                continue
            job, kind, params, precision, engine = prepared
            # A handler module may batch: ``load``, ``can_batch`` and ``run_batch`` beside its ``run``.
            handler = sys.modules[HANDLERS[kind.name].__module__]
            if not hasattr(handler, "run_batch"):
                alone.append(job_id)
                continue
            ctx, stop, previews = self._context(job, kind, params, engine, started)
            try:
                with timed(ctx.timings, "load_s"):
                    loaded = handler.load(ctx)
            except Exception as exc:  # noqa: BLE001
                previews.close()
                outcomes[job_id] = self._ended(job_id, exc, stop)
                continue
            members.append((job_id, ctx, stop, previews, precision, loaded, handler))
        if members:
            handler = members[0][6]
            ctxs = [m[1] for m in members]
            fits = (len({m[6] for m in members}) == 1 and handler.can_batch(ctxs, [m[5] for m in members]))
            if not fits:
                for m in members:
                    m[3].close()
                alone = [m[0] for m in members] + alone
                members = []
        if members:
            try:
                results = handler.run_batch([m[1] for m in members], [m[5][0] for m in members])
            except Exception as exc:  # noqa: BLE001 — the batch failed: each job fails as its own run would
                results = [exc] * len(members)
            for (job_id, ctx, stop, previews, precision, _, _), result in zip(members, results):
                with timed(ctx.timings, "store_s"):
                    previews.close()
                if isinstance(result, BaseException):
                    outcomes[job_id] = self._ended(job_id, result, stop)
                else:
                    outcomes[job_id] = self._succeeded(ctx, result, precision, started, batch=len(members))
        for job_id in alone:  # started with the batch: their own runs, one by one
            if self.stopping.is_set():
                outcomes[job_id] = self._stopped(job_id, "shutdown")
            else:
                outcomes[job_id] = self._run(job_id)
        return [outcomes[job_id] for job_id in job_ids]

    def _stopped(self, job_id: str, reason: str) -> str:
        if reason == "canceled":
            self.jobs.finish(job_id, self.id, CANCELED, error={"code": "canceled", "message": "canceled while running"})
            return CANCELED
        if reason == "timeout":
            limit = self.settings.job_time_limit_s
            self.jobs.finish(job_id, self.id, FAILED,
                             error={"code": "timeout", "message": f"the job ran longer than its {limit}s limit"})
            return FAILED
        if reason == "shutdown":
            # Give the job back to the queue: it starts over on the next worker.
            outcome, token = self.jobs.requeue_lost(job_id, self.id, self.settings.max_attempts + 1)
            if outcome == QUEUED:
                self.jobs.send(job_id, token)
            return f"requeued:{outcome}"
        return "lost"  # someone else owns it now


def timing_metrics(job, timings: dict[str, float]) -> dict[str, float]:
    """metrics.timings: the queue's wait and the handler's parts, in seconds."""
    out = {"queue_s": (job.started_at or 0) - (job.enqueued_at or job.created_at) if job.started_at else None}
    for part in ("load_s", "steps_s", "preview_s", "encode_s", "store_s"):
        out[part] = timings.get(part, 0.0)
    return {k: round(v, 4) for k, v in out.items() if v is not None}


class _StopCheck:
    """The handler's ``should_stop``: True (and why, in ``reason``) once the job must stop."""

    def __init__(self, worker: Worker, job_id: str, started: float):
        self.worker, self.job_id, self.started = worker, job_id, started
        self.reason: str | None = None  # "shutdown" | "timeout" | "canceled" | "lost"
        self.last_check = 0.0

    def __call__(self) -> bool:
        self.reason = self.reason or self._why()
        return self.reason is not None

    def _why(self) -> str | None:
        worker = self.worker
        if worker.stopping.is_set():
            return "shutdown"
        if time.monotonic() - self.started > worker.settings.job_time_limit_s:
            return "timeout"
        # At most one HGET per 50 ms: cheap next to a gradient step.
        now = time.monotonic()
        if now - self.last_check < 0.05:
            return None
        self.last_check = now
        status, cancel_requested, owner = worker.jobs.control(self.job_id)
        if cancel_requested:
            return "canceled"
        if status != "running" or owner != worker.id:
            return "lost"
        return None


class _ProgressWriter:
    """Writes a handler's progress fields to the job record at most every ``progress_interval_s``
    (and always when ``final``: the end of an octave or a frame)."""

    def __init__(self, worker: Worker, job_id: str):
        self.worker, self.job_id = worker, job_id
        self.interval = worker.settings.progress_interval_s
        self.last_write = 0.0
        self.pending: dict | None = None

    def __call__(self, fields: dict, final: bool = False) -> None:
        self.pending = fields
        if final or time.monotonic() - self.last_write >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.pending is not None:
            self.worker.jobs.update(self.job_id, self.worker.id, progress=self.pending)
            self.last_write = time.monotonic()
            self.pending = None
