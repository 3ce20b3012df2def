"""Decoding the uploaded photo (and guide image) into the PNGs a worker reads, without starving the web.

Bombs are refused from their header; only an image over SMALL_IMAGE_PIXELS waits for one of the
process's few decode slots (DREAMQ_MAX_DECODES), so a normal photo is never stuck behind them; and
every decode runs off the gevent event loop, so the process keeps answering /healthz meanwhile.
"""
from __future__ import annotations

import functools
import threading

from flask import current_app
from pydantic import BaseModel

from shared.images import (
    INPUT_PNG_LEVEL,
    ImageError,
    check_size,
    declared_pixels,
    decode_image,
    encode_png,
    plain_png_size,
)
from shared.models import MODELS
from shared.settings import Settings

from .errors import ApiError
from .services import services

# Up to this many pixels (a 1920x1080 photo: ~25 MB to decode at worst) an upload needs no decode slot.
SMALL_IMAGE_PIXELS = 2_100_000


def normalise_uploads(image: bytes, guide: bytes | None,
                      params: BaseModel) -> tuple[bytes, str | None, tuple[int, int], bytes | None]:
    """(the photo as PNG, a warning when small octaves are skipped, its (height, width), the guide as PNG)."""
    settings = services().settings
    pixels = declared_pixels(image, settings.max_pixels)
    guide_pixels = guide_image_error(declared_pixels, guide, settings.max_pixels) if guide is not None else 0
    big = max(pixels, guide_pixels) > SMALL_IMAGE_PIXELS
    slots = decode_slots() if big else None
    if slots is not None and not slots.acquire(timeout=settings.decode_wait_s):
        raise ApiError(503, "busy", "too many large images are being decoded; try again shortly",
                       headers={"Retry-After": "5"})
    try:
        return off_loop(functools.partial(normalise, image, guide, params, settings))
    finally:
        if slots is not None:
            slots.release()
            give_back_memory()


def normalise(blob: bytes, guide_blob: bytes | None, params: BaseModel,
              settings: Settings) -> tuple[bytes, str | None, tuple[int, int], bytes | None]:
    # One image at a time, in one slot: the photo's array is gone before the guide is decoded.
    rgb = decode_image(blob, max_pixels=settings.max_pixels, max_side=params.max_side,
                       budget_s=settings.decode_budget_s)
    small = check_size(rgb.shape[0], rgb.shape[1], params)  # a warning when small octaves are skipped
    shape = rgb.shape[:2]
    png = as_png(blob, rgb)  # the worker decodes this PNG again
    del rgb
    guide_png = None
    if guide_blob is not None:
        # Fitted to the size the worker takes its features at (as it would fit it): a big guide
        # is not kept whole.
        guide_rgb = guide_image_error(decode_image, guide_blob, max_pixels=settings.max_pixels,
                                      max_side=getattr(MODELS[params.model], "guide_side", None),
                                      budget_s=settings.decode_budget_s)
        guide_png = as_png(guide_blob, guide_rgb)
    return png, small, shape, guide_png


def as_png(blob: bytes, rgb) -> bytes:
    """The PNG to store for an upload that decoded to ``rgb``: the upload itself when it is already a
    plain 8-bit RGB PNG of that size (no resize, no metadata: re-encoding would copy its pixels, at
    a few ms even for 128x128), else ``rgb`` encoded (at INPUT_PNG_LEVEL)."""
    if plain_png_size(blob) == (rgb.shape[1], rgb.shape[0]):
        return blob
    return encode_png(rgb, compress_level=INPUT_PNG_LEVEL)


def guide_image_error(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, an ImageError of it naming the `guide` field rather than `image`."""
    try:
        return fn(*args, **kwargs)
    except ImageError as exc:
        renamed = ImageError(exc.code, f"the guide image: {exc}")
        renamed.field = "guide"
        raise renamed from None


def decode_slots() -> threading.BoundedSemaphore:
    # Per process: one decode of a 40 Mpx image takes up to ~0.5 GB for a second or two.
    slots = current_app.extensions.get("dreamq.decodes")
    if slots is None:
        slots = current_app.extensions.setdefault(
            "dreamq.decodes", threading.BoundedSemaphore(services().settings.max_decodes))
    return slots

def off_loop(fn):
    """Run CPU-bound ``fn`` in a real thread under gevent (Pillow, numpy and zlib release the
    GIL), so one process's event loop keeps answering /healthz during a two-second decode."""
    try:
        from gevent import monkey
    except ImportError:
        return fn()
    if not monkey.is_module_patched("threading"):
        return fn()
    import gevent

    def run():  # an exception is handed back, not raised there: gevent would log a traceback for each bad image
        try:
            return True, fn()
        except Exception as exc:  # noqa: BLE001 — re-raised below, in the request
            return False, exc

    ok, value = gevent.get_hub().threadpool.apply(run)
    if not ok:
        raise value
    return value


def give_back_memory() -> None:
    """Return the heap a big decode freed to the system (glibc keeps it, per thread arena, for
    reuse): without it a process stays at ~400 MB after one wave of 40 Mpx uploads, and only
    request-count recycling, which starved the service, gave it back (docs/RELIABILITY.md)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


@functools.cache
def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None
