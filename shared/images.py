"""Turning uploaded bytes into an RGB array, and arrays back into PNG bytes.

Everything a client can get wrong about an image is caught here and raised as
ImageError with a code the web maps to a status (415, 413, 422).
"""
from __future__ import annotations

import io
import re
import time
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .models import MODELS, dream_octave_shapes, octave_shapes

__all__ = ["DEFAULT_DECODE_BUDGET_S", "DEFAULT_MAX_PIXELS", "INPUT_PNG_LEVEL", "ImageError", "check_size",
           "declared_pixels", "decode_image", "encode_png", "jpeg_scans", "plain_png_size"]

# 40 megapixels: far above any photo we dream, far below what exhausts memory.
DEFAULT_MAX_PIXELS = 40_000_000

# What a client is told of a file Pillow cannot read: Pillow's own text names Python objects
# (`cannot identify image file <_io.BytesIO object at 0x...>`), which mean nothing to a person.
UNREADABLE = "not an image this server can read (JPEG, PNG, WebP, GIF, BMP, TIFF)"

# The formats the API documents (JPEG opens a camera's MPO too).  Pillow's others are decoders no
# photo needs, and BLP hides a JPEG that its decoder opens by itself, out of reach of the scan
# count and the CPU budget below.
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")

# libjpeg decodes every scan a progressive JPEG holds, each a pass over all its blocks however
# few bytes it has: 2 MB of 13-byte scans at 1448x1448 took 19 s of CPU.  libjpeg's progression
# writes 10 scans for a colour photo (18 for CMYK), mozjpeg picks its scans among 64 candidates,
# and libtiff stops a JPEG in a TIFF at 100 (LIBTIFF_JPEG_MAX_ALLOWED_SCAN_NUMBER).
MAX_JPEG_SCANS = 64
# Segments of all kinds, so the walk that counts scans is itself cheap: a camera's JPEG has a few
# dozen (an ICC profile in at most 255 APP2 chunks included), a file of 4-byte ones a million.
MAX_JPEG_SEGMENTS = 2000

# The CPU one decode may take (a thread's CPU, not wall time: a busy machine does not shrink it):
# a base plus an allowance per megapixel.  A 26 MB progressive 4:4:4 JPEG of 40 Mpx took 1.0 s to
# decode on a 2-core EPYC VM; 2 s + 0.25 s/Mpx gives it 12 s, more than ten times that.
DEFAULT_DECODE_BUDGET_S = 2.0
DECODE_S_PER_MPX = 0.25
# Pillow feeds the decoder blocks of this many bytes, and the budget is checked before each read:
# at the worst CPU per byte (2 MB of empty scans) a 16 KiB block took 0.23 s.  No slower for photos.
DECODE_BLOCK = 16 * 1024


class ImageError(ValueError):
    """A client-side image problem. ``code``: unsupported_image | image_too_large | image_too_complex |
    image_too_small."""

    def __init__(self, code: str, message: str):
        self.code = code
        self.field = "image"
        super().__init__(message)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping to white.  Integer
        # arithmetic in place: a float64 copy of a 39 Mpx image alone is 312 MB.
        if im.mode.startswith("I;16"):
            arr = np.asarray(im).astype(np.uint16, copy=False)
            shift = 8  # 0..65535 -> 0..255
        else:
            arr = np.asarray(im)
            if im.mode == "F":
                arr = np.nan_to_num(arr, nan=0.0, posinf=65535.0, neginf=0.0)
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
            shift = 8 if arr.max() > 255 else 0
        grey = arr >> shift
        if shift:  # round to nearest, as v / 65535 * 255 would (off by at most 1)
            grey += (arr & 0xFF) >= 0x80
            np.minimum(grey, 255, out=grey)
        del arr
        return Image.fromarray(grey.astype(np.uint8, copy=False), "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent areas have arbitrary colours underneath: show them as white.  Pasting
        # through the alpha mask onto a white RGB canvas needs one RGB copy, where
        # alpha_composite needs three RGBA ones.
        if im.mode != "RGBA":  # convert() to the same mode would still copy
            im = im.convert("RGBA")
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, (0, 0), im)
        return background
    return im.convert("RGB")


