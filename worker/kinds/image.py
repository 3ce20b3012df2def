"""The handler of kind=image (shared/kinds/image.py): decode the photo, dream it, store the result."""
from __future__ import annotations

import time

import numpy as np

from shared.images import ImageError, decode_image, encode_png
from shared.kinds.image import KIND
from shared.models import MODELS
from shared.provenance import png_info
from shared.store import StoreError

from ..eta import Eta
from .context import Context, JobFailed, timed

# zlib's fastest level: 3x faster than the default 6 on a 640x960 dream (72 vs 227 ms on this project's CI
# machine) for a file about 12% larger; the result is encoded once, on the job's time.
RESULT_PNG_LEVEL = 1


def progress_fields(p, eta: Eta) -> dict:
    """The engine's Progress as the record's progress fields; ``eta`` weighs the steps left by their pixels."""
    fraction = p.fraction
    left = eta.left_s(eta.done(0, p), p.elapsed_s)
    return {"fraction": round(fraction, 4), "octave": p.octave, "octaves": p.octaves, "step": p.step,
            "steps": p.steps, "loss": round(p.loss, 4), "eta_s": None if left is None else round(left, 2)}


def load_guide(ctx: Context) -> np.ndarray | None:
    """The job's guide image (file role ``guide``) as uint8 RGB, or None when it has none.

    For any kind whose files declare a ``guide`` role; pass the result to
    ``ctx.engine.dream(..., guide=...)``.  Decoded already fitted to the model's
    guide_side, the size the engine takes its features at, so a big upload is not
    held in memory for the whole job.  Raises JobFailed("input_unreadable") as for
    the input.
    """
    if "guide" not in ctx.files.names:
        return None
    try:
        data = ctx.files.get("guide")
    except StoreError as exc:
        raise JobFailed("input_unreadable", "the guide image could not be read back", exc) from None
    if data is None:
        return None
    spec = MODELS.get(getattr(ctx.params, "model", None))
    try:
        return decode_image(data, max_side=spec.guide_side if spec else None)
    except ImageError as exc:
        raise JobFailed("input_unreadable", "the guide image could not be read back", exc) from None


def run(ctx: Context) -> dict:
    with timed(ctx.timings, "load_s"):
        image, guide = load(ctx)
    eta = Eta(*image.shape[:2], ctx.params)
    started = time.monotonic()
    result = ctx.engine.dream(
        image, ctx.params, guide=guide,
        # The last step of an octave is always written: a client sees every octave end.
        on_progress=lambda p: ctx.progress(progress_fields(p, eta), final=p.step == p.steps - 1),
        on_preview=lambda octave, rgb: ctx.preview(rgb),
        should_cancel=ctx.should_stop, timings=ctx.timings)
    dream_s = time.monotonic() - started
    # The PNG says how it was dreamed (shared/provenance.py): `dreamq submit --params-from` reads it.
    with timed(ctx.timings, "encode_s"):
        png = encode_png(result, png_info(KIND.name, ctx.params, ctx.weights), compress_level=RESULT_PNG_LEVEL)
    with timed(ctx.timings, "store_s"):
        url = ctx.files.put("result", png)
    return {"result_url": url, "dream_s": round(dream_s, 4)}


def can_batch(ctxs: list[Context], loaded: list[tuple[np.ndarray, np.ndarray | None]]) -> bool:
    """Whether these jobs, their pictures and guides as ``load`` gave them, dream as one batch
    (``run_batch``): one engine, one shape, the same parameters but the seed, no guide."""
    first = ctxs[0]

    def steps(ctx):
        return {k: v for k, v in ctx.params.model_dump().items() if k != "seed"}

    shapes = {image.shape for image, _ in loaded}
    return (len(shapes) == 1 and all(guide is None for _, guide in loaded)
            and all(ctx.engine is first.engine and steps(ctx) == steps(first) for ctx in ctxs)
            and first.engine.can_batch(loaded[0][0].shape[:2], first.params))


def run_batch(ctxs: list[Context], images: list[np.ndarray]) -> list[dict | BaseException]:
    """``run`` of several jobs at once, their pictures (``load``) already decoded and ``can_batch``:
    one batched dream (worker/dream.py ``dream_batch``), then each result encoded and stored.  One
    outcome per job: ``run``'s dict, or the exception its own run would have raised (Canceled,
    LossNotFinite, StoreError...)."""
    from ..dream import Canceled

    etas = [Eta(*image.shape[:2], ctx.params) for ctx, image in zip(ctxs, images)]

    def progress(ctx, eta):
        return lambda p: ctx.progress(progress_fields(p, eta), final=p.step == p.steps - 1)

    def preview(ctx):
        return lambda octave, rgb: ctx.preview(rgb)

    started = time.monotonic()
    results = ctxs[0].engine.dream_batch(
        images, ctxs[0].params, on_progress=[progress(ctx, eta) for ctx, eta in zip(ctxs, etas)],
        on_preview=[preview(ctx) for ctx in ctxs], should_cancel=[ctx.should_stop for ctx in ctxs],
        timings=[ctx.timings for ctx in ctxs])
    dream_s = time.monotonic() - started
    outcomes: list[dict | BaseException] = []
    for ctx, result in zip(ctxs, results):
        if result is None:
            outcomes.append(Canceled())
            continue
        if isinstance(result, BaseException):
            outcomes.append(result)
            continue
        try:
            with timed(ctx.timings, "encode_s"):
                png = encode_png(result, png_info(KIND.name, ctx.params, ctx.weights),
                                 compress_level=RESULT_PNG_LEVEL)
            with timed(ctx.timings, "store_s"):
                url = ctx.files.put("result", png)
        except Exception as exc:  # noqa: BLE001 — this job's failure, not its batch's
            outcomes.append(exc)
            continue
        outcomes.append({"result_url": url, "dream_s": round(dream_s, 4)})
    return outcomes


def load(ctx: Context) -> tuple[np.ndarray, np.ndarray | None]:
    """The job's photo and guide (or None), decoded; JobFailed when they cannot be read."""
    try:
        data = ctx.files.get("input")
    except StoreError as exc:
        raise JobFailed("input_unreadable", "the uploaded image could not be read back", exc) from None
    if data is None:
        raise JobFailed("input_missing", "the uploaded image is no longer in the store")
    try:
        image = decode_image(data)
    except ImageError as exc:
        raise JobFailed("input_unreadable", "the uploaded image could not be read back", exc) from None
    return image, load_guide(ctx)
