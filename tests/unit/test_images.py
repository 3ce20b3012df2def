"""Every image a person might upload decodes to RGB, or fails with a clear error."""
import io
import struct
import time

import numpy as np
import pytest
from PIL import Image

from bench.hostile import scan_bomb
from shared import images
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


# -- work bounded, not only pixels (issue 19): JPEG scans counted from the markers, a CPU budget per decode

@pytest.mark.parametrize("mode,scans", [("RGB", 10), ("L", 6), ("CMYK", 18)])
def test_progressive_jpegs_as_encoders_write_them_pass_the_scan_count(photo, mode, scans):
    data = _encode(Image.fromarray(photo).convert(mode), "JPEG", progressive=True)
    assert images.jpeg_scans(data) == scans <= images.MAX_JPEG_SCANS
    assert images.declared_pixels(data) == 512 * 512
    assert decode_image(data).shape == (512, 512, 3)
    assert images.jpeg_scans(_encode(Image.fromarray(photo), "JPEG")) == 1  # baseline
    assert images.jpeg_scans(_encode(Image.fromarray(photo), "PNG")) == 0  # not a JPEG


def test_the_scan_bomb_is_a_valid_jpeg_that_libjpeg_decodes():
    # Small enough to decode here: the bomb's extra scans leave the picture as it was.
    bomb = scan_bomb(side=128, size=30_000)
    plain = bomb[:bomb.index(b"\xff\xc4\x00\x14\x13")] + b"\xff\xd9"
    assert images.jpeg_scans(plain) == 10 and len(bomb) > 29_000
    with Image.open(io.BytesIO(bomb)) as im, Image.open(io.BytesIO(plain)) as expected:
        assert np.array_equal(np.asarray(im), np.asarray(expected))


def test_a_progressive_scan_bomb_is_refused_from_its_markers_before_decoding():
    bomb = scan_bomb()  # 2 MB declaring 1448x1448: 19 s of CPU to decode before issue 19
    for check in (images.declared_pixels, decode_image):
        t0 = time.process_time()
        with pytest.raises(ImageError) as err:
            check(bomb)
        assert time.process_time() - t0 < 0.5
        assert err.value.code == "image_too_complex" and err.value.field == "image"
        assert f"more than {images.MAX_JPEG_SCANS} scans" in str(err.value)


def _with_segment(jpeg: bytes, marker: int, payload: bytes) -> bytes:
    """``jpeg`` with a segment inserted after SOI."""
    return jpeg[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_scan_markers_inside_segments_do_not_count(photo):
    jpeg = _encode(Image.fromarray(photo), "JPEG")
    # An EXIF thumbnail or a comment may hold FF DA: skipped by the segment's length, not counted.
    data = _with_segment(_with_segment(jpeg, 0xE1, b"Exif\0\0" + b"\xff\xda\x00\x08" * 500), 0xFE, b"\xff\xda" * 100)
    assert images.jpeg_scans(data) == 1
    assert decode_image(data).shape == (512, 512, 3)
    # What follows EOI (an MPO's second image, trailing garbage) is not decoded: not counted either.
    assert images.jpeg_scans(jpeg + scan_bomb(side=64, size=5_000)) == 1


def test_a_jpeg_of_countless_segments_is_refused_quickly(photo):
    jpeg = _encode(Image.fromarray(photo), "JPEG")
    data = jpeg[:2] + b"\xff\xfe\x00\x02" * 1_000_000 + jpeg[2:]  # 4 MB of empty comments
    t0 = time.process_time()
    with pytest.raises(ImageError) as err:
        images.declared_pixels(data)
    assert time.process_time() - t0 < 0.5
    assert err.value.code == "image_too_complex" and f"more than {images.MAX_JPEG_SEGMENTS} segments" in str(err.value)


def test_the_decode_budget_stops_a_slow_decode(monkeypatch):
    # Were the scans not counted, the CPU budget would still stop the bomb (here after 0.1 s plus
    # 0.5 s for its 2.1 Mpx) well before the 19 s its decoding takes.
    monkeypatch.setattr(images, "MAX_JPEG_SCANS", 10**9)
    monkeypatch.setattr(images, "MAX_JPEG_SEGMENTS", 10**9)
    t0 = time.process_time()
    with pytest.raises(ImageError) as err:
        decode_image(scan_bomb(), budget_s=0.1)
    assert time.process_time() - t0 < 3
    assert err.value.code == "image_too_complex" and "0.6 s of CPU" in str(err.value)


def test_a_big_photo_decodes_well_within_its_budget():
    # 24 Mpx of a busy progressive JPEG, as a camera's: its budget is 2 s + 0.25 s per Mpx (8 s).
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (500, 750, 3), dtype=np.uint8))
    data = _encode(small.resize((6000, 4000), Image.BICUBIC), "JPEG", quality=95, progressive=True, subsampling=0)
    t0 = time.process_time()
    assert decode_image(data, max_side=1024).shape == (683, 1024, 3)
    assert time.process_time() - t0 < images.DEFAULT_DECODE_BUDGET_S + images.DECODE_S_PER_MPX * 24