# The next marker, as libjpeg finds it: 0xFF then a byte that is not 0x00 (a stuffed 0xFF in
# entropy-coded data), 0xFF (fill) or D0-D7 (a restart marker: no payload, libjpeg reads on).
# Whatever comes before it is entropy-coded data or garbage that libjpeg skips too.
_NEXT_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")


def jpeg_scans(data: bytes) -> int:
    """The number of scans (SOS markers) of the JPEG's first image, counted from its markers without
    decoding; 0 for anything that is not a JPEG.

    Segments are skipped by their lengths, so bytes FF DA inside one (an EXIF thumbnail's) do not
    count.  Raises ImageError("image_too_complex") past MAX_JPEG_SCANS scans or MAX_JPEG_SEGMENTS
    segments; anything else wrong with the file is Pillow's to find.
    """
    if not data.startswith(b"\xff\xd8"):
        return 0
    pos, scans, segments = 2, 0, 0
    while (found := _NEXT_MARKER.search(data, pos)) is not None:
        marker, pos = data[found.start() + 1], found.end()
        if marker == 0xD9:  # EOI: what follows (an MPO's second image) is not decoded
            break
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise ImageError("image_too_complex",
                             f"the JPEG has more than {MAX_JPEG_SEGMENTS} segments (markers); no camera writes so many")
        if marker == 0x01:  # TEM: no length
            continue
        pos += int.from_bytes(data[pos:pos + 2], "big")  # the length counts itself, not the marker
        if marker == 0xDA:  # SOS: its header, then entropy-coded data up to the next marker
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise ImageError("image_too_complex",
                                 f"the JPEG has more than {MAX_JPEG_SCANS} scans (each costs a full decoding pass); "
                                 "cameras write at most a few dozen: re-save it as a baseline or standard "
                                 "progressive JPEG")
    return scans


