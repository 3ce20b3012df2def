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
def readings(photo):
    image = np.asarray(Image.fromarray(photo).resize((224, 224), Image.LANCZOS))
    params = parse_params({"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": 3, "iterations": 8})
    eta, steps = Eta(224, 224, params), []
    start = time.process_time()

    def seen(p):
        now = time.process_time() - start
        steps.append((eta.done(0, p), p.fraction, now, eta.left_s(eta.done(0, p), now)))

    Dreamer(load_model("vgg16_hed")).dream(image, params, on_progress=seen)
    end = time.process_time() - start
    total = eta.done(1)
    # (work done, the estimate / the truth, what counting steps alone would have estimated / the truth)
    return [(work / total, left / (end - t), t / fraction * (1 - fraction) / (end - t))
            for work, fraction, t, left in steps if left is not None and t < end]


def check(readings, column: int) -> tuple[float, float]:
    later = [(w, r[column]) for w, *r in readings if FROM <= w <= 0.8]
    assert later, readings
    return later[0][1], float(np.median([r for _, r in later]))


def test_the_estimate_weighs_the_steps_left_by_their_pixels(readings):
    first, median = check(readings, 0)
    assert abs(first - 1) <= TOLERANCE, f"the first estimate from a fifth of the work on was {first:.2f}x"
    assert abs(median - 1) <= TOLERANCE, f"the estimates were {median:.2f}x (median): {readings}"


def test_counting_steps_alone_would_not_do(readings):
    """The test above can fail: with every step the same cost, the first estimate is far too short."""
    first, _ = check(readings, 1)
    assert first < 1 - TOLERANCE, first
