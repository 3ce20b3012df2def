"""kind=zoom: the infinite-zoom video, with real Redis and real worker processes.

Two workers for the whole module (started once, side by side): the jobs run on either,
and the resume test kills the one that runs its job, so the other takes it over.
"""
import io
import os
import signal
import weakref

import numpy as np
import pytest
from PIL import Image

from bench.cluster import wait_for
from shared.images import encode_png
from shared.kinds import KINDS, Kind, file_name
from shared.kinds.zoom import ZOOM_DEFAULTS, ZoomParams, check_work, parse_zoom
from worker.kinds import Files
from worker.kinds.zoom import zoom_frame
from shared.params import ParamsError
from shared.settings import Settings
from worker.video import encode, probe

from ..conftest import QUICK, Service

pytestmark = pytest.mark.slow  # a minute or more: scheduled first (tests/conftest.py)

# The seed matters: jitter draws from it.  The step is given: a vgg16_hed zoom's default step is its
# own (a zoom frame dreams harder than a still), and frame 0 is compared with a still.
DREAM = {**QUICK, "jitter": 2, "seed": 7, "step": 1.0}
VIDEO = {"zoom": 1.1, "rotate": 3.0, "fps": 8}


@pytest.fixture(scope="module")
def svc(redis_url, tmp_path_factory):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    service = Service(redis_url, tmp_path_factory.mktemp("zoom"), {})
    service.start_workers(2)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def picture(photo) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).resize((128, 96), Image.LANCZOS))


def submit_zoom(svc, image, guide=None, **params) -> str:
    files = {"guide": encode_png(guide)} if guide is not None else None
    return svc.state.submit(params, encode_png(image), kind="zoom", files=files).id


def frames_dir(svc, job_id):
    return svc.settings.data_dir / "store" / job_id / "frames"


def stored_frames(svc, job_id) -> list:
    d = frames_dir(svc, job_id)
    return sorted(p for p in d.glob("*.png")) if d.exists() else []


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# -- (a) a video ------------------------------------------------------------------------

def test_zoom_job_gives_a_video_whose_first_frame_is_the_image_dream(svc, picture):
    a = submit_zoom(svc, picture, **DREAM, **VIDEO, frames=6)
    b = submit_zoom(svc, picture, **DREAM, **VIDEO, frames=6)  # the same again, on the other worker
    image = svc.submit(picture, **DREAM)  # kind=image, same dream parameters and seed
    guided = submit_zoom(svc, picture, guide=picture[:, ::-1], **DREAM, **VIDEO, frames=2, format="gif",
                         guide_layer="block3_conv3")
    job, again, still, led = svc.wait(a), svc.wait(b), svc.wait(image), svc.wait(guided)
    assert job.status == again.status == still.status == led.status == "succeeded", \
        (job.error, again.error, still.error, led.error)

    kind = KINDS["zoom"]
    assert kind.result_name(job.params) == "result.mp4" and kind.result_media_type(job.params) == "video/mp4"
    assert job.result_url.endswith(f"/{a}/result.mp4")
    assert svc.store.size(a, "result.mp4") == job.metrics["result_bytes"] > 0
    with svc.store.open(a, "result.mp4") as f:
        assert probe(f) == (6, 128, 96, 8.0)  # frames, width, height, fps
        f.seek(0)
        head = f.read()
    assert head.index(b"moov") < head.index(b"mdat")  # faststart: plays while it downloads

    frames = [svc.store.get(a, f"frames/{k:05d}.png") for k in range(6)]
    assert all(frames) and svc.store.get(a, "frames/00006.png") is None
    # Frame 0 is the image job's dream, pixel for pixel; then each frame differs (zoom + dream).
    assert np.array_equal(png(frames[0]), png(svc.store.get(image, "result.png")))
    assert all(not np.array_equal(png(x), png(y)) for x, y in zip(frames, frames[1:]))
    # The same inputs and seed give the same frames.
    assert frames == [svc.store.get(b, f"frames/{k:05d}.png") for k in range(6)]

    # A guide (a second upload) steers every frame: not the unguided dream.
    assert svc.store.get(guided, "guide.png") is not None
    assert not np.array_equal(png(svc.store.get(guided, "frames/00000.png")), png(frames[0]))
    assert probe(io.BytesIO(svc.store.get(guided, "result.gif")))[:3] == (2, 128, 96)

    assert job.attempts == 1 and job.metrics["frames_resumed"] == 0 and job.metrics["frames_computed"] == 6
    assert job.metrics["dream_s"] > 0 and job.metrics["encode_s"] > 0
    public = job.public()
    assert public["progress"]["fraction"] == 1.0 and public["progress"]["frames"] == 6
    assert png(svc.store.get(a, "preview.png")).shape == picture.shape  # the preview: the last frame
    assert np.array_equal(png(svc.store.get(a, "preview.png")), png(frames[-1]))


