"""kind=image: one photo in, its Deep Dream out (the Keras example's octave loop); its handler
is worker/kinds/image.py.

With a guide image beside the photo (file role ``guide``), the dream is drawn toward
the guide's features (the google/deepdream notebook's guided dreams).
"""
from __future__ import annotations

from ..params import DreamParams, parse_params
from .kind import Kind


def progress_before_start(params: dict) -> dict:
    return {"fraction": 0.0, "octave": None, "octaves": params.get("octaves"), "step": None,
            "steps": params.get("iterations"), "loss": None, "eta_s": None}


INPUT, PREVIEW, RESULT, GUIDE = "input.png", "preview.png", "result.png", "guide.png"  # in the job's store folder

KIND = Kind(name="image", title="A picture", summary="one dreamed picture (the default)",
            params=DreamParams, parse=parse_params, result_types={"image/png": ".png"},
            files={"input": INPUT, "preview": PREVIEW, "result": RESULT, "guide": GUIDE},
            media_type="image/png", progress=progress_before_start)
