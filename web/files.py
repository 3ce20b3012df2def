"""Sending a job's files: results, previews, frames and inputs, by name, with ETags and conditional
GETs; a stored file (a video) streamed with byte ranges (206, 416) rather than read whole.
"""
from __future__ import annotations

import hashlib

from flask import Response, request
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.wsgi import FileWrapper

from shared.job import Job
from shared.kinds import KINDS
from shared.params import echo

from .errors import ApiError, not_found
from .services import services

STREAM_CHUNK = 256 * 1024  # bytes per read when a result is streamed from the store


# -- what a kind declares, read with fallbacks (the pages use them too) -----------------

def result_name(kind, params: dict) -> str:
    """The result's name in the job's store folder (a video's depends on its format)."""
    name = getattr(kind, "result_name", None)
    return name(params) if callable(name) else kind.file("result")


def result_media_type(kind, params: dict) -> str:
    media_type = getattr(kind, "result_media_type", None)
    return media_type(params) if callable(media_type) else kind.media_type


def frame_name(kind, n: int) -> str:
    """The store name of frame ``n`` (from 0) of the kind's numbered "frame" series."""
    return kind.file("frame", n)


# -- responses ---------------------------------------------------------------------------

def png_response(data: bytes, *, cache: str, filename: str, mimetype: str = "image/png") -> Response:
    response = Response(data, mimetype=mimetype)
    response.headers["Cache-Control"] = cache
    disposition = "attachment" if request.args.get("download") else "inline"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    response.set_etag(hashlib.sha256(data).hexdigest()[:32])
    return response.make_conditional(request)


def stored_file_response(job: Job, name: str, *, mimetype: str, cache: str, filename: str) -> Response | None:
    """A file of the job's store folder with ETag, conditional GET and byte ranges (206, 416),
    streamed from the store when it can open files (a video is never read into memory whole);
    None when the file is not there."""
    store = services().store
    opener, sizer = getattr(store, "open", None), getattr(store, "size", None)
    if opener is None or sizer is None:  # a store that only reads whole files
        data = store.get(job.files_id, name)
        if data is None:
            return None
        body, size, etag = [data], len(data), hashlib.sha256(data).hexdigest()[:32]
        fh = None
    else:
        try:
            size = sizer(job.files_id, name)  # files_id: a cache hit reads the folder of the job that ran
            fh = opener(job.files_id, name) if size is not None else None
        except FileNotFoundError:
            fh = None
        if fh is None:
            return None
        body = FileWrapper(fh, STREAM_CHUNK)  # seekable: a range is read from its start, not skipped to
        # A result is written once, when the job succeeds: its identity is the job's, its name and size.
        etag = hashlib.sha256(f"{job.id}/{name}/{size}/{job.finished_at!r}".encode()).hexdigest()[:32]
    response = Response(body, mimetype=mimetype, direct_passthrough=True)
    response.content_length = size
    response.headers["Cache-Control"] = cache
    disposition = "attachment" if request.args.get("download") else "inline"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    response.set_etag(etag)
    environ = request.environ
    if "," in request.headers.get("Range", ""):
        # Several ranges: RFC 9110 lets a server answer 200 with the whole file, which every
        # client takes, rather than multipart/byteranges (Werkzeug would answer 416).
        environ = {k: v for k, v in environ.items() if k != "HTTP_RANGE"}
    try:
        return response.make_conditional(environ, accept_ranges=True, complete_length=size)
    except RequestedRangeNotSatisfiable:
        response.close()
        raise ApiError(416, "range_not_satisfiable",
                       f"the range {echo(request.headers.get('Range', ''))} is not within the {size} bytes of the file",
                       headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"}) from None
    except BaseException:
        response.close()
        raise


def input_response(job: Job, role: str) -> Response:
    """An input file of the job (``input``: the photo, ``guide``: the guide image), as the pages show it."""
    kind = KINDS.get(job.kind)
    if kind is None or role not in kind.files:
        raise not_found("file")
    data = services().store.get(job.files_id, kind.file(role))
    if data is None:
        raise not_found("file")
    return png_response(data, cache="private, max-age=86400", filename=f"{role}-{job.id}.png")
