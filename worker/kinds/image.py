"""The handler of kind=image (shared/kinds/image.py): decode the photo, dream it, store the result."""
from __future__ import annotations

import time

import numpy as np

from shared.images import ImageError, decode_image, encode_png
from shared.models import MODELS
from shared.store import StoreError

from .context import Context, JobFailed


def progress_fields(p) -> dict:
    """The engine's Progress as the record's progress fields."""
    fraction = p.fraction
    eta = p.elapsed_s / fraction * (1 - fraction) if fraction > 0 else None
    return {"fraction": round(fraction, 4), "octave": p.octave, "octaves": p.octaves, "step": p.step,
            "steps": p.steps, "loss": round(p.loss, 4), "eta_s": None if eta is None else round(eta, 2)}


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
    guide = load_guide(ctx)

    started = time.monotonic()
    result = ctx.engine.dream(
        image, ctx.params, guide=guide,
        # The last step of an octave is always written: a client sees every octave end.
        on_progress=lambda p: ctx.progress(progress_fields(p), final=p.step == p.steps - 1),
        on_preview=lambda octave, rgb: ctx.preview(rgb),
        should_cancel=ctx.should_stop)
    dream_s = time.monotonic() - started
    url = ctx.files.put("result", encode_png(result))
    return {"result_url": url, "dream_s": round(dream_s, 4)}
