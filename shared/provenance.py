"""The parameters travel with the picture: a PNG text chunk that says how it was dreamed.

A result PNG carries an iTXt chunk, keyword ``dreamq``, whose text is JSON:
``{"kind", "params" (the effective parameters), "model", "weights" (the first 16 hex digits of the
weights fingerprint the worker reports in its heartbeat, shared/cache.py), "version"}``, and a
tEXt ``Software`` = ``dreamq <version>``.  `dreamq submit --params-from dream.png` reads it back.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin
from pydantic import BaseModel

__all__ = ["KEYWORD", "VERSION", "png_info", "read"]

KEYWORD = "dreamq"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("dreamq")
    except Exception:  # noqa: BLE001 - a checkout that is not installed
        return "unknown"


VERSION = _version()


def png_info(kind: str, params: BaseModel | dict[str, Any], weights: str | None) -> PngImagePlugin.PngInfo:
    """The chunks to save with a result (``Image.save(..., pnginfo=...)``): ``params``, the effective
    ones (their ``model`` names the model); ``weights``, the model's weights fingerprint, of which
    the first 16 hex digits are kept."""
    if isinstance(params, BaseModel):
        params = params.model_dump(mode="json")
    text = {"kind": kind, "params": params, "model": params.get("model"),
            "weights": weights[:16] if weights else None, "version": VERSION}
    info = PngImagePlugin.PngInfo()
    info.add_itxt(KEYWORD, json.dumps(text, default=str))
    info.add_text("Software", f"dreamq {VERSION}")
    return info


def read(source: bytes | str | Path) -> dict[str, Any] | None:
    """The ``dreamq`` chunk of a PNG (bytes or a path) as a dict, or None when it has none."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            raw = (getattr(im, "text", None) or {}).get(KEYWORD)  # .text reads the chunks after the pixels too
    except (OSError, ValueError, Image.DecompressionBombError):  # not an image: no parameters
        return None
    try:
        found = json.loads(raw) if raw else None
    except ValueError:
        return None
    return found if isinstance(found, dict) and isinstance(found.get("params"), dict) else None
