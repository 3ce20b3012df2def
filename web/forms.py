"""Reading a submission's multipart form: which of Werkzeug's limits a 413 hit.

Werkzeug raises the same bare RequestEntityTooLarge for the body size, the number of parts and
the size of one text field; the client is told which one, and the setting that sets it.
"""
from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from .errors import ApiError, upload_too_large
from .services import services


def form_too_large(exc: RequestEntityTooLarge) -> ApiError:
    """Name the limit Werkzeug really hit: it raises the same bare 413 for all three."""
    settings = services().settings
    if request.content_length is not None and request.content_length > settings.max_content_length:
        return upload_too_large(settings.max_content_length)
    frames, tb = [], exc.__traceback__
    while tb is not None:  # the multipart parser's frames that raised tell which check failed
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in frames:
        owner = frame.f_locals.get("self")
        if getattr(owner, "max_parts", None) is not None and getattr(owner, "_parts_decoded", 0) > owner.max_parts:
            message = (f"the form has more than {settings.max_form_parts} parts (fields and files), "
                       "the DREAMQ_MAX_FORM_PARTS limit")
            return ApiError(413, "too_many_form_parts", message, {"form": message})
    for frame in frames:
        size, owner = frame.f_locals.get("field_size"), frame.f_locals.get("self")
        limit = getattr(owner, "max_form_memory_size", None)
        if frame.f_code.co_name == "receive_data" or (size is not None and limit is not None and size > limit):
            message = (f"a text field is over the {settings.max_form_memory_size} byte limit "
                       "(DREAMQ_MAX_FORM_MEMORY_SIZE); the photo goes in the `image` file field")
            return ApiError(413, "form_field_too_large", message, {"form": message})
    return upload_too_large(settings.max_content_length)
