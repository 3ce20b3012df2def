"""The time a job has left (progress.eta_s), on a real worker: the steps left weighed by their
octave's pixels (worker/eta.py).  Once a fifth of the work is done, the estimate follows the time
the job really took to finish (the bounds: below).

The jobs last several seconds, so the 50 ms the record is polled at and a step's own jitter
are small next to what is measured; each progress is timed when the poll first sees it.
"""
import time

import numpy as np
import pytest
from PIL import Image

from shared.images import encode_png
from shared.models import octave_shapes

from ..conftest import Service

pytestmark = pytest.mark.slow  # seconds-long jobs: scheduled first (tests/conftest.py)

DREAM = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octave_scale": 1.4}
# On the wall clock, as a client reads it.  No estimate foresees the machine's load changing in the
# middle of a job (the other test processes of `make test` start and stop: medians of 1.26x and,
# on a 2-core machine running three test processes beside the job's worker, 1.6x), so the bounds
# here are factors, looser than the 25% the estimate holds on a quiet machine (1.21 and 1.01
# measured here) and on the CPU clock (tests/unit/test_eta.py, which checks that 25%).  Counting
# steps alone read 0.34x here, outside both bounds.
TOLERANCE = 1.75  # the median of the readings from a fifth of the work to 80%: within this factor of 1
ANY_READING = 2.2  # any one of them
FROM = 0.2  # of the work done


@pytest.fixture(scope="module")
def svc(redis_url, tmp_path_factory):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    service = Service(redis_url, tmp_path_factory.mktemp("eta"), {})
    service.start_worker(DREAMQ_PROGRESS_INTERVAL_S="0")  # every step reaches the record
    yield service
    service.stop()


def resized(photo, width, height) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).resize((width, height), Image.LANCZOS))


def work_done(progress: dict, pixels: list[int], frames: int) -> float:
    """The fraction of the job's pixel-steps done, from a progress as the record has it."""
    per_frame = sum(pixels) * progress["steps"]
    done = (progress.get("frame") or 0) * per_frame
    done += sum(pixels[:progress["octave"]]) * progress["steps"] + pixels[progress["octave"]] * (progress["step"] + 1)
    return done / (per_frame * frames)


def watch(svc, job_id: str, shape: tuple[int, int], params: dict, frames: int = 1) -> list[tuple[float, float]]:
    """(work done, eta_s / true time left) for each progress seen with an estimate, in order."""
    seen, last = [], None
    job = svc.state.get(job_id)
    deadline = time.monotonic() + 300
    while not job.finished and time.monotonic() < deadline:
        p = job.progress
        key = (p.get("frame"), p.get("octave"), p.get("step"))
        if job.status == "running" and p.get("octave") is not None and p.get("eta_s") is not None and key != last:
            last = key
            seen.append((time.time(), p))
        time.sleep(0.05)
        job = svc.state.get(job_id)
    assert job.status == "succeeded", (job.status, job.error, svc.read_logs())
    pixels = [h * w for h, w in octave_shapes(*shape, params["octaves"], params["octave_scale"])]
    return [(work_done(p, pixels[-p["octaves"]:], frames), p["eta_s"] / (job.finished_at - t)) for t, p in seen]


def check(ratios: list[tuple[float, float]], what: str) -> None:
    later = [(w, r) for w, r in ratios if FROM <= w <= 0.8]
    assert later, f"{what}: no progress seen between {FROM:.0%} and 80% of the work: {ratios}"
    first = later[0][1]
    median = sorted(r for _, r in later)[len(later) // 2]
    print(f"{what}: eta / true time left at {later[0][0]:.0%} of the work: {first:.2f}; median to 80%: {median:.2f}; "
          f"all: {[(round(w, 2), round(r, 2)) for w, r in ratios]}")
    assert 1 / TOLERANCE <= median <= TOLERANCE, f"{what}: the estimates were {median:.2f}x (median)"
    worst = max(later, key=lambda wr: max(wr[1], 1 / wr[1]))
    assert 1 / ANY_READING <= worst[1] <= ANY_READING, (
        f"{what}: at {worst[0]:.0%} of the work the estimate was {worst[1]:.2f}x")


def test_an_image_jobs_eta_weighs_the_larger_octaves(svc, photo):
    # Steps alone would say 40% is done after the first octave of three and a fifth of the
    # second, and expect a remaining time 1.5x the elapsed one: the true one is about 4x.
    params = {**DREAM, "octaves": 3, "iterations": 12}
    image = resized(photo, 256, 256)
    job_id = svc.submit(image, **params)
    check(watch(svc, job_id, image.shape[:2], params), "image")


def test_a_zoom_jobs_eta_counts_every_frames_pyramid(svc, photo):
    params = {**DREAM, "octaves": 2, "iterations": 6, "frames": 5, "zoom": 1.1}
    image = resized(photo, 192, 144)
    job_id = svc.state.submit(params, encode_png(image), kind="zoom").id
    check(watch(svc, job_id, image.shape[:2], params, frames=params["frames"]), "zoom")
