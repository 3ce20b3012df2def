"""The time-left estimate (worker/eta.py) against a real dream's real step costs.

Timed with the process's CPU clock, not the wall clock: the estimate's model (a step costs its
octave's pixels) is what is checked here, and CPU time does not move when other processes take
the cores mid-dream, as they do under `make test`.  tests/integration/test_eta.py checks the
worker's `eta_s` on the wall clock, as a client reads it.
"""
import time

import numpy as np
import pytest
from PIL import Image

from shared.params import parse_params
from worker.dream import Dreamer
from worker.eta import Eta
from worker.models import load_model

TOLERANCE = 0.25  # of the true time left, once a fifth of the work is done
FROM = 0.2


@pytest.fixture(scope="module")
def vgg():
    return Dreamer(load_model("vgg16_hed"))


def timed(dreamer, image, params, frames: int = 1) -> list[tuple[float, float, float]]:
    """Dream ``frames`` frames as the worker's handlers do (a zoom: each frame from the last one
    zoomed) and read the estimate at every step: (work done, the estimate / the truth, what
    counting steps alone would have estimated / the truth)."""
    from worker.kinds.zoom import zoom_frame

    eta, steps = Eta(*image.shape[:2], params, units=frames), []
    start, frame = time.process_time(), image
    for k in range(frames):
        def seen(p, k=k):
            now = time.process_time() - start
            steps.append((eta.done(k, p), (k + p.fraction) / frames, now, eta.left_s(eta.done(k, p), now)))

        frame = dreamer.dream(zoom_frame(frame, 1.1, 0.0) if k else frame, params, on_progress=seen)
    end = time.process_time() - start
    total = eta.done(frames)
    return [(work / total, left / (end - t), t / fraction * (1 - fraction) / (end - t))
            for work, fraction, t, left in steps if left is not None and t < end]


@pytest.fixture(scope="module", params=["image", "zoom"])
def readings(request, vgg, photo):
    side, octaves, iterations, frames = (224, 3, 8, 1) if request.param == "image" else (128, 2, 4, 3)
    image = np.asarray(Image.fromarray(photo).resize((side, side), Image.LANCZOS))
    params = parse_params({"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": octaves,
                           "iterations": iterations})
    return timed(vgg, image, params, frames)


def check(readings, column: int) -> tuple[float, float]:
    later = [(w, r[column]) for w, *r in readings if FROM <= w <= 0.8]
    assert later, readings
    return later[0][1], float(np.median([r for _, r in later]))


def test_the_estimate_weighs_the_steps_left_by_their_pixels(readings):
    first, median = check(readings, 0)
    assert abs(first - 1) <= TOLERANCE, f"the first estimate from a fifth of the work on was {first:.2f}x"
    assert abs(median - 1) <= TOLERANCE, f"the estimates were {median:.2f}x (median): {readings}"


def test_counting_steps_alone_would_not_do(request, readings):
    """The test above can fail: with every step the same cost, an image's estimates are far too
    short (a zoom's frames are alike, so there the pyramid within a frame matters less)."""
    if request.node.callspec.params["readings"] != "image":
        pytest.skip("the image pyramid is what a step count gets wrong")
    first, median = check(readings, 1)
    assert first < 1 - TOLERANCE or median < 1 - TOLERANCE, (first, median)
