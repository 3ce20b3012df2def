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
