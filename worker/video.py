"""Frames to a video file, streaming: one frame in memory at a time (PyAV, FFmpeg inside).

The ``av`` wheel ships its own FFmpeg; we use its encoders

* ``mp4``: H.264 (libx264), yuv420p, ``+faststart`` (the index is moved to the front,
  so a browser plays while it downloads); written to a file object instead of a path,
  fragmented (``frag_keyframe+empty_moov``), which also plays while it downloads:
  faststart rewrites the file by its name.  yuv420p needs even sides: an odd height
  or width loses its last row or column (cropped, never padded: no invented pixels).
* ``webm``: VP9 (libvpx-vp9), yuv420p, constant quality; same even-side crop.
* ``gif``: FFmpeg's gif encoder; each frame quantised to its own 256-colour palette
  by Pillow (fast octree).  Browsers play at most 50 fps
  (delays are in 1/100 s, and 0-1 mean "slow").
* ``webp``: animated WebP (libwebp_anim), lossy, quality 80, fed BGRA (libwebp converts).
  libwebp assembles the animation in memory: its memory grows with the file (the frames
  still come in one at a time).

mp4 and webm frames are converted to BT.709 limited-range YUV and tagged so (sRGB shares
BT.709's primaries), which is what browsers assume for untagged HD video anyway.

``av`` is in the ``worker`` extra: only workers encode; the web never imports this.
"""
from __future__ import annotations

from fractions import Fraction
from typing import IO, Iterable

import numpy as np

from shared.kinds.zoom import FORMATS, MAX_GIF_FPS  # what a zoom job may ask for

# container format, codec, pixel format, codec options, container options
_SPECS = {
    "mp4": ("mp4", "libx264", "yuv420p", {"crf": "20", "preset": "medium"}, {"movflags": "+faststart"}),
    "webm": ("webm", "libvpx-vp9", "yuv420p",
             {"crf": "32", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}, {}),
    "gif": ("gif", "gif", "pal8", {}, {}),
    "webp": ("webp", "libwebp_anim", "bgra", {"quality": "80"}, {"loop": "0"}),
}
_EVEN = ("mp4", "webm")  # yuv420p in these needs even sides


def even_crop(rgb: np.ndarray) -> np.ndarray:
    """Drop the last row and/or column when odd (what mp4 and webm frames get)."""
    h, w = rgb.shape[:2]
    return rgb[: h - h % 2, : w - w % 2]


def _pal8(rgb: np.ndarray):
    """An RGB frame as (indices, 256x4 ARGB palette), quantised by Pillow."""
    from PIL import Image

    # Fast octree: ~3 ms for 640x480 where median cut takes ~300 ms, a little less exact.
    im = Image.fromarray(rgb, "RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    palette = np.zeros((256, 4), np.uint8)
    colours = np.frombuffer(bytes(im.getpalette()), np.uint8).reshape(-1, 3)[:256]
    palette[: len(colours), 1:] = colours
    palette[:, 0] = 255  # opaque
    return np.asarray(im, np.uint8), palette


def encode(frames: Iterable[np.ndarray], fps: int, fmt: str, out_file: str | IO[bytes]) -> int:
    """Encode uint8 ``(H, W, 3)`` RGB frames, taken one at a time from ``frames``, into
    ``out_file`` (a path or a seekable binary file) as ``fmt`` (one of FORMATS) at ``fps``.

    Every frame must have the first one's size.  Returns the number of frames written;
    raises ValueError for an empty iterator, an unknown format or a frame of another size.
    """
    import av
    from av.video.reformatter import ColorRange, Colorspace

    if fmt not in _SPECS:
        raise ValueError(f"unknown video format {fmt!r}; choose one of {', '.join(FORMATS)}")
    container_format, codec, pix_fmt, codec_options, container_options = _SPECS[fmt]
    if fmt == "mp4" and not isinstance(out_file, (str, bytes)) and not hasattr(out_file, "__fspath__"):
        container_options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
    if fmt == "gif":
        fps = min(fps, MAX_GIF_FPS)
    count, size = 0, None
    with av.open(out_file, mode="w", format=container_format, options=container_options) as container:
        stream = None
        for rgb in frames:
            rgb = np.ascontiguousarray(even_crop(rgb) if fmt in _EVEN else rgb, dtype=np.uint8)
            if stream is None:
                size = rgb.shape[:2]
                if min(size) < 2:
                    raise ValueError(f"a {size[1]}x{size[0]} frame is too small to encode")
                stream = container.add_stream(codec, rate=Fraction(fps))
                stream.height, stream.width = size
                stream.pix_fmt = pix_fmt
                stream.time_base = Fraction(1, fps)
                stream.options = dict(codec_options)
                if pix_fmt == "yuv420p":
                    cc = stream.codec_context
                    cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709 (AVCOL_*_BT709)
                    cc.color_range = 1  # limited ("MPEG")
            elif rgb.shape[:2] != size:
                raise ValueError(f"frame {count} is {rgb.shape[1]}x{rgb.shape[0]}, not {size[1]}x{size[0]}")
            if fmt == "gif":
                frame = av.VideoFrame.from_ndarray(_pal8(rgb), format="pal8")
            else:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                if pix_fmt == "yuv420p":
                    frame = frame.reformat(format=pix_fmt, dst_colorspace=Colorspace.ITU709,
                                           dst_color_range=ColorRange.MPEG)
                else:
                    frame = frame.reformat(format=pix_fmt)
            frame.pts, frame.time_base = count, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        if stream is None:
            raise ValueError("no frames to encode")
        for packet in stream.encode(None):  # flush the encoder's delayed frames
            container.mux(packet)
    return count


def probe(path_or_file: str | IO[bytes]) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) of a video, the frames counted by decoding them all.

    Animated WebP is read with Pillow: FFmpeg's webp decoder does not read animations.
    """
    if _is_webp(path_or_file):
        return _probe_webp(path_or_file)
    import av

    with av.open(path_or_file, mode="r") as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return frames, stream.codec_context.width, stream.codec_context.height, float(rate) if rate else 0.0


def _is_webp(path_or_file) -> bool:
    if isinstance(path_or_file, (str, bytes)) or hasattr(path_or_file, "__fspath__"):
        with open(path_or_file, "rb") as f:
            head = f.read(12)
    else:
        at = path_or_file.tell()
        head = path_or_file.read(12)
        path_or_file.seek(at)
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _probe_webp(path_or_file) -> tuple[int, int, int, float]:
    from PIL import Image

    with Image.open(path_or_file) as im:
        frames, total_ms = getattr(im, "n_frames", 1), 0
        for i in range(frames):
            im.seek(i)
            im.load()  # Pillow sets a WebP frame's duration when it decodes it
            total_ms += im.info.get("duration") or 0
        return frames, im.width, im.height, 1000.0 * frames / total_ms if total_ms else 0.0
