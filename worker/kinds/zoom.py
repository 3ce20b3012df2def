"""The handler of kind=zoom (shared/kinds/zoom.py): dream frame after frame, resumable, then
encode the video from the stored frames (worker/video.py)."""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time

import numpy as np

from shared.images import ImageError, decode_image, encode_png
from shared.kinds.zoom import KIND, ZoomParams, check_work, result_format
from shared.params import ParamsError
from shared.provenance import png_info

from ..eta import Eta
from ..video import encode
from .context import Context, Files, JobFailed, timed

log = logging.getLogger(__name__)


def zoom_frame(rgb: np.ndarray, zoom: float, rotate: float, resample: str = "lanczos") -> np.ndarray:
    """The next frame's start: the centre 1/zoom of ``rgb`` at full size, turned ``rotate``
    degrees counter-clockwise about the centre; outside the picture, the edge.

    Lanczos (bicubic when turning: Pillow's affine map stops there), not bilinear: each frame is
    a zoom of the last, so a soft filter compounds, and by frame 30 a bilinear clip kept 0.25 of
    its first frame's sharpness (bench/zoom_sharpness.py, docs/ZOOM_AND_GUIDES.md).  ``resample``:
    another Pillow filter, for that bench's comparisons."""
    from PIL import Image

    if zoom == 1 and rotate == 0:
        return rgb
    h, w = rgb.shape[:2]
    theta = math.radians(rotate)
    c, s = math.cos(theta) / zoom, math.sin(theta) / zoom
    # Output pixel (x, y) samples the input at centre + [[c, -s], [s, c]] (x, y) - centre (y down:
    # counter-clockwise on screen).  A turned corner may sample outside the picture: pad with the
    # edge pixels far enough for it (and the 3 neighbours either side Lanczos reads), so outside is the edge.
    mx = max(0, math.ceil(abs(c) * w / 2 + abs(s) * h / 2 - w / 2)) + 4
    my = max(0, math.ceil(abs(s) * w / 2 + abs(c) * h / 2 - h / 2)) + 4
    padded = Image.fromarray(np.pad(rgb, ((my, my), (mx, mx), (0, 0)), mode="edge"), "RGB")
    if rotate == 0:  # a crop and a resize: resize takes any filter
        box = (mx + w / 2 - w / (2 * zoom), my + h / 2 - h / (2 * zoom),
               mx + w / 2 + w / (2 * zoom), my + h / 2 + h / (2 * zoom))
        return np.asarray(padded.resize((w, h), Image.Resampling[resample.upper()], box=box))
    # Pillow's affine map takes output coordinates to input ones, pixel centres at +0.5.
    matrix = (c, -s, mx + w / 2 - c * w / 2 + s * h / 2, s, c, my + h / 2 - s * w / 2 - c * h / 2)
    turning = Image.Resampling.BILINEAR if resample == "bilinear" else Image.Resampling.BICUBIC
    return np.asarray(padded.transform((w, h), Image.Transform.AFFINE, matrix, resample=turning))


def _stop() -> None:
    """Stop the way the engine does (the worker knows why: cancel, shutdown, time limit)."""
    from ..dream import Canceled  # here: the engine module imports Keras

    raise Canceled()


def _decode(data: bytes | None, what: str) -> np.ndarray:
    if data is None:
        raise JobFailed("input_missing", f"the {what} is no longer in the store")
    try:
        return decode_image(data, max_pixels=2**62)  # our own files: the web checked the upload's size
    except ImageError as exc:
        raise JobFailed("input_unreadable", f"the {what} could not be read back", exc) from None


def _frames_stored(ctx: Context, frames: int) -> int:
    """How many frames a previous attempt stored: frames 0..n-1, n returned.  The record's
    count is where to look first; the store has the last word (a frame is stored before
    the record counts it)."""
    hint = int((ctx.job.metrics or {}).get("frames_done") or 0)
    n = min(hint, frames) if hint > 0 and ctx.files.exists("frame", n=min(hint, frames) - 1) else 0
    while n < frames and ctx.files.exists("frame", n=n):
        n += 1
    return n


