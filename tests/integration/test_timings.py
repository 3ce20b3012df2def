"""metrics.timings: where a real worker's run_s went (issue 23)."""
import numpy as np
import pytest
from PIL import Image

from ..conftest import QUICK

pytestmark = pytest.mark.slow

PARTS = ("load_s", "steps_s", "preview_s", "encode_s", "store_s")


def test_the_timing_breakdown_adds_up_to_run_s(live_worker, photo):
    image = np.asarray(Image.fromarray(photo).resize((256, 192), Image.LANCZOS))
    job = live_worker.wait(live_worker.submit(image, **{**QUICK, "octaves": 3, "iterations": 6}))
    assert job.status == "succeeded", job.error
    timings, run_s = job.metrics["timings"], job.metrics["run_s"]
    assert set(timings) == {"queue_s", *PARTS}
    assert all(timings[p] >= 0 for p in PARTS) and timings["steps_s"] > 0 and timings["encode_s"] > 0
    assert timings["queue_s"] == pytest.approx(job.metrics["queue_s"], abs=0.01)
    total = sum(timings[p] for p in PARTS)
    print("timings", timings, "run_s", run_s, "sum", round(total, 4))
    assert total == pytest.approx(run_s, rel=0.05), (timings, run_s)  # nothing big goes uncounted
    assert timings["steps_s"] < job.metrics["dream_s"] <= run_s
    assert job.preview_url  # the last octave's preview was written before the job finished
