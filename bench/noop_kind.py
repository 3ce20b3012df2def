"""A bench-only job kind, ``noop``, registered by DREAMQ_PLUGINS: a job that dreams nothing.

    DREAMQ_PLUGINS=bench.noop_kind dreamq worker ...     # the worker runs kind=noop jobs
    bench.noop_kind.install(settings)                     # in a process that submits them

It exists to measure the queue, not the engine (bench/ceiling.py): a ``noop`` job goes through
the whole lifecycle that a real job does (record, Celery message, start, progress, previews,
finish, the metrics counters, the result in the store) and its handler returns at once.  With
its parameters it can also write the Redis traffic of a real job without its compute:

    steps      progress calls (and cancel checks), as the engine makes one per gradient step;
               the worker throttles them to one write per DREAMQ_PROGRESS_INTERVAL_S, and always
               writes the last (``final``), as at the end of an octave
    seconds    how long the steps take in all (a sleep), so the throttle acts as in a real job
    previews   previews written (a tiny PNG each, and the record's preview_url)

The worker still wants a loaded model named by the job (``params.model``: worker/worker.py
looks the engine up before it calls a handler), so a worker that runs these loads one:
DREAMQ_MODELS=vgg16_hed, the bundled offline model the tests use.  The handler never touches it.

Nothing in dreamq names this kind; a process without the plugin refuses it (unknown kind at
submit; ``invalid_params`` at a worker).
"""
from __future__ import annotations

import sys
import time

from pydantic import Field

from shared.params import DreamParams

NAME = "noop"
FILES = {"input": "input.png", "preview": "preview.png", "result": "result.txt"}
RESULT = b"noop\n"


class NoopParams(DreamParams):
    """An image job's parameters (the web reads them, the record holds as many bytes), and three more."""

    model: str = Field("vgg16_hed", title="Model", description="The model a worker must have loaded (unused).")
    steps: int = Field(0, ge=0, le=10_000, title="Steps", description="Progress calls, as the engine's steps.")
    seconds: float = Field(0.0, ge=0, le=600, title="Seconds", description="How long the steps take in all.")
    previews: int = Field(0, ge=0, le=100, title="Previews", description="Previews written.")


def _parse(data: dict) -> NoopParams:
    from shared.params import validate

    data = {"model": "vgg16_hed", **data}  # before DreamParams fills in that model's defaults
    return validate(NoopParams, data)


def kind():
    from shared.kinds.kind import Kind

    return Kind(name=NAME, title="Nothing (bench)", summary="a job that dreams nothing: bench/noop_kind.py",
                params=NoopParams, parse=_parse, files=FILES, media_type="text/plain",
                result_types={"text/plain": ".txt"}, progress=lambda params: {"fraction": 0.0})


def run(ctx) -> dict:
    """The handler: ``steps`` progress calls over ``seconds``, ``previews`` previews, a 5-byte result."""
    import numpy as np

    p: NoopParams = ctx.params
    started = time.monotonic()
    preview_at = {round((i + 1) * p.steps / p.previews) - 1 for i in range(p.previews)} if p.steps else set()
    pixel = np.zeros((8, 8, 3), np.uint8)
    for i in range(p.steps):
        if ctx.should_stop():
            from worker.dream import Canceled  # the worker's own: it then reads why (canceled, timeout...)

            raise Canceled()
        ctx.progress({"fraction": round((i + 1) / p.steps, 4), "step": i}, final=i == p.steps - 1)
        if i in preview_at:
            ctx.preview(pixel)
        if p.seconds:
            time.sleep(p.seconds / p.steps)
    if not p.steps:
        for _ in range(p.previews):
            ctx.preview(pixel)
    url = ctx.files.put("result", RESULT)
    return {"result_url": url, "dream_s": round(time.monotonic() - started, 4)}


def register() -> None:
    """Declare the kind (every process) and its handler (a process that has imported the worker)."""
    import shared.kinds as kinds

    kinds.KINDS.setdefault(NAME, kind())
    # worker/kinds builds HANDLERS by importing worker.kinds.<name>: this module answers for it,
    # whether worker.kinds is imported after this (a bench process) or was before (a worker,
    # which installs its plugins once it has imported the handlers).
    sys.modules.setdefault(f"worker.kinds.{NAME}", sys.modules[__name__])
    handlers = sys.modules.get("worker.kinds")
    if handlers is not None and hasattr(handlers, "HANDLERS"):
        handlers.HANDLERS.setdefault(NAME, run)


def install(settings=None) -> None:
    register()
