"""kind=zoom: the infinite zoom of the google/deepdream notebook, as a resumable video job.

Frame 0 is the dream of the photo.  Frame k+1 is the dream of frame k zoomed in: its centre
``1/zoom`` (a crop of size/zoom) resized back to the full size, turned by ``rotate`` degrees
about the centre (positive: counter-clockwise; a corner that turns out of the picture takes
the nearest edge pixel).  Each frame is dreamed with the job's dream parameters and the seed
``seed + k``: the same photo and parameters give the same frames, and frame 0 is exactly
the image job's result for them.

Resumable.  Each finished frame goes to the store (``frames/00000.png``...) before the
record says so (``metrics.frames_done`` and ``progress.frames_done``: how many are stored).
A later attempt of the job (its worker died, or was stopped and gave the job back) takes
the frames already stored instead of dreaming them again (``metrics.frames_resumed``), and
dreams on from the last one.  A canceled job keeps its frames (they expire with the job).

The video is encoded at the end from the stored frames, one at a time (shared/video.py):
mp4 (H.264), webm (VP9), gif or webp, at ``fps``.  Its name and media type depend on
``format``: ``KIND.result_name(params)``, ``KIND.result_media_type(params)``.

Total work is capped: frames x pixels <= ``DREAMQ_ZOOM_MAX_WORK`` (``check_work``, called
by the web once it knows the picture's size, and again here).
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from typing import Any, Literal, Mapping

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..images import ImageError, decode_image, encode_png
from ..params import MAX_ITERATIONS, MAX_OCTAVES, DreamParams, ParamsError, validate
from ..video import FORMATS, MAX_GIF_FPS, MEDIA_TYPES
from . import Context, Files, JobFailed, Kind

log = logging.getLogger(__name__)

# Every default of a zoom job in one place (the README quotes it).  A frame is dreamed from
# an already dreamed one, so it needs fewer steps than a photo: 5 steps on 2 octaves.
ZOOM_DEFAULTS: dict[str, Any] = {"frames": 48, "zoom": 1.05, "rotate": 0.0, "fps": 12, "format": "mp4",
                                 "iterations": 5, "octaves": 2}
MIN_FRAMES, MAX_FRAMES = 2, 600
MAX_ZOOM = 1.25
MAX_ROTATE = 10.0  # degrees per frame, either way
MAX_FPS = 60

INPUT, PREVIEW, GUIDE, FRAME = "input.png", "preview.png", "guide.png", "frames/{n:05d}.png"


class ZoomParams(DreamParams):
    """A zoom video: the dream parameters of every frame (zoom defaults), and the video's."""

    octaves: int = Field(ZOOM_DEFAULTS["octaves"], ge=1, le=MAX_OCTAVES)
    iterations: int = Field(ZOOM_DEFAULTS["iterations"], ge=0, le=MAX_ITERATIONS)
    frames: int = Field(ZOOM_DEFAULTS["frames"], ge=MIN_FRAMES, le=MAX_FRAMES)
    zoom: float = Field(ZOOM_DEFAULTS["zoom"], ge=1.0, le=MAX_ZOOM)  # 1: no zoom
    rotate: float = Field(ZOOM_DEFAULTS["rotate"], ge=-MAX_ROTATE, le=MAX_ROTATE)  # degrees per frame
    fps: int = Field(ZOOM_DEFAULTS["fps"], ge=1, le=MAX_FPS)
    format: Literal["mp4", "webm", "gif", "webp"] = ZOOM_DEFAULTS["format"]

    @field_validator("format", mode="before")
    @classmethod
    def _format_case(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _gif_rate(self) -> "ZoomParams":
        if self.format == "gif" and self.fps > MAX_GIF_FPS:
            # GIF delays are in 1/100 s, and browsers play 0-1 as slow: 50 is the fastest.
            raise ValueError(f"fps: a gif plays at most {MAX_GIF_FPS} frames per second")
        return self


assert set(ZoomParams.model_fields["format"].annotation.__args__) == set(FORMATS)


def parse_zoom(data: dict[str, Any]) -> ZoomParams:
    """Validate raw values (form strings or JSON); ParamsError names each bad field."""
    return validate(ZoomParams, data)


def check_work(params: ZoomParams | Mapping[str, Any], height: int, width: int, settings) -> None:
    """Refuse (ParamsError on ``frames``) a video of more than ``settings.zoom_max_work``
    frame pixels (frames x height x width): the cap that keeps one job from holding a
    worker for hours.  The web calls it once it has decoded the upload."""
    frames = params["frames"] if isinstance(params, Mapping) else params.frames
    limit, pixels = settings.zoom_max_work, height * width
    if frames * pixels <= limit:
        return
    most = limit // max(1, pixels)
    hint = (f"at most {most} frames of this picture, or a smaller picture (max_side)" if most >= MIN_FRAMES
            else "a smaller picture (max_side)")
    raise ParamsError({"frames": f"{frames} frames of {width}x{height} are {frames * pixels:,} frame pixels, over "
                                 f"this server's limit of {limit:,} (DREAMQ_ZOOM_MAX_WORK): give {hint}"})


def zoom_frame(rgb: np.ndarray, zoom: float, rotate: float) -> np.ndarray:
    """The next frame's start: the centre 1/zoom of ``rgb`` at full size, turned ``rotate``
    degrees counter-clockwise about the centre.  Bilinear; outside the picture, the edge."""
    from PIL import Image

    if zoom == 1 and rotate == 0:
        return rgb
    h, w = rgb.shape[:2]
    theta = math.radians(rotate)
    c, s = math.cos(theta) / zoom, math.sin(theta) / zoom
    # Output pixel (x, y) samples the input at centre + [[c, -s], [s, c]] (x, y) - centre (y down:
    # counter-clockwise on screen).  A turned corner may sample outside the picture: pad with the
    # edge pixels far enough for it (and its bilinear neighbour), so outside is the edge.
    mx = max(0, math.ceil(abs(c) * w / 2 + abs(s) * h / 2 - w / 2)) + 2
    my = max(0, math.ceil(abs(s) * w / 2 + abs(c) * h / 2 - h / 2)) + 2
    padded = Image.fromarray(np.pad(rgb, ((my, my), (mx, mx), (0, 0)), mode="edge"), "RGB")
    # Pillow's affine map takes output coordinates to input ones, pixel centres at +0.5.
    matrix = (c, -s, mx + w / 2 - c * w / 2 + s * h / 2, s, c, my + h / 2 - s * w / 2 - c * h / 2)
    return np.asarray(padded.transform((w, h), Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR))


def result_format(params: Mapping[str, Any]) -> tuple[str, str]:
    fmt = params.get("format") or ZOOM_DEFAULTS["format"]
    return f"result.{fmt}", MEDIA_TYPES[fmt]


def progress_before_start(params: dict) -> dict:
    return {"fraction": 0.0, "frame": None, "frames": params.get("frames"), "frames_done": 0, "octave": None,
            "octaves": params.get("octaves"), "step": None, "steps": params.get("iterations"), "loss": None,
            "eta_s": None}


def _stop() -> None:
    """Stop the way the engine does (the worker knows why: cancel, shutdown, time limit)."""
    from worker.dream import Canceled  # only a worker runs a handler

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
    from ..settings import get_settings

    try:
        from .image import load_guide
    except ImportError:  # an older image kind: no guides
        def load_guide(ctx):
            return None

    params: ZoomParams = ctx.params
    image = _decode(ctx.files.get("input"), "uploaded image")
    h, w = image.shape[:2]
    try:
        check_work(params, h, w, get_settings())
    except ParamsError as exc:
        raise JobFailed("invalid_params", exc.fields["frames"]) from None
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
    started = time.monotonic()
    dream_s = store_s = 0.0

    for k in range(done, total):
        if ctx.should_stop():  # also between frames (a job of 0 iterations has no steps to poll in)
            _stop()
        source = image if k == 0 else zoom_frame(current, params.zoom, params.rotate)
        frame_params = params.model_copy(update={"seed": (params.seed + k) % 2**31})

        def on_progress(p, k=k):
            work = k + p.fraction  # frames' worth done, all attempts
            this_attempt = work - resumed
            elapsed = time.monotonic() - started
            eta = elapsed / this_attempt * (total - work) if this_attempt > 0 else None
            ctx.progress({**base, "fraction": round(work / total, 4), "frame": k, "frames_done": k,
                          "octave": p.octave, "octaves": p.octaves, "step": p.step, "steps": p.steps,
                          "loss": round(p.loss, 4), "eta_s": None if eta is None else round(eta, 2)})

        t0 = time.monotonic()
        current = ctx.engine.dream(source, frame_params, on_progress=on_progress,
                                   should_cancel=ctx.should_stop, **extra)
        t1 = time.monotonic()
        dream_s += t1 - t0
        ctx.files.put("frame", encode_png(current), n=k)  # stored first, then counted
        ctx.record(metrics={"frames_done": k + 1, "frames": total, "frames_resumed": resumed})
        elapsed = time.monotonic() - started
        left = total - k - 1
        ctx.progress({**base, "fraction": round((k + 1) / total, 4), "frame": k, "frames_done": k + 1,
                      "octave": None, "step": None, "loss": None,
                      "eta_s": round(elapsed / (k + 1 - resumed) * left, 2)}, final=True)
        ctx.preview(current)
        store_s += time.monotonic() - t1

    t0 = time.monotonic()
    name, _ = result_format(params.model_dump())
    with tempfile.TemporaryDirectory(prefix="dreamq-zoom-") as tmp:
        path = os.path.join(tmp, name)
        from ..video import encode

        encode(_stored_frames(ctx, total), params.fps, params.format, path)
        size = os.path.getsize(path)
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


KIND = Kind(name="zoom", params=ZoomParams, parse=parse_zoom,
            files={"input": INPUT, "preview": PREVIEW, "guide": GUIDE, "frame": FRAME},
            media_type=MEDIA_TYPES[ZOOM_DEFAULTS["format"]], progress=progress_before_start, run=run,
            result=result_format)