def run(ctx: Context) -> dict:
    from shared.settings import get_settings

    from .image import load_guide

    params: ZoomParams = ctx.params
    clock = ctx.timings
    with timed(clock, "load_s"):
        image = _decode(ctx.files.get("input"), "uploaded image")
    h, w = image.shape[:2]
    try:
        check_work(params, h, w, get_settings())
    except ParamsError as exc:
        raise JobFailed("invalid_params", exc.fields["frames"]) from None
    with timed(clock, "load_s"):
        guide = load_guide(ctx)
    extra = {} if guide is None else {"guide": guide}
    total = params.frames

    done = _frames_stored(ctx, total) if ctx.job.attempts > 1 else 0
    current = None
    if done:
        try:
            current = decode_image(ctx.files.get("frame", n=done - 1), max_pixels=2**62)
        except (ImageError, TypeError) as exc:  # gone or unreadable since we looked: start over
            log.warning("job %s: stored frame %d unreadable (%s); dreaming every frame", ctx.job.id, done - 1, exc)
            done, current = 0, None
    resumed = done
    if resumed:
        log.info("job %s: attempt %d resumes after %d stored frames of %d", ctx.job.id, ctx.job.attempts,
                 resumed, total)
        ctx.preview(current)

    base = {"frames": total, "octaves": params.octaves, "steps": params.iterations}
    ctx.progress({**base, "fraction": round(done / total, 4), "frame": done, "frames_done": done, "octave": None,
                  "step": None, "loss": None, "eta_s": None}, final=True)
    eta = Eta(h, w, params, units=total)  # every frame dreams the same pyramid
    started = time.monotonic()
    dream_s = store_s = 0.0

    for k in range(done, total):
        if ctx.should_stop():  # also between frames (a job of 0 iterations has no steps to poll in)
            _stop()
        source = image if k == 0 else zoom_frame(current, params.zoom, params.rotate)
        frame_params = params.model_copy(update={"seed": (params.seed + k) % 2**31})

        def on_progress(p, k=k):
            work = k + p.fraction  # frames' worth done, all attempts
            # Timed from this attempt's first step: frames stored by an earlier one cost it nothing.
            left = eta.left_s(eta.done(k, p), time.monotonic() - started)
            ctx.progress({**base, "fraction": round(work / total, 4), "frame": k, "frames_done": k,
                          "octave": p.octave, "octaves": p.octaves, "step": p.step, "steps": p.steps,
                          "loss": round(p.loss, 4), "eta_s": None if left is None else round(left, 2)})

        t0 = time.monotonic()
        current = ctx.engine.dream(source, frame_params, on_progress=on_progress,
                                   should_cancel=ctx.should_stop, timings=clock, **extra)
        t1 = time.monotonic()
        dream_s += t1 - t0
        info = png_info(KIND.name, params, ctx.weights)  # shared/provenance.py
        with timed(clock, "encode_s"):
            png = encode_png(current, info)
        with timed(clock, "store_s"):
            ctx.files.put("frame", png, n=k)  # stored first, then counted
        ctx.record(metrics={"frames_done": k + 1, "frames": total, "frames_resumed": resumed})
        left = eta.left_s(eta.done(k + 1), time.monotonic() - started)
        ctx.progress({**base, "fraction": round((k + 1) / total, 4), "frame": k, "frames_done": k + 1,
                      "octave": None, "step": None, "loss": None,
                      "eta_s": None if left is None else round(left, 2)}, final=True)
        ctx.preview(current)
        store_s += time.monotonic() - t1

    t0 = time.monotonic()
    name, _ = result_format(params.model_dump())
    with tempfile.TemporaryDirectory(prefix="dreamq-zoom-") as tmp:
        path = os.path.join(tmp, name)
        with timed(clock, "encode_s"):  # reading the frames back included
            encode(_stored_frames(ctx, total), params.fps, params.format, path)
        size = os.path.getsize(path)
        with timed(clock, "store_s"):
            url = Files(ctx.files.store, ctx.files.job_id, {"result": name}).put_file("result", path)
    encode_s = time.monotonic() - t0
    return {"result_url": url, "dream_s": round(dream_s, 4),
            "metrics": {"frames": total, "frames_done": total, "frames_resumed": resumed,
                        "frames_computed": total - resumed, "store_s": round(store_s, 4),
                        "encode_s": round(encode_s, 4), "result_bytes": size}}


def _stored_frames(ctx: Context, total: int):
    """The stored frames in order, one in memory at a time; stops like the engine when asked."""
    for k in range(total):
        if ctx.should_stop():
            _stop()
        yield _decode(ctx.files.get("frame", n=k), f"frame {k}")
