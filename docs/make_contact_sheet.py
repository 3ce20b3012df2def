"""Choose vgg16_hed's defaults and presets by looking: a labelled contact sheet of candidate settings.

    .venv/bin/python docs/make_contact_sheet.py             # docs/images/contact_sheet_vgg16_hed.jpg, then --presets' pictures
    .venv/bin/python docs/make_contact_sheet.py --presets   # docs/images/astronaut_vgg16_hed_defaults.jpg (the
                                                            # catalog's defaults) and web/static/presets/<model>-<preset>.jpg

Rows: four kinds of photo (dreamq/samples/, offline and free to use, see its README.md); columns:
candidate settings, the first being the defaults before issue 21.  The engine is called directly
(no queue).  Small on purpose: 256 px squares, about 15 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from shared.models import MODELS
from shared.params import parse_params
from worker.dream import Dreamer
from worker.models import WeightsUnavailable, load_model

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "dreamq" / "samples"
OUT = ROOT / "docs" / "images"
PRESETS_OUT = ROOT / "web" / "static" / "presets"
SIDE = 256
THUMB = 160

# The four kinds of photo.  No colour landscape and no real night sky ship with scikit-image:
# the cameraman (grey, a field with buildings far behind) is the widest outdoor scene, and the
# rocket is a real night launch (dark sky, floodlights).
PHOTOS = [("portrait", "astronaut.jpg"), ("landscape", "camera.jpg"), ("object", "coffee.jpg"),
          ("night", "rocket.jpg")]

DEEP = {"block3_conv3": 1.0, "block4_conv3": 1.5, "block5_conv3": 2.0}  # the defaults' layers before issue 21
# (label, parameters): what varies is layers, step, octaves and steps.
CANDIDATES = [
    ("before: b3-b5, step 1.5, 3x20", {"layers": DEEP, "step": 1.5}),
    ("b3-b5, step 1.5, 2x5", {"layers": DEEP, "step": 1.5, "octaves": 2, "iterations": 5}),
    ("b3-b5, step 0.75, 3x20", {"layers": DEEP, "step": 0.75}),
    ("b3-b5, step 0.5, 3x20", {"layers": DEEP, "step": 0.5}),
    ("b3-b5, step 0.3, 3x20", {"layers": DEEP, "step": 0.3}),
    ("b2c2+b3c3, step 0.5, 3x20", {"layers": {"block2_conv2": 1.0, "block3_conv3": 2.0}, "step": 0.5}),
    ("b4c3+b5c3, step 0.5, 3x20", {"layers": {"block4_conv3": 1.0, "block5_conv3": 2.0}, "step": 0.5}),
    ("b4c3, step 0.5, 3x20", {"layers": {"block4_conv3": 1.0}, "step": 0.5}),
]


def photo(name: str, side: int = SIDE) -> np.ndarray:
    """The centre square of a sample, ``side`` px: every cell of the sheet the same size."""
    img = Image.open(SAMPLES / name).convert("RGB")
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return np.asarray(img.resize((side, side), Image.LANCZOS, box=box))


def dream(dreamer: Dreamer, image: np.ndarray, values: dict) -> np.ndarray:
    params = parse_params({"model": dreamer.model.name, **values}).model_copy(update={"precision": "fp32"})
    return dreamer.dream(image, params)


def label(text: str, width: int, height: int = 22, size: int = 13) -> Image.Image:
    cell = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(cell).text((4, 4), text, fill=(0, 0, 0), font=ImageFont.load_default(size=size))
    return cell


def contact_sheet(dreamer: Dreamer) -> None:
    head, side_w = 22, 78
    sheet = Image.new("RGB", (side_w + SIDE * (len(CANDIDATES) + 1), head + SIDE * len(PHOTOS)), (255, 255, 255))
    sheet.paste(label("photo", SIDE), (side_w, 0))
    for c, (text, _) in enumerate(CANDIDATES):
        sheet.paste(label(text, SIDE), (side_w + SIDE * (c + 1), 0))
    for r, (kind, name) in enumerate(PHOTOS):
        image = photo(name)
        y = head + SIDE * r
        sheet.paste(label(kind, side_w - 4), (0, y + SIDE // 2 - 11))
        sheet.paste(Image.fromarray(image), (side_w, y))
        for c, (text, values) in enumerate(CANDIDATES):
            t0 = time.perf_counter()
            sheet.paste(Image.fromarray(dream(dreamer, image, values)), (side_w + SIDE * (c + 1), y))
            print(f"{kind:9} {text:32} {time.perf_counter() - t0:5.1f} s", flush=True)
    path = OUT / "contact_sheet_vgg16_hed.jpg"
    sheet.save(path, quality=80)
    print(path.name, path.stat().st_size, "bytes")


def presets() -> None:
    """The pictures that follow the catalog: vgg16_hed's defaults on the sample photo, and one
    thumbnail per preset of each model whose weights are here (the form's gallery), dreamed
    at SIDE then shrunk: a preset's look at the size people dream at, not at 160 px."""
    path = OUT / "astronaut_vgg16_hed_defaults.jpg"
    dreamer = Dreamer(load_model("vgg16_hed"))
    Image.fromarray(dream(dreamer, photo("astronaut.jpg", 320), {})).save(path, quality=85)
    print(path.relative_to(ROOT), path.stat().st_size, "bytes", flush=True)
    PRESETS_OUT.mkdir(parents=True, exist_ok=True)
    for spec in MODELS.values():
        try:
            dreamer = Dreamer(load_model(spec.name))
        except WeightsUnavailable as exc:
            print(f"{spec.name}: no thumbnails ({str(exc)[:80]}...)")
            continue
        image = photo("astronaut.jpg")
        for preset in spec.presets:
            thumb = Image.fromarray(dream(dreamer, image, {"preset": preset})).resize((THUMB, THUMB), Image.LANCZOS)
            path = PRESETS_OUT / f"{spec.name}-{preset}.jpg"
            thumb.save(path, quality=85)
            print(path.relative_to(ROOT), path.stat().st_size, "bytes", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", action="store_true", help="only the pictures of the catalog's defaults and presets, not the sheet")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.presets:
        contact_sheet(Dreamer(load_model("vgg16_hed")))
    presets()


if __name__ == "__main__":
    main()
