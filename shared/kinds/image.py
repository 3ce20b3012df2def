"""kind=image: one photo in, its Deep Dream out (the Keras example's octave loop); its handler
is worker/kinds/image.py.

With a guide image beside the photo (file role ``guide``), the dream is drawn toward
the guide's features (the google/deepdream notebook's guided dreams).
"""
from __future__ import annotations

import hashlib
import json

from ..params import DreamParams, parse_params
from .kind import Kind


def progress_before_start(params: dict) -> dict:
    return {"fraction": 0.0, "octave": None, "octaves": params.get("octaves"), "step": None,
            "steps": params.get("iterations"), "loss": None, "eta_s": None}


def batch_key(params, height: int, width: int, has_guide: bool) -> str | None:
    """Jobs that one batched run dreams as each would alone (worker/dream.py ``dream_batch``): the same
    model, picture shape and step parameters (the seed aside: the plain step draws nothing).  Only the
    plain step batches: no jitter, no tiles, no guide."""
    values = params.model_dump() if hasattr(params, "model_dump") else dict(params)
    if values.get("jitter") or values.get("tile_size") is not None or has_guide:
        return None
    values.pop("seed", None)
    text = json.dumps({"model": values.get("model"), "height": int(height), "width": int(width),
                       "params": values}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


INPUT, PREVIEW, RESULT, GUIDE = "input.png", "preview.png", "result.png", "guide.png"  # in the job's store folder

KIND = Kind(name="image", title="A picture", summary="one dreamed picture (the default)",
            params=DreamParams, parse=parse_params, result_types={"image/png": ".png"},
            files={"input": INPUT, "preview": PREVIEW, "result": RESULT, "guide": GUIDE},
            media_type="image/png", progress=progress_before_start, batch_key=batch_key)