def test_handler_checks_the_work_cap_again(svc, photo):
    # Past the web (which calls check_work): 600 frames of 512x512 are over the default cap.
    job = svc.wait(submit_zoom(svc, photo, **DREAM, frames=600))
    assert job.status == "failed" and job.error["code"] == "invalid_params"
    assert "DREAMQ_ZOOM_MAX_WORK" in job.error["message"]
    assert stored_frames(svc, job.id) == []


# -- (c) cancel ---------------------------------------------------------------------------

def test_cancel_mid_video_keeps_the_finished_frames(svc, picture):
    job_id = submit_zoom(svc, picture, **{**DREAM, "iterations": 8}, **VIDEO, frames=200)
    wait_for(lambda: len(stored_frames(svc, job_id)) >= 2, 60, "two frames", every=0.01)
    before = len(stored_frames(svc, job_id))
    assert svc.state.cancel(job_id) == "running"
    job = svc.wait(job_id)
    assert job.status == "canceled" and job.error["code"] == "canceled"
    kept = stored_frames(svc, job_id)
    # Stopped within the frame it was dreaming (the engine checks before each step): at most
    # that one frame more than when it was asked; every finished frame is still there.
    assert before <= len(kept) <= before + 1 < 200
    assert [p.name for p in kept] == [f"{k:05d}.png" for k in range(len(kept))]
    assert job.progress["frames_done"] == len(kept) and job.progress["fraction"] < 0.05
    assert svc.store.get(job_id, "input.png") is not None  # a worker deletes nothing
    assert svc.store.get(job_id, "result.mp4") is None


# -- (b) resume -----------------------------------------------------------------------------

def test_killed_worker_video_resumes_from_its_stored_frames(svc, picture):
    total = 12
    job_id = submit_zoom(svc, picture, **DREAM, **VIDEO, frames=total, format="webm")
    frame3 = frames_dir(svc, job_id) / "00003.png"
    wait_for(frame3.exists, 60, "frame 3", every=0.01)
    victim = int(svc.state.get(job_id).worker.rsplit(":", 1)[1])
    os.kill(victim, signal.SIGKILL)
    next(p for p in svc.procs if p.pid == victim).wait(10)
    # What the first attempt left: frames 0..n-1 (n >= 4), maybe a half-written temporary file.
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in stored_frames(svc, job_id)}
    n = len(first)
    assert n >= 4 and sorted(first) == [f"{k:05d}.png" for k in range(n)]

    job = svc.wait(job_id, timeout=120)  # the survivor requeues it (heartbeat TTL 3 s) and runs it
    assert job.status == "succeeded", job.error
    assert job.attempts == 2 and int(job.worker.rsplit(":", 1)[1]) != victim
    assert job.metrics["frames_resumed"] == n and job.metrics["frames_computed"] == total - n
    # Not dreamed again: the files of the first attempt are the same files (a store write is a
    # new file renamed into place, so a rewrite would change the inode and the mtime).
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in stored_frames(svc, job_id)}
    assert len(after) == total and all(after[name] == first[name] for name in first)
    with svc.store.open(job_id, "result.webm") as f:
        assert probe(f) == (total, 128, 96, 8.0)
    assert KINDS["zoom"].result_media_type(job.params) == "video/webm"


