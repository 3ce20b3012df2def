"""Job kinds: what a job does, declared in one place per kind.

A kind declares its parameter schema, the files it keeps in the store, the media type of
its result, the progress fields a client sees before the first update and the limits that
need the picture's size.  The web, the CLI and the OpenAPI document read the declaration;
the work itself is the kind's handler, worker code (worker/kinds/), so nothing here imports
Keras or PyAV.

Adding a kind: one declaration module beside ``image.py`` and its line in ``KINDS``, and one
handler module of the same name in worker/kinds/ (the worker finds it by the kind's name).

File names may hold a numbered series: ``"frames/{n:05d}.png"`` is ``frames/00000.png``,
``frames/00001.png``... (``file_name(files, "frame", n=1)``).  A kind whose result's name
and media type depend on its parameters (kind=zoom: mp4, webm, gif...) gives ``result``;
everyone else reads them with ``Kind.result_name(params)`` and ``Kind.result_media_type(params)``.
"""
from __future__ import annotations

from . import image, zoom
from .kind import DEFAULT_KIND, Kind, file_name

__all__ = ["DEFAULT_KIND", "KINDS", "Kind", "file_name", "get_kind"]

KINDS: dict[str, Kind] = {k.name: k for k in (image.KIND, zoom.KIND)}


def get_kind(name: str | None) -> Kind | None:
    return KINDS.get(name or DEFAULT_KIND)