def test_only_the_documented_formats_are_opened(photo):
    # A BLP texture wraps a JPEG that Pillow decodes by itself: the scan bomb inside it would pass
    # both the scan count and the budget.  No photo is a BLP: refused from its signature.
    bomb = scan_bomb(size=20_000)
    header = b"BLP1" + struct.pack("<iIIIii", 0, 0, 1448, 1448, 5, 0)
    blp = header + struct.pack("<16I", 28 + 128 + 4, *[0] * 15) + struct.pack("<17I", len(bomb), *[0] * 16) + bomb
    assert Image.open(io.BytesIO(blp)).format == "BLP"
    for data in (blp, _encode(Image.fromarray(photo), "ICO"), _encode(Image.fromarray(photo), "PPM")):
        for check in (images.declared_pixels, decode_image):
            with pytest.raises(ImageError) as err:
                check(data)
            assert err.value.code == "unsupported_image"


# -- an upload that is already a plain PNG is stored as it came (issue 22: no re-encode) --------

def test_only_a_plain_rgb_png_counts_as_plain(photo):
    from PIL import PngImagePlugin

    rgb = Image.fromarray(photo[:48, :80])
    plain = _encode(rgb, "PNG")
    assert images.plain_png_size(plain) == (80, 48)
    assert images.plain_png_size(_encode(rgb, "PNG", dpi=(72, 72))) == (80, 48)  # pHYs changes no pixel
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "someone")
    rotated = Image.Exif()
    rotated[0x0112] = 6  # an orientation: decode_image turns the picture
    interlaced = plain[:28] + b"\x01" + plain[29:]  # IHDR's interlace byte (Pillow writes none)
    not_plain = [_encode(rgb, "PNG", pnginfo=text), _encode(rgb, "PNG", exif=rotated), _encode(rgb.convert("RGBA"), "PNG"),
                 _encode(rgb.convert("P"), "PNG"), _encode(rgb.convert("L"), "PNG"), interlaced, plain + b"trailing",
                 plain[:-12], _encode(rgb, "JPEG"), b"", plain[:8]]
    assert [images.plain_png_size(data) for data in not_plain] == [None] * len(not_plain)


def test_the_web_stores_a_plain_png_as_it_came_and_re_encodes_the_rest(photo):
    from PIL import PngImagePlugin

    from shared.settings import Settings
    from web.uploads import normalise

    params, settings = parse_params({"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": 1}), Settings()
    plain = _encode(Image.fromarray(photo[:128, :128]), "PNG")
    assert normalise(plain, None, params, settings)[0] is plain
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "someone")
    for upload in (_encode(Image.fromarray(photo[:128, :128]), "PNG", pnginfo=text),
                   _encode(Image.fromarray(photo[:128, :128]), "JPEG", quality=95)):
        stored = normalise(upload, None, params, settings)[0]
        assert images.plain_png_size(stored) == (128, 128) and b"someone" not in stored
        assert np.array_equal(decode_image(stored), decode_image(upload))  # the same pixels
    big = _encode(Image.fromarray(photo[:300, :200]), "PNG")  # max_side: resized, so encoded again
    stored = normalise(big, None, parse_params({"model": "vgg16_hed", "max_side": 150}), settings)[0]
    assert images.plain_png_size(stored) == (100, 150)
