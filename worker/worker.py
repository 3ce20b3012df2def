"""A dreamq worker: one process, one device, warm models, one job at a time.

Loads and warms its models *before* it consumes (a job never pays for a
model load), announces itself in Redis with a heartbeat, runs jobs through
the engine, and puts back in the queue the jobs of workers that died.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import redis

from shared.images import ImageError, decode_image, encode_png
from shared.job import CANCELED, FAILED, QUEUED_S, SUCCEEDED, JobQueueState
from shared.params import DreamParams
from shared.queue import enqueue
from shared.settings import Settings
from shared.workers import WORKERS, worker_key
from shared.store import INPUT, PREVIEW, RESULT, StoreError, open_store

log = logging.getLogger("dreamq.worker")

WORKERS = "dreamq:workers"

# Fault injection for the reliability tests, inert unless the worker's environment has
# DREAMQ_TEST_FAULTS=1: a job whose id has the key ``dreamq:test:crash:<job id>`` in Redis
# kills its worker (SIGKILL, as the OOM killer would) each time it starts.
TEST_FAULTS = os.environ.get("DREAMQ_TEST_FAULTS") == "1"
TEST_CRASH = "dreamq:test:crash:"


def worker_key(worker_id: str) -> str:
    return f"dreamq:worker:{worker_id}"


class Stop(Exception):
    """Why a running job was stopped between two steps."""

    def __init__(self, reason: str):
        self.reason = reason  # "canceled" | "timeout" | "shutdown" | "lost"
        super().__init__(reason)


class Worker:
    def __init__(self, settings: Settings, celery_app, device: str = "cpu"):
        self.settings = settings
        self.celery = celery_app
        self.device = device
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.r = redis.Redis.from_url(settings.redis_url, socket_timeout=10, health_check_interval=30)
        self.jobs = JobQueueState(self.r, settings.job_ttl_s)
        self.store = open_store(settings)
        self.dreamers: dict[str, Any] = {}
        self.unavailable: dict[str, str] = {}
        self.current_job: str | None = None
        self.bf16 = None  # Bf16Support, detected with the models
        self.ready = False
        self.stopping = threading.Event()
        self._beat = threading.Event()
        self._last_sweep = 0.0
        self.started_at = time.time()

    # -- start-up --------------------------------------------------------------

    def load_models(self) -> None:
        """Build and warm every configured model; a missing one is reported, not fatal."""
        from .device import detect_bf16
        from .dream import Dreamer
        from .models import WeightsUnavailable, load_model

        self.bf16 = detect_bf16(self.settings.bf16)
        log.info("bf16 %s on %s: %s", "native" if self.bf16.native else "not native", self.bf16.device,
                 self.bf16.reason)
        for name in self.settings.models:
            t0 = time.perf_counter()
            try:
                dreamer = Dreamer(load_model(name), auto_tile_pixels=self.settings.tile_above_pixels or None,
                                  auto_tile_size=self.settings.tile_size)
                dreamer.warm_up()
            except WeightsUnavailable as exc:
                self.unavailable[name] = str(exc)
                log.warning("model %s unavailable: %s", name, exc)
                continue
            self.dreamers[name] = dreamer
            log.info("model %s ready in %.1fs", name, time.perf_counter() - t0)
        self.ready = True
        self.heartbeat()

    def describe(self) -> dict[str, Any]:
        import keras

        models = {name: "ready" for name in self.dreamers}
        models.update({name: f"unavailable: {why}" for name, why in self.unavailable.items()})
        return {"id": self.id, "host": socket.gethostname(), "pid": os.getpid(), "device": self.device,
                "backend": keras.backend.backend(), "models": models, "job": self.current_job,
                "bf16": self.bf16.as_dict() if self.bf16 else None,
                "ready": self.ready and not self.stopping.is_set(), "started_at": self.started_at}

    # -- heartbeat and lost-worker recovery -----------------------------------

    def heartbeat(self) -> None:
        ttl = max(1, int(self.settings.heartbeat_ttl_s))
        with self.r.pipeline() as p:
            p.set(worker_key(self.id), json.dumps(self.describe()), ex=ttl)
            p.sadd(WORKERS, self.id)
            p.execute()

    def start_heartbeat(self) -> threading.Thread:
        def loop():
            while not self._beat.wait(self.settings.heartbeat_s):
                try:
                    self.heartbeat()
                    self.recover_lost_jobs()
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
                p.delete(worker_key(self.id))
                p.srem(WORKERS, self.id)
                p.execute()
        except redis.exceptions.RedisError:
            pass

    def recover_lost_jobs(self) -> None:
        """Requeue running jobs whose worker's heartbeat has expired (it was killed).

        Much sooner than Redis' visibility timeout, which must outlast the longest job.
        """
        for job_id, owner in self.jobs.running():
            if owner == self.id or (owner and self.r.exists(worker_key(owner))):
                continue
            outcome, token = self.jobs.requeue_lost(job_id, owner or "", self.settings.max_attempts)
            if outcome == QUEUED_S:
                log.warning("job %s: worker %s lost, queued again", job_id, owner)
                enqueue(self.celery, job_id, token)
            elif outcome == FAILED:
                log.error("job %s: worker lost %d times, failed", job_id, self.settings.max_attempts)
        for raw in self.r.smembers(WORKERS):
            if not self.r.exists(worker_key(raw.decode())):
                self.r.srem(WORKERS, raw)

    def sweep_expired(self, every_s: float = 60.0) -> None:
        """Delete the stored files of jobs whose records have expired."""
        if time.time() - self._last_sweep < every_s:
            return
        self._last_sweep = time.time()
        for job_id in self.jobs.expired():
            self.store.delete(job_id)
            self.jobs.forget(job_id)

    # -- running one job -------------------------------------------------------

    def run(self, job_id: str, dispatch: str) -> str:
        """Run the job if this delivery is the current one; return what happened."""
        outcome = self.jobs.start(job_id, dispatch, self.id)
        if outcome != "ok":
            # A stale or duplicate delivery, or a job canceled while queued.
            log.info("job %s: not started (%s)", job_id, outcome)
            return f"skipped:{outcome}"
        self.current_job = job_id
        self.heartbeat()
        try:
            return self._run(job_id)
        finally:
            self.current_job = None
            self.heartbeat()

    def _run(self, job_id: str) -> str:
        if TEST_FAULTS and self.r.exists(TEST_CRASH + job_id):
            log.error("job %s: DREAMQ_TEST_FAULTS crash: killing this worker", job_id)
            os.kill(os.getpid(), signal.SIGKILL)
        job = self.jobs.get(job_id)
        started = time.monotonic()

        def fail(code: str, message: str) -> str:
            self.jobs.finish(job_id, self.id, FAILED, error={"code": code, "message": message})
            log.warning("job %s failed: %s: %s", job_id, code, message)
            return FAILED

        try:
            params = DreamParams.model_validate(job.params)
        except ValueError as exc:
            return fail("invalid_params", str(exc))
        from .device import resolve_precision

        precision, warning = resolve_precision(params.precision, self.bf16)
        params = params.model_copy(update={"precision": precision})
        if warning and warning not in job.warnings:  # a second attempt does not repeat it
            self.jobs.update(job_id, self.id, warnings=[*job.warnings, warning])
        dreamer = self.dreamers.get(params.model)
        if dreamer is None:
            why = self.unavailable.get(params.model, f"this worker does not load {params.model}")
            return fail("model_unavailable", f"model {params.model} is unavailable: {why}")
        try:
            data = self.store.get(job_id, INPUT)
            if data is None:
                return fail("input_missing", "the uploaded image is no longer in the store")
            image = decode_image(data)
        except (StoreError, ImageError) as exc:
            return fail("input_unreadable", str(exc))

        progress = _ProgressWriter(self, job_id, params)
        last_check = [0.0]

        def should_stop() -> bool:
            if self.stopping.is_set():
                raise Stop("shutdown")
            if time.monotonic() - started > self.settings.job_time_limit_s:
                raise Stop("timeout")
            # One HGET per step: cheap next to a gradient step.
            now = time.monotonic()
            if now - last_check[0] >= 0.05:
                last_check[0] = now
                status, flag, owner = self.r.hmget(f"dreamq:job:{job_id}", "status", "cancel_requested", "worker")
                if flag == b"1":
                    raise Stop("canceled")
                if status != b"running" or (owner or b"").decode() != self.id:
                    raise Stop("lost")
            return False

        def on_preview(octave: int, rgb) -> None:
            url = self.store.put(job_id, PREVIEW, encode_png(rgb))
            self.jobs.update(job_id, self.id, preview_url=url)

        from .dream import Canceled

        try:
            t_dream = time.monotonic()
            result = dreamer.dream(image, params, on_progress=progress, on_preview=on_preview,
                                   should_cancel=should_stop)
            dream_s = time.monotonic() - t_dream
            url = self.store.put(job_id, RESULT, encode_png(result))
        except Stop as stop:
            return self._stopped(job_id, stop.reason)
        except Canceled:
            return self._stopped(job_id, "canceled")
        except StoreError as exc:
            return fail("store_error", str(exc))
        except Exception as exc:  # a bug or a device error: fail the job, keep the worker
            log.exception("job %s crashed", job_id)
            return fail("internal_error", f"{type(exc).__name__}: {exc}")
        progress.flush()
        self.jobs.finish(job_id, self.id, SUCCEEDED, result_url=url, dream_s=round(dream_s, 4), precision=precision)
        log.info("job %s succeeded in %.2fs", job_id, time.monotonic() - started)
        return SUCCEEDED

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
            if outcome == QUEUED_S:
                enqueue(self.celery, job_id, token)
            return f"requeued:{outcome}"
        return "lost"  # someone else owns it now


class _ProgressWriter:
    """Writes progress to the job record at most every ``progress_interval_s``."""

    def __init__(self, worker: Worker, job_id: str, params: DreamParams):
        self.worker, self.job_id = worker, job_id
        self.interval = worker.settings.progress_interval_s
        self.last_write = 0.0
        self.pending: dict | None = None

    def __call__(self, p) -> None:
        fraction = p.fraction
        eta = p.elapsed_s / fraction * (1 - fraction) if fraction > 0 else None
        self.pending = {"fraction": round(fraction, 4), "octave": p.octave, "octaves": p.octaves, "step": p.step,
                        "steps": p.steps, "loss": round(p.loss, 4), "eta_s": None if eta is None else round(eta, 2)}
        now = time.monotonic()
        if now - self.last_write >= self.interval or p.step == p.steps - 1:
            self.flush()

    def flush(self) -> None:
        if self.pending is not None:
            self.worker.jobs.update(self.job_id, self.worker.id, progress=self.pending)
            self.last_write = time.monotonic()
            self.pending = None
