"""Previews written beside the steps, never in their way.

A client watching a job wants a picture every octave (or frame), not a full-size PNG: the engine
hands over its uint8 image, and a thread of its own shrinks it to at most ``PREVIEW_SIDE`` pixels
on the longer side, encodes it (PNG, the API's preview type, at zlib's fastest level) and stores
it, then points the record at it.  The step thread only drops the image in a one-place mailbox:
when the store is slow, a newer preview replaces one not yet written, and no step waits.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from shared.images import encode_png

log = logging.getLogger("dreamq.worker")

PREVIEW_SIDE = 512  # pixels on the longer side: a job page shows it at about 450


def small_png(rgb: np.ndarray, side: int = PREVIEW_SIDE) -> bytes:
    """``rgb`` at most ``side`` pixels on its longer side, as a quickly encoded PNG."""
    im = Image.fromarray(rgb, "RGB")
    if max(im.size) > side:
        im.thumbnail((side, side), Image.BILINEAR, reducing_gap=2.0)
    return encode_png(np.asarray(im), compress_level=1)


class PreviewWriter:
    """``writer(rgb)``: queue a preview (the latest wins); ``close()``: write the last one and stop.

    ``write(png_bytes)`` stores a preview and records it (the worker's: the store, then the record's
    ``preview_url``); it runs on this object's thread only.  ``timings``, when given, gets the
    thread's seconds in ``preview_write_s`` (encode and store: not the steps' time).
    """

    def __init__(self, write: Callable[[bytes], None], timings: dict[str, float] | None = None):
        self._write = write
        self.timings = timings if timings is not None else {}
        self._pending: np.ndarray | None = None
        self._closed = False
        self._cv = threading.Condition()
        self.written = 0
        self._thread = threading.Thread(target=self._loop, name="dreamq-preview", daemon=True)
        self._thread.start()

    def __call__(self, rgb: np.ndarray) -> None:
        with self._cv:
            self._pending = rgb  # the engine never writes to an image it handed over
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._closed:
                    self._cv.wait()
                rgb, self._pending = self._pending, None
                if rgb is None:  # closed, nothing left
                    return
            t0 = time.perf_counter()
            try:
                self._write(small_png(rgb))
                self.written += 1
            except Exception as exc:  # noqa: BLE001 - a preview is a courtesy: the job goes on
                log.warning("preview not written: %s", exc)
            self.timings["preview_write_s"] = self.timings.get("preview_write_s", 0.0) + time.perf_counter() - t0

    def close(self, timeout: float = 10.0) -> None:
        """Write the preview still queued, if any, within ``timeout`` seconds, and stop the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the last preview is still being written after %.0f s; the job goes on", timeout)