def declared_pixels(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The pixel count the image's header declares, read without decoding (Image.open is lazy).

    Raises ImageError for an image over ``max_pixels``, one Pillow cannot identify, or a JPEG with
    more scans than any camera writes, so that a bomb is refused before it waits for, or takes, a
    decode slot.
    """
    if not data:
        raise ImageError("unsupported_image", "the image is empty (0 bytes)")
    jpeg_scans(data)  # first: Pillow's own walk to the frame header is slower, in Python
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as im:
                width, height = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image_too_large", f"the image declares more than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ImageError("unsupported_image", UNREADABLE) from None
    if width * height > max_pixels:
        raise ImageError("image_too_large",
                         f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels")
    return width * height


class _BudgetedBytes(io.BytesIO):
    """The upload as Pillow's decoders read it: once ``start``ed, each read first checks the
    thread's CPU time.  Pillow decodes as it reads (libjpeg consumes each progressive scan as its
    bytes arrive), so the decode stops within one block of the budget."""

    deadline: float | None = None

    def start(self, budget_s: float) -> None:
        self.budget_s, self.deadline = budget_s, time.thread_time() + budget_s

    def read(self, size: int | None = -1) -> bytes:
        if self.deadline is not None and time.thread_time() > self.deadline:
            raise ImageError("image_too_complex",
                             f"decoding the image took more than its {self.budget_s:.1f} s of CPU; "
                             "re-save it as a baseline JPEG or PNG")
        return super().read(size)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None,
                 budget_s: float | None = DEFAULT_DECODE_BUDGET_S) -> np.ndarray:
    """Decode image bytes to an ``(H, W, 3)`` uint8 RGB array, upright per EXIF.

    Refuses anything Pillow cannot read, and images whose header declares
    more than ``max_pixels`` (decompression bombs) before decoding them.
    ``max_side`` downscales so that the longer side is at most that many pixels.
    The decoding may take ``budget_s`` seconds of CPU plus DECODE_S_PER_MPX per megapixel
    (None: no limit), then ImageError("image_too_complex"); what follows it is bounded by the pixels.
    """
    if not data:
        raise ImageError("unsupported_image", "the image is empty (0 bytes)")
    jpeg_scans(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fp = _BudgetedBytes(data)
            im = Image.open(fp, formats=FORMATS)
            width, height = im.size
            if width * height > max_pixels:
                raise ImageError(
                    "image_too_large",
                    f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels",
                )
            if budget_s is not None:
                im.decodermaxblock = DECODE_BLOCK
                fp.start(budget_s + DECODE_S_PER_MPX * width * height / 1e6)
            im.load()  # first frame only, for animations
            ImageOps.exif_transpose(im, in_place=True)  # not a copy: that is one more full image
            im = _to_rgb(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image_too_large", f"the image declares more than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ImageError("unsupported_image", UNREADABLE) from None
    if max_side is not None and max(im.size) > max_side:
        ratio = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * ratio)), max(1, round(im.height * ratio))), Image.LANCZOS)
    # Pillow hands numpy a read-only bytes copy: drop the image before making the one
    # writable copy callers get, so at most two full-size buffers exist at once.
    arr = np.asarray(im, dtype=np.uint8)
    del im
    return arr.copy() if not arr.flags.writeable else arr


def check_size(height: int, width: int, params) -> str | None:
    """Refuse (ImageError) an image too small for the model even at full size; return a
    warning when its smallest octaves are skipped (the pyramid starts at the first that fits)."""
    spec = MODELS[params.model]
    octaves, octave_scale = params.octaves, params.octave_scale
    min_side = spec.min_side_for(params.layers)
    if min(height, width) < min_side:
        raise ImageError(
            "image_too_small",
            f"the image is {width}x{height}, below the {min_side} px minimum of {params.model} with these "
            f"layers: give an image at least {min_side} px on its shorter side",
        )
    shapes = dream_octave_shapes(height, width, octaves, octave_scale, min_side)
    if len(shapes) == octaves:
        return None
    small_h, small_w = octave_shapes(height, width, octaves, octave_scale)[0]
    return (f"the image is {width}x{height}: its {octaves - len(shapes)} smallest of {octaves} octaves (down to "
            f"{small_w}x{small_h}) would be below the {min_side} px minimum of {params.model} with these layers, "
            f"so it dreamed {len(shapes)} octave{'s' if len(shapes) > 1 else ''} from {shapes[0][1]}x{shapes[0][0]}")


# zlib's level for the inputs the web stores (a worker decodes each once): level 1 encoded a 1920x1080
# photo in 153 ms against level 6's 710 ms (the default), for 17 % more bytes; 128x128: 2.4 ms
# against 4.7 ms, 4 % more (a loaded 2-core VM, docs/PERFORMANCE.md).  Results keep the default.
INPUT_PNG_LEVEL = 1


def encode_png(rgb: np.ndarray, pnginfo=None, compress_level: int = 6) -> bytes:
    """``pnginfo``: text chunks to carry (shared/provenance.py).  ``compress_level``: zlib's, 0-9."""
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", pnginfo=pnginfo, compress_level=compress_level)
    return buf.getvalue()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that change no pixel and say nothing of who made the picture or where.  Any other (text,
# time, EXIF, an ICC profile, a palette, transparency, animation) has the upload re-encoded.
PLAIN_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"sRGB", b"gAMA", b"cHRM", b"pHYs"})


def plain_png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) when ``data`` is a PNG that a decode and re-encode would only copy: 8-bit RGB,
    not interlaced, only PLAIN_CHUNKS, nothing after IEND; else None.  Read from the chunk headers
    alone (no decoding, no CRC check: the caller decodes it anyway), so an upload that is already
    such a PNG can be stored as it came instead of encoded again."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, colour, _compression, _filter, interlace = data[24:29]
    if (depth, colour, interlace) != (8, 2, 0):
        return None
    pos, idat = 8, False
    while pos + 12 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if kind not in PLAIN_CHUNKS:
            return None
        idat = idat or kind == b"IDAT"
        pos += 12 + length
        if kind == b"IEND":
            return (width, height) if idat and pos == len(data) else None
    return None
