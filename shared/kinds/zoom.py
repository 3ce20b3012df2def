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

The handler is worker/kinds/zoom.py.  The video is encoded at the end from the stored
frames, one at a time (worker/video.py):
mp4 (H.264), webm (VP9), gif or webp, at ``fps``.  Its name and media type depend on
``format``: ``KIND.result_name(params)``, ``KIND.result_media_type(params)``.

Total work is capped: frames x pixels <= ``DREAMQ_ZOOM_MAX_WORK`` (``check_work``, called
by the web once it knows the picture's size, and again here).
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import Field, field_validator, model_validator

from ..models import DEFAULT_MODEL, MODELS
from ..params import MAX_ITERATIONS, MAX_OCTAVES, DreamParams, ParamsError, validate
from .kind import Kind

# Every default of a zoom job in one place (docs/ZOOM_AND_GUIDES.md quotes it; a model may add its own,
# its catalog entry's kind_defaults["zoom"]).  Each zoom resamples the frame, and only the dream puts fine
# detail back: 10 steps, all at full size (1 octave: coarser octaves are blurred again on the way up).
# 2 octaves x 5 steps (and a bilinear zoom) kept a quarter of frame 1's sharpness by frame 30
# (bench/zoom_sharpness.py, vgg16_hed).
# 48 frames at 12 fps: a 4 s clip.
ZOOM_DEFAULTS: dict[str, Any] = {"frames": 48, "zoom": 1.05, "rotate": 0.0, "fps": 12, "format": "mp4",
                                 "iterations": 10, "octaves": 1}
MIN_FRAMES, MAX_FRAMES = 2, 600
# The video formats a zoom job can ask for (worker/video.py encodes them).
FORMATS = ("mp4", "webm", "gif", "webp")
MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "gif": "image/gif", "webp": "image/webp"}
MAX_GIF_FPS = 50  # GIF counts time in hundredths of a second
MAX_ZOOM = 1.25
MAX_ROTATE = 10.0  # degrees per frame, either way
MAX_FPS = 60

INPUT, PREVIEW, GUIDE, FRAME = "input.png", "preview.png", "guide.png", "frames/{n:05d}.png"


class ZoomParams(DreamParams):
    """A zoom video: the dream parameters of every frame (zoom defaults), and the video's."""

    octaves: int = Field(ZOOM_DEFAULTS["octaves"], ge=1, le=MAX_OCTAVES)
    iterations: int = Field(ZOOM_DEFAULTS["iterations"], ge=0, le=MAX_ITERATIONS)
    # A title labels the form's input; a description documents the field (OpenAPI, the CLI's --help).
    frames: int = Field(ZOOM_DEFAULTS["frames"], ge=MIN_FRAMES, le=MAX_FRAMES, title="Frames",
                        description="Frames of the video: each is the last one zoomed (and turned), then dreamed on.")
    zoom: float = Field(ZOOM_DEFAULTS["zoom"], ge=1.0, le=MAX_ZOOM,  # 1: no zoom
                        title="Zoom per frame (1.05: 5% closer each frame)",
                        description="Scale factor from one frame to the next (1.05: 5% closer each frame).")
    rotate: float = Field(ZOOM_DEFAULTS["rotate"], ge=-MAX_ROTATE, le=MAX_ROTATE,
                          title="Rotation per frame, in degrees", description="Degrees the picture turns from one frame to the next.")
    fps: int = Field(ZOOM_DEFAULTS["fps"], ge=1, le=MAX_FPS, title="Frames per second",
                     description="Frames per second of the video.")
    format: Literal["mp4", "webm", "gif", "webp"] = Field(
        ZOOM_DEFAULTS["format"], title="Video format",
        description="The video's container: mp4 (H.264), webm (VP9), or an animated gif/webp.")

    @model_validator(mode="before")
    @classmethod
    def _model_zoom_defaults(cls, data: Any) -> Any:
        # A model's own zoom defaults (its catalog entry's kind_defaults["zoom"]): vgg16_hed's stills
        # dream with a step too gentle to keep a zoom sharp.  A preset or the request wins.
        if not isinstance(data, dict):
            return data
        model, preset = data.get("model"), data.get("preset")
        spec = MODELS.get(model if isinstance(model, str) else DEFAULT_MODEL)
        own = spec.kind_defaults.get("zoom", {}) if spec is not None else {}
        if not own:
            return data
        from_preset = spec.presets.get(preset if isinstance(preset, str) else "", {})
        blank = {k for k, v in data.items() if isinstance(v, str) and not v.strip()}  # an empty form field
        extra = {k: v for k, v in own.items() if k not in from_preset and (k not in data or k in blank)}
        return {**data, **extra} if extra else data

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


def result_format(params: Mapping[str, Any]) -> tuple[str, str]:
    fmt = params.get("format") or ZOOM_DEFAULTS["format"]
    return f"result.{fmt}", MEDIA_TYPES[fmt]


def progress_before_start(params: dict) -> dict:
    return {"fraction": 0.0, "frame": None, "frames": params.get("frames"), "frames_done": 0, "octave": None,
            "octaves": params.get("octaves"), "step": None, "steps": params.get("iterations"), "loss": None,
            "eta_s": None}


KIND = Kind(name="zoom", title="Zoom video (an infinite zoom into the dream)",
            summary="an infinite-zoom video: frames, zoom, rotate, fps and format say how",
            params=ZoomParams, parse=parse_zoom, result_types={MEDIA_TYPES[f]: f".{f}" for f in FORMATS},
            files={"input": INPUT, "preview": PREVIEW, "guide": GUIDE, "frame": FRAME},
            media_type=MEDIA_TYPES[ZOOM_DEFAULTS["format"]], progress=progress_before_start,
            check_work=check_work, result=result_format)
