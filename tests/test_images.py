"""Every image a person might upload decodes to RGB, or fails with a clear error."""
import io

import numpy as np
import pytest
from PIL import Image

from shared.images import ImageError, check_size, decode_image, encode_png
from shared.models import dream_octave_shapes, octave_shapes
from shared.params import parse_params


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    "mode,fmt",
    [("RGB", "JPEG"), ("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("L", "PNG"),
     ("I;16", "PNG"), ("RGB", "WEBP"), ("RGB", "BMP"), ("RGB", "TIFF"), ("P", "GIF")],
)
def test_every_mode_decodes_to_rgb(photo, mode, fmt):
    im = Image.fromarray(photo[:64, :96])
    if mode == "I;16":
        im = Image.fromarray((np.asarray(im.convert("L"), np.uint16) * 257).astype(np.uint16))
    else:
        im = im.convert(mode)
    out = decode_image(_encode(im, fmt))
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8
    grey = np.asarray(Image.fromarray(photo[:64, :96]).convert("L"), float)
    # Content survives (16-bit is scaled, not clipped to white).
    assert np.corrcoef(out.mean(axis=2).ravel(), grey.ravel())[0, 1] > 0.9


def test_transparent_pixels_become_white():
    im = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    assert decode_image(_encode(im, "PNG"))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(photo):
    im = Image.fromarray(photo[:60, :100])  # landscape pixels...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...displayed rotated 90° clockwise
    out = decode_image(_encode(im, "JPEG", exif=exif))
    assert out.shape == (100, 60, 3)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue())
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


def test_decompression_bomb_is_refused_before_decoding():
    data = _encode(Image.new("L", (30000, 30000)), "PNG")  # a few kB declaring 900 Mpx
    assert len(data) < 2_000_000
    with pytest.raises(ImageError) as err:
        decode_image(data)
    assert err.value.code == "image_too_large" and "40000000" in str(err.value)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"<svg xmlns='http://www.w3.org/2000/svg'/>"])
def test_garbage_is_unsupported(data):
    with pytest.raises(ImageError) as err:
        decode_image(data)
    assert err.value.code == "unsupported_image"


def test_truncated_files_are_unsupported(photo):
    for fmt in ("PNG", "JPEG"):
        data = _encode(Image.fromarray(photo), fmt)
        with pytest.raises(ImageError) as err:
            decode_image(data[: len(data) // 2])
        assert err.value.code == "unsupported_image"


def test_an_image_too_small_even_at_full_size_is_refused_naming_the_limit():
    params = parse_params({})  # mixed4..7 need 107 px
    with pytest.raises(ImageError) as err:
        check_size(106, 300, params)
    msg = str(err.value)
    assert err.value.code == "image_too_small" and "107 px" in msg and "300x106" in msg
    with pytest.raises(ImageError):
        check_size(60, 60, parse_params({"model": "vgg16_hed", "layers": "block5_conv3=1"}))  # needs 80


def test_small_images_skip_the_octaves_that_do_not_fit_with_a_warning():
    params = parse_params({})
    # The seed's own size limit for 3 octaves is 210 px; a 224x150 photo skips its smallest octave.
    warning = check_size(150, 224, params)
    assert warning is not None and "224x150" in warning and "1 smallest of 3 octaves" in warning
    assert "dreamed 2 octaves from 160x107" in warning
    assert dream_octave_shapes(150, 224, 3, 1.4, 107) == [(107, 160), (150, 224)]
    # Only the full size fits: one octave.
    assert "dreamed 1 octave from 130x110" in check_size(110, 130, params)
    # Where every octave fits, nothing is skipped and the shapes are exactly the seed's.
    assert check_size(210, 300, params) is None
    assert dream_octave_shapes(210, 300, 3, 1.4, 107) == octave_shapes(210, 300, 3, 1.4)
    assert check_size(120, 120, parse_params({"octaves": 1})) is None


def test_max_side_downscales_keeping_aspect(photo):
    out = decode_image(_encode(Image.fromarray(photo[:, :256]), "PNG"), max_side=128)
    assert out.shape == (128, 64, 3)


def test_png_round_trip(photo):
    assert np.array_equal(decode_image(encode_png(photo)), photo)