# -- (d) parameters --------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("frames", 1), ("frames", 601), ("frames", "many"), ("zoom", 0.99), ("zoom", 1.26), ("zoom", "inf"),
    ("rotate", -10.5), ("rotate", 11), ("fps", 0), ("fps", 61), ("format", "avi"), ("format", None),
])
def test_each_new_field_is_checked(field, value):
    with pytest.raises(ParamsError) as err:
        parse_zoom({field: value})
    assert list(err.value.fields) == [field], err.value.fields


def test_zoom_defaults_and_the_dream_fields():
    p = parse_zoom({"model": "vgg16_hed", "format": " WebM "})
    assert isinstance(p, ZoomParams) and p.format == "webm"
    assert {k: getattr(p, k) for k in ZOOM_DEFAULTS if k != "format"} == \
        {k: v for k, v in ZOOM_DEFAULTS.items() if k != "format"}
    assert parse_zoom({"frames": 600, "zoom": 1.25, "rotate": -10, "fps": 60}).frames == 600
    with pytest.raises(ParamsError) as err:
        parse_zoom({"format": "gif", "fps": 60})
    assert list(err.value.fields) == ["fps"]
    with pytest.raises(ParamsError) as err:  # the dream's own checks still name their fields
        parse_zoom({"iterations": -1, "octaves": 99, "colour": 1})
    assert set(err.value.fields) == {"iterations", "octaves", "colour"}


def test_work_cap(monkeypatch):
    settings = Settings(zoom_max_work=100 * 64 * 64)
    check_work(parse_zoom({"frames": 100}), 64, 64, settings)  # at the cap
    with pytest.raises(ParamsError) as err:
        check_work({"frames": 101}, 64, 64, settings)
    assert list(err.value.fields) == ["frames"] and "at most 100 frames" in err.value.fields["frames"]
    with pytest.raises(ParamsError, match="smaller picture"):
        check_work({"frames": 2}, 6400, 6400, settings)
    monkeypatch.setenv("DREAMQ_ZOOM_MAX_WORK", "123")
    assert Settings().zoom_max_work == 123
    assert Settings(_env_file=None).zoom_max_work == 123
    monkeypatch.delenv("DREAMQ_ZOOM_MAX_WORK")
    defaults = Settings()
    check_work(parse_zoom({}), 480, 640, defaults)  # the default video of a 640x480 picture is allowed
    with pytest.raises(ParamsError):
        check_work({"frames": 600}, 480, 640, defaults)


def test_zoom_frame_crops_the_centre_and_turns():
    rgb = np.zeros((101, 141, 3), np.uint8)
    rgb[50, 90] = 255  # 20 px right of the centre
    assert zoom_frame(rgb, 1.0, 0.0) is rgb
    ys, xs = np.nonzero(zoom_frame(rgb, 1.0, 90.0)[..., 0] > 128)
    assert (ys.tolist(), xs.tolist()) == ([30], [70])  # counter-clockwise: now 20 px above it
    ramp = np.repeat(np.repeat(np.arange(0, 200, 2, dtype=np.uint8)[None, :, None], 50, 0), 3, 2)
    zoomed = zoom_frame(ramp, 1.25, 0.0)  # the centre 80 columns of 100, stretched back to 100
    # column 0 samples x = 9.9 (level 19.8), column 99 x = 89.1 (178.2); Pillow's bilinear is 8-bit
    assert zoomed.shape == ramp.shape and abs(int(zoomed[0, 0, 0]) - 20) <= 1 and abs(int(zoomed[0, -1, 0]) - 178) <= 1
    flat = np.full((50, 60, 3), 200, np.uint8)  # turned corners take the edge: never black
    assert (zoom_frame(flat, 1.0, 10.0) == 200).all() and (zoom_frame(flat, 1.2, -10.0) == 200).all()


