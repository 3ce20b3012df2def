"""Reading a submission's multipart form into what it asks for, and its 415, 413 and 422 answers.

The form gives the photo (``image``), an optional guide image (``guide``), the kind and its
parameters, and the request options: ``cache`` and the webhook.  Every problem of every field is
named in one 422.  Werkzeug raises the same bare RequestEntityTooLarge for the body size, the
number of parts and the size of one text field; the client is told which one, and the setting that
sets it.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import request
from pydantic import BaseModel
from werkzeug.exceptions import RequestEntityTooLarge

from shared import webhooks
from shared.job import Priority
from shared.kinds import DEFAULT_KIND, KINDS, Kind
from shared.params import DreamParams, ParamsError

from .errors import ApiError, upload_too_large
from .services import services

# The upload's file fields: the photo, and an optional guide image (kinds whose files have a "guide" role).
FILE_FIELDS = ("image", "guide")
# Every parameter of every kind, DreamParams' first: the form's fields (the pages show them again on an error).
PARAM_FIELDS = tuple(dict.fromkeys([*DreamParams.model_fields,
                                    *(name for k in KINDS.values() for name in k.params.model_fields)]))
FORM_FIELDS = ("kind", *PARAM_FIELDS)


@dataclass(frozen=True)
class SubmitForm:
    """A valid submission, but for its files: what to run, and the request's options."""
    kind: Kind
    params: BaseModel  # the kind's parameters, DreamParams or a subclass
    use_cache: bool  # the `cache` option (shared/cache.py)
    webhook: dict | None  # {"url", "events_filter"}: where the job's events go
    priority: Priority = Priority.INTERACTIVE  # within the owner's share (shared/jobs.py, "Fair share")


def check_multipart() -> None:
    """415 for anything but multipart/form-data (before the body is read)."""
    if request.mimetype != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       "send multipart/form-data: the photo as an `image` file field, parameters as form fields"
                       + (" (JSON bodies are not accepted)" if request.is_json else ""))


def read_form() -> tuple[SubmitForm, bytes, bytes | None]:
    """The form, the photo's bytes and the guide's (None: no guide); one 422 naming every bad field."""
    try:
        form, files = request.form, request.files
    except RequestEntityTooLarge as exc:
        raise form_too_large(exc) from None

    fields: dict[str, str] = {}
    for key in set(form) | set(files):
        if len(form.getlist(key)) + len(files.getlist(key)) > 1:
            fields[key] = "given more than once"
    for key in FILE_FIELDS:
        if key in form and key not in fields:
            fields[key] = "must be a file upload, not a text field"
    for key in files:
        if key not in FILE_FIELDS:
            fields.setdefault(key, "unknown file field; the photo goes in `image` (and a guide image in `guide`)")
    # Blank form fields mean "the default" (an untouched input of the HTML form).
    raw = {k: v for k, v in form.items() if k not in fields and k not in FILE_FIELDS and v.strip() != ""}
    use_cache = True  # `cache`: a request option, never a dream parameter (shared/cache.py)
    if "cache" in raw:
        flag = raw.pop("cache").strip().lower()
        if flag in ("false", "0", "no", "off"):
            use_cache = False
        elif flag not in ("true", "1", "yes", "on"):
            fields["cache"] = "true or false"
    webhook = submitted_webhook(raw, fields)  # request options too: where the job's events go
    priority = Priority.INTERACTIVE  # and which of the owner's own jobs goes first
    if "priority" in raw:
        try:
            priority = Priority(raw.pop("priority").strip().lower())
        except ValueError:
            fields["priority"] = " or ".join(p.value for p in Priority)
    kind = KINDS.get(raw.pop("kind", DEFAULT_KIND))
    if kind is None:
        fields["kind"] = f"one of {', '.join(KINDS)}"
        kind = KINDS[DEFAULT_KIND]  # to name the other fields' problems too
    params = None
    try:
        params = kind.parse(raw)
    except ParamsError as exc:
        fields.update({k: v for k, v in exc.fields.items() if k not in fields})
    upload = files.get("image") if "image" not in fields else None
    data = upload.read() if upload is not None else b""
    # A browser sends an empty, nameless part when no file was chosen: that is a missing image
    # (and, for the optional guide, no guide).
    if "image" not in fields and not data and not (upload is not None and upload.filename):
        fields["image"] = "required: attach the photo as a file field named `image`"
    guide_upload = files.get("guide") if "guide" not in fields else None
    guide = guide_upload.read() if guide_upload is not None else b""
    has_guide = bool(guide) or bool(guide_upload is not None and guide_upload.filename)
    if has_guide and not kind.takes_guide:
        fields["guide"] = f"a {kind.name} job takes no guide image"
    if "guide_layer" in raw and not has_guide and "guide" not in fields and "guide_layer" not in fields:
        fields["guide_layer"] = "given without a guide image: attach one as a file field named `guide`"
    if fields or params is None:
        raise ApiError(422, "invalid_params", "invalid request: " + "; ".join(f"{k}: {v}" for k, v in fields.items()),
                       fields)
    # The filenames are ignored: nothing a client names reaches the file system.
    return SubmitForm(kind, params, use_cache, webhook, priority), data, guide if has_guide else None


def submitted_webhook(raw: dict[str, str], fields: dict[str, str]) -> dict | None:
    """Pop ``webhook`` and ``webhook_events_filter`` from the form: ``{"url", "events_filter"}``, or None.

    The host is resolved here (and again at each delivery): a URL that reaches a loopback,
    private or link-local address is a 422 now, not a silent failure later."""
    url, events = raw.pop("webhook", None), raw.pop("webhook_events_filter", None)
    if url is None:
        if events is not None and "webhook_events_filter" not in fields:
            fields["webhook_events_filter"] = "given without a `webhook` URL"
        return None
    svc = services()
    try:
        events = webhooks.parse_events(events)
    except webhooks.WebhookRefused as exc:
        fields.setdefault("webhook_events_filter", str(exc))
    if svc.settings.webhook_secret is None:
        fields.setdefault("webhook", "this server does not send webhooks: DREAMQ_WEBHOOK_SECRET, the key that "
                                     "signs them, is not set")
        return None
    try:
        webhooks.check_url(url.strip(), allow_private=svc.settings.webhook_allow_private, resolve=svc.resolver)
    except webhooks.WebhookRefused as exc:
        fields.setdefault("webhook", str(exc))
        return None
    return {"url": url.strip(), "events_filter": events} if "webhook_events_filter" not in fields else None

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
