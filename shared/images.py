"""Turning uploaded bytes into an RGB array, and arrays back into PNG bytes.

Everything a client can get wrong about an image is caught here and raised as
ImageError with a code the web maps to a status (415, 413, 422).
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .models import MODELS, dream_octave_shapes, octave_shapes

__all__ = ["DEFAULT_MAX_PIXELS", "ImageError", "check_size", "declared_pixels", "decode_image", "encode_png"]

# 40 megapixels: far above any photo we dream, far below what exhausts memory.
DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """A client-side image problem. ``code``: unsupported_image | image_too_large | image_too_small."""

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


def declared_pixels(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The pixel count the image's header declares, read without decoding (Image.open is lazy).

    Raises ImageError for an image over ``max_pixels`` or one Pillow cannot identify, so that a
    bomb is refused before it waits for, or takes, a decode slot.
    """
    if not data:
        raise ImageError("unsupported_image", "the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image_too_large", f"the image declares more than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError("unsupported_image", f"not a readable image (PNG, JPEG, GIF, WebP, BMP, TIFF): {exc}") from None
    if width * height > max_pixels:
        raise ImageError("image_too_large",
                         f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels")
    return width * height


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> np.ndarray:
    """Decode image bytes to an ``(H, W, 3)`` uint8 RGB array, upright per EXIF.

    Refuses anything Pillow cannot read, and images whose header declares
    more than ``max_pixels`` (decompression bombs) before decoding them.
    ``max_side`` downscales so that the longer side is at most that many pixels.
    """
    if not data:
        raise ImageError("unsupported_image", "the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width * height > max_pixels:
                raise ImageError(
                    "image_too_large",
                    f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels",
                )
            im.load()  # first frame only, for animations
            ImageOps.exif_transpose(im, in_place=True)  # not a copy: that is one more full image
            im = _to_rgb(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image_too_large", f"the image declares more than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError("unsupported_image", f"not a readable image (PNG, JPEG, GIF, WebP, BMP, TIFF): {exc}") from None
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


def encode_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    return buf.getvalue()
