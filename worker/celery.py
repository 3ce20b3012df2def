"""The dreamq worker as a Celery app, where Celery looks for one: ``celery -A worker``.

    celery -A worker worker -Q dreamq            # a complete dreamq worker
    celery -A worker inspect active              # what each worker runs now
    celery -A worker events / flower             # task and worker events

Beside a `dreamq up`, with no DREAMQ_REDIS_URL, these find its embedded Redis in the data
directory (./data, or DREAMQ_DATA_DIR; shared/queue.py ``broker_url``); with
DREAMQ_REDIS_SENTINELS, the master the sentinels name.

``dreamq worker`` runs the same app (worker/main.py).  Two bootsteps make a plain
Celery worker a dreamq worker:

* ``WarmWorker`` (worker blueprint) runs before Celery's consumer, the blueprint's
  last step: it waits for Redis, starts the heartbeat, loads and warms the models,
  requeues the jobs of dead workers, and only then binds the task to this process'
  ``Worker``.  So no message is taken before the models are warm.
* ``Consuming`` (consumer blueprint) tells the ``Worker`` while the consumer takes
  messages from the dreamq queue: an idle worker re-dispatches stranded jobs only
  then (worker/worker.py, "No stranded job").

SIGTERM (warm shutdown) asks the running job to stop at its next step; the job goes
back to the queue before the worker exits, as it always did.
"""
from __future__ import annotations

import logging
import os
import time

from celery import Celery, bootsteps
from celery.exceptions import WorkerShutdown
from celery.signals import worker_shutdown, worker_shutting_down

from shared.queue import QUEUE, broker_url, lazy_app, make_celery
from shared.settings import Settings, get_settings

from . import tasks

log = logging.getLogger("dreamq.worker")


def configure_compile_cache(settings: Settings) -> None:
    """JAX compiles every new input shape: keep what it compiled on disk (DREAMQ_COMPILE_CACHE, else
    the data directory), so that a restarted worker loads a shape it has seen instead of compiling it."""
    import keras

    if keras.backend.backend() != "jax":
        return
    import jax

    path = settings.compile_cache or settings.data_dir / "jax-cache"
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Every compiled program, however quick to compile: a new size's small resizes add up too.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def configure_threads(settings: Settings) -> None:
    import keras

    if keras.backend.backend() == "tensorflow" and (settings.intra_op_threads or settings.inter_op_threads):
        import tensorflow as tf

        # Bounded threads let a worker share a host with the web process.
        if settings.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
        if settings.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)


class WarmWorker(bootsteps.StartStopStep):
    """Makes this process' ``Worker`` ready before Celery's consumer takes a message."""

    label = "dreamq worker"

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.worker = None
        # Not weak: the step would otherwise be the only reference to these handlers.
        worker_shutting_down.connect(self._shutting_down, weak=False)
        worker_shutdown.connect(self._shut_down, weak=False)

    def start(self, parent):
        from celery.worker.state import maybe_shutdown

        from .worker import Worker

        app = parent.app
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        worker = self.worker = Worker(app.dreamq_settings, app, device=app.dreamq_device)
        if worker.wait_for_redis():
            configure_threads(app.dreamq_settings)  # before TensorFlow runs its first op
            configure_compile_cache(app.dreamq_settings)  # before JAX compiles the warm-up
            worker.heartbeat()  # visible (not ready) while models load
            worker.start_heartbeat()
            worker.load_models()  # before consuming: no job pays for a model load
        if worker.stopping.is_set():
            # SIGTERM meanwhile: Celery's warm shutdown, before any message is taken.
            maybe_shutdown()
            raise WorkerShutdown(0)
        worker.recover_lost_jobs()
        tasks.bind(worker)

    def _shutting_down(self, **_):
        if self.worker is not None:
            self.worker.stopping.set()  # the running job is given back at its next step

    def _shut_down(self, sender=None, **_):
        # After the pool has finished the running job (a bootstep's stop runs before that).
        if self.worker is not None:
            self.worker.stop_heartbeat()


class Consuming(bootsteps.StartStopStep):
    """Marks when Celery's consumer takes messages from the dreamq queue (after a reconnect, too)."""

    label = "dreamq consuming"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c):
        worker = tasks.bound()
        if worker is not None and QUEUE in c.app.amqp.queues.consume_from:
            worker.consuming_since = time.time()

    def stop(self, c):
        worker = tasks.bound()
        if worker is not None:
            worker.consuming_since = None

    shutdown = stop


def create_app(settings: Settings | None = None, device: str | None = None) -> Celery:
    """The worker's Celery app: the shared configuration, the task, and the two bootsteps."""
    settings = settings or get_settings()
    # Beside `dreamq up`: its embedded Redis, for the worker's records too.  Under Sentinel the
    # records' client asks the sentinels as the broker does (shared/redis_client.py): nothing to copy.
    if not settings.has_redis:
        settings = settings.model_copy(update={"redis_url": broker_url(settings)})
    app = make_celery(settings)
    tasks.register(app)
    app.dreamq_settings = settings
    app.dreamq_device = device or os.environ.get("DREAMQ_DEVICE", "cpu")
    app.steps["worker"].add(WarmWorker)
    app.steps["consumer"].add(Consuming)
    return app


# `celery -A worker` finds ``app`` here, built on first use.
__getattr__ = lazy_app(__name__, create_app)