def test_files_and_kinds_name_a_series():
    names = KINDS["zoom"].files
    assert file_name(names, "frame", 7) == "frames/00007.png" and KINDS["zoom"].file("frame", 12) == "frames/00012.png"
    with pytest.raises(ValueError):
        file_name(names, "frame")
    with pytest.raises(ValueError):
        file_name(names, "input", 1)
    image = KINDS["image"]
    assert image.file("result") == image.result_name({}) == "result.png"
    assert image.media_type == image.result_media_type({"format": "gif"}) == "image/png"
    zoom = KINDS["zoom"]
    assert [zoom.result_name({"format": f}) for f in ("mp4", "webm", "gif", "webp")] == \
        ["result.mp4", "result.webm", "result.gif", "result.webp"]
    assert [zoom.result_media_type({"format": f}) for f in ("mp4", "webm", "gif", "webp")] == \
        ["video/mp4", "video/webm", "image/gif", "image/webp"]
    assert isinstance(zoom, Kind) and Files is not None


# -- (e) encoding -------------------------------------------------------------------------------

def synthetic(n: int, h: int, w: int, alive: list | None = None):
    """n frames: a horizontal ramp, a vertical bar that moves; ``alive`` gets, at each yield,
    how many of the frames yielded so far are still in memory."""
    refs = []
    for i in range(n):
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None]
        rgb[..., 2] = 40 + 150 * i // n
        rgb[:, (i * 7) % w: (i * 7) % w + 6, 1] = 255
        if alive is not None:
            refs.append(weakref.ref(rgb))
            alive.append(sum(r() is not None for r in refs))
        yield rgb


@pytest.mark.parametrize("fmt, size, fps", [("mp4", (63, 95), 24), ("webm", (63, 95), 10), ("gif", (63, 95), 12),
                                            ("webp", (63, 95), 30)])
def test_encode_streams_frames_into_each_format(tmp_path, fmt, size, fps):
    h, w = size
    alive: list = []
    path = str(tmp_path / f"out.{fmt}")
    assert encode(synthetic(9, h, w, alive), fps, fmt, path) == 9
    assert max(alive) <= 2  # one frame at a time (the one being handed over, and the last)
    frames, width, height, rate = probe(path)
    even = fmt in ("mp4", "webm")  # yuv420p: the odd last row and column are cropped
    assert (frames, width, height) == (9, w - even, h - even)
    assert rate == pytest.approx(fps if fmt != "gif" else 100 / round(100 / fps), rel=0.01)
    if fmt != "webp":  # FFmpeg does not decode animated WebP; probe reads it with Pillow
        import av

        with av.open(path) as container:
            first = next(container.decode(video=0)).to_ndarray(format="rgb24")
        want = next(synthetic(1, h, w))[: height, : width].astype(int)
        assert np.abs(first.astype(int) - want).mean() < 6, fmt


def test_encode_to_a_file_object_and_refusals(tmp_path):
    buf = io.BytesIO()
    assert encode(synthetic(5, 48, 64), 25, "mp4", buf) == 5  # fragmented: faststart needs a path
    buf.seek(0)
    assert probe(buf) == (5, 64, 48, 25.0)
    with pytest.raises(ValueError):
        encode(iter([]), 10, "mp4", str(tmp_path / "none.mp4"))
    with pytest.raises(ValueError):
        encode(synthetic(2, 48, 64), 10, "avi", str(tmp_path / "x.avi"))
    frames = [np.zeros((48, 64, 3), np.uint8), np.zeros((50, 64, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1"):
        encode(iter(frames), 10, "gif", str(tmp_path / "x.gif"))
