"""Previews beside the steps (worker/preview.py): small, and never in a step's way."""
import threading
import time

import numpy as np
from PIL import Image

from worker.preview import PREVIEW_SIDE, PreviewWriter, small_png


def test_a_preview_is_at_most_preview_side_on_its_longer_side_and_keeps_its_shape():
    import io

    rgb = np.random.default_rng(0).integers(0, 255, (960, 640, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(small_png(rgb))) as im:
        assert im.format == "PNG" and im.size == (341, PREVIEW_SIDE)
    tiny = rgb[:100, :80]
    with Image.open(io.BytesIO(small_png(tiny))) as im:
        assert im.size == (80, 100)  # never enlarged


def test_a_slow_store_neither_delays_the_steps_nor_loses_the_last_preview():
    written, started = [], threading.Event()

    def slow_write(png: bytes) -> None:  # a store that takes 0.4 s a file
        started.set()
        time.sleep(0.4)
        written.append(png)

    writer = PreviewWriter(slow_write)
    frames = [np.full((64, 64, 3), v, np.uint8) for v in (10, 20, 30, 40)]
    handed = []
    for rgb in frames:  # four octaves' previews, as fast as a step thread hands them over
        t0 = time.perf_counter()
        writer(rgb)
        handed.append(time.perf_counter() - t0)
        started.wait(5)
    assert max(handed) < 0.05, handed  # the step thread never waited for the store
    writer.close()
    assert 1 <= len(written) <= 2 < len(frames)  # the ones the slow store missed were replaced, not queued
    import io

    with Image.open(io.BytesIO(written[-1])) as im:
        assert np.asarray(im)[0, 0, 0] == 40  # the last one handed over is the one a client sees


def test_a_failed_preview_write_is_logged_and_the_writer_goes_on(caplog):
    calls = []

    def flaky(png: bytes) -> None:
        calls.append(png)
        if len(calls) == 1:
            raise OSError("store down")

    writer = PreviewWriter(flaky)
    writer(np.zeros((8, 8, 3), np.uint8))
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    writer(np.ones((8, 8, 3), np.uint8))
    writer.close()
    assert len(calls) == 2 and writer.written == 1
    assert "preview not written: store down" in caplog.text
