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

__all__ = ["ImageError", "decode_image", "check_size", "encode_png", "DEFAULT_MAX_PIXELS"]

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
        # 16/32-bit greyscale: scale to 8 bits instead of clipping to white.
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent areas have arbitrary colours underneath: show them as white.
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


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
            im = ImageOps.exif_transpose(im)
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
    return np.asarray(im, dtype=np.uint8).copy()


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
