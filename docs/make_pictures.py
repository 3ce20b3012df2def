"""Make the zoom strip and guided example of docs/ZOOM_AND_GUIDES.md with the offline vgg16_hed model.

    .venv/bin/python docs/make_pictures.py     # writes docs/images/zoom_strip.jpg, guided.jpg

Small on purpose (a few minutes on 2 CPU cores, files well under 2 MiB).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from shared.kinds.zoom import ZoomParams
from worker.kinds.zoom import zoom_frame
from shared.params import parse_params
from worker.dream import Dreamer
from worker.models import load_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"
SIDE = 224


def photo() -> np.ndarray:
    img = Image.open(ROOT / "dreamq" / "samples" / "astronaut.jpg").convert("RGB")
    return np.asarray(img.resize((SIDE, SIDE), Image.LANCZOS))


def dots_guide(side: int = 224) -> np.ndarray:
    """A guide anyone can recognise in the result: bright rings on dark."""
    img = Image.new("RGB", (side, side), (20, 20, 40))
    draw = ImageDraw.Draw(img)
    for y in range(12, side, 36):
        for x in range(12 + (y // 36 % 2) * 18, side, 36):
            draw.ellipse([x - 11, y - 11, x + 11, y + 11], outline=(250, 210, 60), width=4)
    return np.asarray(img)


def main() -> None:
    dreamer = Dreamer(load_model("vgg16_hed"))
    OUT.mkdir(parents=True, exist_ok=True)

    # Zoom: 8 frames, every frame the dream of the previous one zoomed in (the zoom kind's loop).
    params = ZoomParams(model="vgg16_hed", frames=8, zoom=1.12, rotate=2.0)
    frames, frame = [], photo()
    for k in range(params.frames):
        source = frame if k == 0 else zoom_frame(frame, params.zoom, params.rotate)
        frame = dreamer.dream(source, params.model_copy(update={"seed": params.seed + k, "precision": "fp32"}))
        frames.append(frame)
    strip = np.concatenate([np.concatenate(frames[:4], axis=1), np.concatenate(frames[4:], axis=1)], axis=0)
    Image.fromarray(strip).save(OUT / "zoom_strip.jpg", quality=85)

    # Guided: photo, guide, unguided dream, guided dream.
    still = parse_params({"model": "vgg16_hed", "octaves": 2, "iterations": 10}).model_copy(
        update={"precision": "fp32"})
    guide = dots_guide()
    row = [photo(), guide, dreamer.dream(photo(), still), dreamer.dream(photo(), still, guide=guide)]
    Image.fromarray(np.concatenate(row, axis=1)).save(OUT / "guided.jpg", quality=85)
    for name in ("zoom_strip.jpg", "guided.jpg"):
        print(name, (OUT / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
