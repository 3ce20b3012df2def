"""The OpenAPI 3.1 description of the HTTP API, written by hand: it is the contract.

Derived from pydantic models: the parameters, from the models that validate them (each kind's
params: shared.params.DreamParams, kind=zoom's ZoomParams) and the model catalog, so that
their bounds have one source; the Job, from the model of its JSON (shared.job.JobView).
Code generators are one of its readers (tests/integration/test_openapi_client.py generates a client
with openapi-python-client and dreams with it), schemathesis another (tests/integration/test_fuzz.py).
"""
from __future__ import annotations

import copy

from shared.job import openapi_schemas, params_components
from shared.kinds import DEFAULT_KIND, KINDS
from shared.models import DEFAULT_MODEL, MODELS
from shared.params import DreamParams
from shared.webhooks import EVENTS as WEBHOOK_EVENTS

ERROR_CODES = ["not_found", "no_preview", "invalid_params", "unsupported_image", "image_too_large", "image_too_small",
               "upload_too_large", "unsupported_media_type", "not_succeeded", "job_finished", "unauthorized",
               "rate_limited", "queue_full", "redis_unavailable", "store_unavailable", "method_not_allowed",
               "bad_request", "internal_error", "too_many_form_parts", "form_field_too_large", "too_many_queued",
               "busy", "no_frame", "range_not_satisfiable", "invalid_idempotency_key", "idempotency_key_reused",
               "idempotency_key_in_use", "image_too_complex", "bad_host"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict:
    return _json(_ref("Error"), description)


def _resp(name: str) -> dict:
    return {"$ref": f"#/components/responses/{name}"}


def _job_route(method: str, operation_id: str, summary: str, responses: dict, *, parameters=(), **more) -> dict:
    """One operation on /api/v1/jobs/{job_id}...: the job id parameter, the `jobs` tag, and the answers
    every such route can give besides its own (401 with tokens, 404, 503)."""
    return {"parameters": [JOB_ID, *parameters],
            method: {"tags": ["jobs"], "operationId": operation_id, "summary": summary, **more,
                     "responses": {"404": _resp("NotFound"), **responses, **SECURED, "503": _resp("Unavailable")}}}


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
NUM = {"type": ["number", "null"]}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "description": "The job's id (a UUID4).",
          "schema": {"type": "string", "format": "uuid"}}
# format: binary is what generators read as "bytes" (a file); contentMediaType is 3.1's own spelling.
PNG = {"content": {"image/png": {"schema": {"type": "string", "format": "binary", "contentMediaType": "image/png"}}}}
# A result: every media type a kind declares (a PNG, a video or an animation).  The default kind's
# first: a generator reads the first media type it knows.
RESULT_TYPES = tuple(dict.fromkeys(t for k in sorted(KINDS.values(), key=lambda k: k.name != DEFAULT_KIND)
                                   for t in k.result_types))
RESULT = {"content": {t: {"schema": {"type": "string", "format": "binary", "contentMediaType": t}}
                      for t in RESULT_TYPES}}

# -- dream parameters, from the pydantic model -------------------------------------

# Words only; every bound, type and default comes from DreamParams.  A Field(description=...)
# in shared/params.py takes precedence over these.
PARAM_DOCS = {
    "model": "A model of /api/v1/models.",
    "preset": "A preset of the model, see /api/v1/models.",
    "layers": "Layer name -> weight in the loss; the model's (or preset's) layers if missing.",
    "octaves": "Scales of the image pyramid, each dreamed on in turn.",
    "octave_scale": "Size ratio between one octave and the next.",
    "iterations": "Gradient ascent steps per octave.",
    "step": "Gradient ascent step, in the model's input units; the model's default if missing.",
    "max_loss": "Stop an octave once the loss exceeds this; null: never. The model's default if missing.",
    "max_side": "Downscale the input so that its longer side is at most this.",
    "precision": "fp32: exact. bf16: the network in bfloat16 (the loss and the image stay float32), faster only "
                 "where the worker's device has native bf16; a worker without it runs fp32 and says so in the "
                 "job's `warnings`. auto: the fastest mode the worker has. `metrics.precision` says what ran.",
    "tile_size": "Compute the gradient tile by tile (bounded memory).",
    "jitter": "Random roll of up to this many pixels per step.",
    "seed": "Seed of the random rolls of tiling and jitter.",
    "guide_layer": "With a `guide` image: the layer whose features the dream is drawn toward; the model's "
                   "default if missing.",
}  # a kind's own parameters are described in its declaration (shared/kinds/), Field(description=...)
# How a multipart form spells what JSON has as an object or null (see shared/params.py).
FORM_LAYERS = {"type": "string", "examples": ["block3_conv3=1.0,block4_conv3=1.5"],
               "description": "Layer name -> weight, as `name=weight` pairs separated by commas "
                              "(a name alone weighs 1.0); the model's (or preset's) layers if missing."}
FORM_NONE = {"max_loss": ["none", "off"]}  # the only null the form can ask for; other nulls are the default


def _params_schemas(params=DreamParams) -> tuple[dict, dict]:
    """(the params schema of a kind, extra component schemas) from its pydantic model, with the model
    enum from the catalog."""
    schema = params.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    schema.pop("title", None)  # the component's name is Params (or the kind's: ZoomParams)
    for name, prop in schema["properties"].items():
        # Generators name classes after titles: pydantic's "Model" would shadow the Model schema.
        prop.pop("title", None)
        if name in PARAM_DOCS:
            prop.setdefault("description", PARAM_DOCS[name])
    # The model field is a str checked against the catalog by a validator: pydantic cannot see the choice.
    schema["properties"]["model"].update(enum=list(MODELS), default=DEFAULT_MODEL)
    if params is DreamParams:
        schema["description"] = (schema.get("description", "") + " In a job, these are the effective values: "
                                 "every missing one filled in from the model and preset.").strip()
    else:
        schema["description"] = ("Params of a job of this kind: those of Params and its own. In a job, the "
                                 "effective values.")
    return schema, defs


def _kind_params() -> dict[str, type]:
    """Component name -> params model of each kind whose params are not DreamParams (ZoomParams...)."""
    return {name: params for name, params in params_components().items() if params is not DreamParams}


def _form_field(name: str, prop: dict) -> dict:
    """The multipart field of one parameter: typed as in JSON, objects and nulls in their form spelling.

    No `default`: a generator would then send it always, and an explicit value overrides the preset's.
    """
    if prop.get("type") == "object":
        return dict(FORM_LAYERS) if name == "layers" else {"type": "string", "description": prop.get("description", "")}
    field = copy.deepcopy(prop)
    # A null is asked for by leaving the field out (it is the default), except where the form has a word.
    branches = [b for b in field.pop("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        field.update(branches[0])
    elif branches:
        field["anyOf"] = branches
    description = field.pop("description", "")
    if name in FORM_NONE:
        field = {"anyOf": [field, {"type": "string", "enum": FORM_NONE[name]}]}
        description = description.replace("null:", f"`{FORM_NONE[name][0]}`:")
    default = field.pop("default", None)
    if default is not None:
        unless = "." if name in ("model", "preset") else ", unless the preset sets it."
        description += f" Left out: {default}{unless}"
    return {**field, "description": description.strip()}


PARAMS_SCHEMA, PARAMS_DEFS = _params_schemas()
KIND_PARAMS_SCHEMAS: dict[str, dict] = {}  # ZoomParams...
for _name, _params in _kind_params().items():
    KIND_PARAMS_SCHEMAS[_name], _defs = _params_schemas(_params)
    PARAMS_DEFS.update(_defs)


def _kind_form_fields() -> dict[str, dict]:
    """The form fields of the parameters only some kinds have, each saying which kinds take it."""
    fields: dict[str, dict] = {}
    owners: dict[str, list[str]] = {}
    for kind in KINDS.values():
        if kind.params is DreamParams:
            continue
        schema = next(KIND_PARAMS_SCHEMAS[n] for n, p in _kind_params().items() if p is kind.params)
        for name, prop in schema["properties"].items():
            if name in PARAMS_SCHEMA["properties"]:
                continue
            owners.setdefault(name, []).append(kind.name)
            fields.setdefault(name, _form_field(name, prop))
    for name, field in fields.items():
        words = field["description"].replace(", unless the preset sets it.", ".")
        field["description"] = (f"kind={' or '.join(owners[name])} only. " + words).strip()
    return fields


def _kind_defaults_words() -> dict[str, str]:
    """Parameter -> the words for the kinds whose default differs from Params' (kind=zoom: 2 octaves)."""
    words: dict[str, list[str]] = {}
    for name, schema in KIND_PARAMS_SCHEMAS.items():
        kind = next(k.name for k in KINDS.values() if k.params is _kind_params()[name])
        for field, prop in schema["properties"].items():
            base = PARAMS_SCHEMA["properties"].get(field)
            if base is not None and "default" in prop and prop["default"] != base.get("default"):
                words.setdefault(field, []).append(f"kind={kind}: {prop['default']}")
    return {field: " (" + "; ".join(w) + ")" for field, w in words.items()}


def _dream_form_fields() -> dict[str, dict]:
    fields = {name: _form_field(name, prop) for name, prop in PARAMS_SCHEMA["properties"].items()}
    for name, words in _kind_defaults_words().items():
        fields[name]["description"] = fields[name]["description"].replace(", unless", words + ", unless", 1)
    return fields


def _result_words() -> str:
    """What the result is for each kind, from the media types it declares."""
    return "; ".join(f"kind={k.name}: " + " or ".join(k.result_types) for k in KINDS.values()) + "."


def _kinds_with_frames() -> str:
    return " or ".join(f"kind={k.name}" for k in KINDS.values() if k.has_frames)


def _kind_words() -> str:
    return "What the job makes: " + "; ".join(f"`{k.name}`, {k.summary}" for k in KINDS.values()) + "."


SUBMIT_FORM = {
    "type": "object", "required": ["image"], "additionalProperties": False,
    "description": "The photo, an optional guide image, and as form fields the kind and its parameters; a "
                   "missing (or blank) field takes the model's (and preset's) default.",
    "properties": {
        "image": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream",
                  "description": "PNG, JPEG, GIF, WebP, BMP or TIFF, sent as a file part (with a filename; "
                                 "its name is ignored)."},
        "guide": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream",
                  "description": "Optional: a guide image (same formats and limits as `image`); the dream is "
                                 "drawn toward its features at `guide_layer`. Errors name `guide`."},
        "kind": {"type": "string", "enum": list(KINDS), "default": DEFAULT_KIND, "description": _kind_words()},
        **_dream_form_fields(),
        **_kind_form_fields(),
        "cache": {"type": "string", "enum": ["true", "false"], "default": "true",
                  "description": "Not a parameter: `false` always runs the job. By default a job identical to a "
                                 "finished one still kept (same kind, parameters, input files and model weights) "
                                 "is answered at once from its result: `succeeded`, `metrics.cached` true."},
        "priority": {"type": "string", "enum": ["interactive", "batch"], "default": "interactive",
                     "description": "Not a parameter: which of your own queued jobs runs first. Every "
                                    "`interactive` job of yours before any `batch` one; it never moves your jobs "
                                    "ahead of another owner's (workers are shared fairly between owners)."},
        "webhook": {"type": "string", "format": "uri", "maxLength": 2048,
                    "description": "Not a parameter: an http(s) URL that the job's events are POSTed to (body: the "
                                   "Job; signed with Standard Webhooks: see `webhooks` in this document). Its host "
                                   "must resolve to public addresses only: a loopback, private, link-local, "
                                   "multicast or reserved one is a 422 naming `webhook` (unless the server sets "
                                   "DREAMQ_WEBHOOK_ALLOW_PRIVATE). A 422 too when the server has no "
                                   "DREAMQ_WEBHOOK_SECRET."},
        # No "default": a generated client would send it, and a filter without a webhook is a 422.
        "webhook_events_filter": {"type": "string",
                                  "pattern": "^ *(start|progress|output|completed)( *, *(start|progress|output|completed))* *$",
                                  "description": "Comma-separated events to send, of `start`, `progress` (at most "
                                                 "one per 5 s), `output` (a new preview or frame, as often) and "
                                                 "`completed` (succeeded, failed or canceled). Needs `webhook`; without it, `completed`."},
    },
}
if not any(k.takes_guide for k in KINDS.values()):  # until a kind takes one
    del SUBMIT_FORM["properties"]["guide"]

# -- the event stream --------------------------------------------------------------

# One Server-Sent Event as SSE-aware tools read it (schemathesis validates each event against it).
SSE_EVENT = {
    "type": "object", "required": ["event", "data"],
    "description": "One event. `progress` (on each change) and `end` (the final state) carry the Job; `error` "
                   "an Error (the job expired, or the queue is unreachable); `timeout` a message (reconnect for "
                   "more).",
    "properties": {
        "event": {"type": "string", "enum": ["progress", "end", "error", "timeout"]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"anyOf": [_ref("Job"), _ref("Error"),
                                             {"type": "object", "required": ["message"],
                                              "properties": {"message": {"type": "string"}}}]}},
        "retry": {"type": "integer", "minimum": 0},
    },
}
# The body of the stream.  OpenAPI 3.1 has no per-event schema (3.2's itemSchema), and its readers
# differ: a plain HTTP client (and a generated one) reads the whole body as text once the stream
# ends, so a string; schemathesis reads 3.1's schema as that of each event.  anyOf holds both, so a
# generator returns the text instead of parsing it as JSON, and each event is still checked.
SSE_BODY = {
    "anyOf": [{"type": "string", "description": "The stream as text, as a plain HTTP client reads it."},
              _ref("ServerSentEvent")],
    "description": "`text/event-stream`: a `retry` hint, then `event:`/`data:` blocks, data being one line of "
                   "JSON; lines starting with `:` are keep-alives.",
}
SSE_EXAMPLE = ('retry: 2000\n\nevent: progress\ndata: {"id": "…", "status": "running", …}\n\n'
               'event: end\ndata: {"id": "…", "status": "succeeded", …}\n\n')

JOB_SCHEMAS = openapi_schemas(WEBHOOK_EVENTS)

SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "examples": ERROR_CODES},
                "message": {"type": "string", "description": "What went wrong, in words."},
                "fields": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "Each invalid field (`image` for the upload) and why."},
            },
        }},
    },
    "Params": PARAMS_SCHEMA,
    **KIND_PARAMS_SCHEMAS,
    **PARAMS_DEFS,
    "ServerSentEvent": SSE_EVENT,
    **JOB_SCHEMAS,  # Job and its parts: from the model (shared/job.py JobView)
    "JobList": {"type": "object", "required": ["jobs", "next_cursor"],
                "properties": {"jobs": {"type": "array", "items": _ref("Job")},
                               "next_cursor": {"type": ["string", "null"],
                                               "description": "Pass as `cursor` for the next (older) page."}}},
    "Model": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "title": {"type": "string"}, "default": {"type": "boolean"},
                       "layers": {"type": "array", "items": {"type": "string"}},
                       "default_layers": {"type": "object", "additionalProperties": {"type": "number"}},
                       "step": {"type": "number"}, "max_loss": NUM, "min_side": {"type": "integer"},
                       "presets": {"type": "object", "additionalProperties": {"type": "object"}},
                       "loaded": {"type": "boolean", "description": "A ready worker has it loaded."},
                       "ready_workers": {"type": "integer"},
                       "bf16_workers": {"type": "integer",
                                        "description": "Ready workers that run precision=bf16 in bf16."}},
    },
    "Readiness": {"type": "object", "required": ["status"],
                  "properties": {"status": {"type": "string", "enum": ["ready", "unready"]},
                                 "reason": {"type": "string"}, "workers": {"type": "integer"},
                                 "ready_workers": {"type": "integer"}}},
}

RESPONSES = {
    "NotFound": _err("No such job (ids that are not UUIDs included)."),
    "Unauthorized": {**_err("A bearer token is required (when the server has tokens)."),
                     "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    "Unavailable": {**_err("Queue full (`queue_full`), too many large images being decoded (`busy`), or "
                           "Redis/store unreachable."), "headers": RETRY_AFTER},
    "Invalid": _err("Invalid parameters; `fields` names each one."),
}

SECURED = {"401": _resp("Unauthorized")}

# POST /api/v1/jobs for integrators (web/integrations.py): idempotent retries, and an answer that waits.
SUBMIT_HEADERS = [
    {"name": "Idempotency-Key", "in": "header", "required": False,
     "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
     "description": "Makes the submit safe to retry (IETF httpapi idempotency-key draft): the first request with "
                    "a key creates the job; a retry with the same key and the same request (the same fields and "
                    "file bytes; the multipart boundary and filenames do not count) answers with that job as it is "
                    "now, with `Idempotent-Replayed: true`, and creates none. Keys are remembered as long as the job (at least 24 hours), "
                    "per token (per client address on a server without tokens). The same key with a different "
                    "request: 422 `idempotency_key_reused`; while the first request is still being processed: "
                    "409 `idempotency_key_in_use`. A refused request does not use up its key. 1 to 255 "
                    "printable ASCII characters (a UUID, say), optionally in double quotes; else 400 "
                    "`invalid_idempotency_key`."},
    {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "`wait` or `wait=N` (RFC 7240): hold the answer until the job finishes or N seconds pass "
                    "(the default, and the cap, is 60 s), then answer 201 with the finished job, or 202 with the "
                    "job as it is; `Preference-Applied: wait=N` says the wait that was used. Other preferences, "
                    "and a `wait` that is not a whole number, are ignored."},
]
PREFERENCE_APPLIED = {"Preference-Applied": {"description": "`wait=N` when `Prefer: wait` was honoured.",
                                             "schema": {"type": "string"}}}
REPLAYED = {"Idempotent-Replayed": {"description": "`true` when this is the job an earlier request with the same "
                                                  "`Idempotency-Key` made.", "schema": {"type": "string"}}}
LOCATION = {"Location": {"description": "The job's URL.", "schema": {"type": "string"}}}

WEBHOOK_WORDS = ("Signed with Standard Webhooks (verify with `standardwebhooks.Webhook(secret).verify(body, "
                 "headers)`; the secret is the server's DREAMQ_WEBHOOK_SECRET). Sent from a delivery process, "
                 "5 s to connect and 5 s per read, redirects not followed. A network error, 408, 429 or 5xx is "
                 "tried again with exponential backoff and jitter: 6 attempts over about an hour. Every attempt "
                 "is recorded in the job's `webhook`.")

SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "dreamq", "version": "1.0.0",
             "description": "Deep Dream as a service: submit a photo, poll the job, fetch the dream. "
                            "Errors are `{\"error\": {code, message, fields?}}`."},
    "servers": [{"url": "/"}],
    "security": [{}, {"bearer": []}],
    "tags": [{"name": "jobs"}, {"name": "models"}, {"name": "operations"}],
    # OpenAPI 3.1: the requests dreamq makes to a job's `webhook`.
    "webhooks": {event: {"post": {
        "operationId": f"webhook{event.capitalize()}", "tags": ["jobs"],
        "summary": f"The job's `{event}` event, POSTed to its `webhook` URL.",
        "description": WEBHOOK_WORDS,
        "parameters": [
            {"name": "webhook-id", "in": "header", "required": True, "schema": {"type": "string"},
             "description": "The event's id: the same on each attempt of it (drop repeats by it)."},
            {"name": "webhook-timestamp", "in": "header", "required": True, "schema": {"type": "string"},
             "description": "Unix seconds of this attempt."},
            {"name": "webhook-signature", "in": "header", "required": True, "schema": {"type": "string"},
             "description": "`v1,` + base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`."},
            {"name": "Dreamq-Event", "in": "header", "required": True,
             "schema": {"type": "string", "enum": [event]}, "description": "Which event this is."}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Job")}}},
        "responses": {"200": {"description": "Any 2xx: delivered."},
                      "429": {"description": "Tried again later; as any 5xx, 408 or network error."},
                      "410": {"description": "Any other answer (redirects too): given up at once."}}}}
        for event in WEBHOOK_EVENTS},
    "paths": {
        "/api/v1/jobs": {
            "post": {
                "tags": ["jobs"], "operationId": "createJob", "summary": "Submit a photo to dream on.",
                "parameters": SUBMIT_HEADERS,
                "requestBody": {"required": True, "content": {"multipart/form-data": {
                    "schema": SUBMIT_FORM}}},
                "responses": {
                    "201": {**_json(_ref("Job"), "With `Prefer: wait`: the job finished (succeeded, failed or "
                                                 "canceled) within the wait."),
                            "headers": {**LOCATION, **PREFERENCE_APPLIED, **REPLAYED}},
                    "202": {**_json(_ref("Job"), "Queued (or, with `Prefer: wait`, not finished within the wait; "
                                                 "with a replayed `Idempotency-Key`, the job as it is now)."),
                            "headers": {**LOCATION, **PREFERENCE_APPLIED, **REPLAYED}},
                    "400": _err("An invalid `Idempotency-Key` header (`invalid_idempotency_key`), or a malformed "
                                "request."),
                    **SECURED,
                    "409": {**_err("A request with this `Idempotency-Key` is still being processed "
                                   "(`idempotency_key_in_use`)."), "headers": RETRY_AFTER},
                    "413": _err("Upload over the size limit (`upload_too_large`), too many form parts "
                                "(`too_many_form_parts`), a text field over its limit (`form_field_too_large`) "
                                "or too many pixels (`image_too_large`)."),
                    "415": _err("Not a supported image, or not multipart/form-data."),
                    "422": _err("Invalid parameters, missing/duplicate fields, an image too small, or an "
                                "`Idempotency-Key` already used for a different request (`idempotency_key_reused`)."),
                    "429": {**_err("Too many submissions from this address this minute (`rate_limited`) or too "
                                   "many of its jobs queued (`too_many_queued`)."), "headers": RETRY_AFTER},
                    "503": _resp("Unavailable"),
                },
            },
            "get": {
                "tags": ["jobs"], "operationId": "listJobs", "summary": "Jobs, newest first.",
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100,
                                                                "default": 20}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"},
                     "description": "`next_cursor` of the previous page."},
                ],
                "responses": {"200": _json(_ref("JobList"), "A page of jobs."), **SECURED,
                              "422": _resp("Invalid"), "503": _resp("Unavailable")},
            },
        },
        "/api/v1/jobs/{job_id}": _job_route("get", "getJob", "A job's state and progress.",
                                            {"200": _json(_ref("Job"), "The job.")}),
        "/api/v1/jobs/{job_id}/result": {
            "parameters": [JOB_ID, {"name": "download", "in": "query", "schema": {"type": "string"},
                                    "description": "Any value: sent as an attachment."}],
            "get": {"tags": ["jobs"], "operationId": "getResult", "summary": "The dream, once succeeded.",
                    "description": _result_words() + " "
                                   "Byte ranges (`Range: bytes=...`) are served, as video players ask for them.",
                    "parameters": [{"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
                                    "description": "One byte range, e.g. `bytes=0-99` or `bytes=-500`.",
                                    "examples": {"first100": {"value": "bytes=0-99"}}}],
                    "responses": {"200": {"description": "The dream.", **RESULT,
                                          "headers": {"Accept-Ranges": {"schema": {"type": "string"}}}},
                                  "206": {"description": "The asked byte range of the dream.", **RESULT,
                                          "headers": {"Content-Range": {
                                              "description": "`bytes start-end/length`.", "required": True,
                                              "schema": {"type": "string"}}}},
                                  **SECURED,
                                  "404": _resp("NotFound"), "409": _err("The job has not succeeded (yet)."),
                                  "416": {**_err("The range is malformed or outside the file "
                                                 "(`range_not_satisfiable`)."),
                                          "headers": {"Content-Range": {
                                              "description": "`bytes */length`.", "schema": {"type": "string"}}}},
                                  "503": _resp("Unavailable")}},
        },
        "/api/v1/jobs/{job_id}/frames/{n}": {
            "parameters": [JOB_ID, {"name": "n", "in": "path", "required": True,
                                    "description": "The frame's number, from 0.",
                                    "schema": {"type": "integer", "minimum": 0}}],
            "get": {"tags": ["jobs"], "operationId": "getFrame",
                    "summary": f"A finished frame of a video ({_kinds_with_frames()}), while it runs and after.",
                    "responses": {"200": {"description": "The frame.", **PNG}, **SECURED,
                                  "404": _err("No such job, or no such frame (`no_frame`: not a video, out of "
                                              "range, or not finished)."),
                                  "503": _resp("Unavailable")}},
        },
        "/api/v1/jobs/{job_id}/preview": _job_route(
            "get", "getPreview", "The latest intermediate image (after each octave).",
            {"200": {"description": "The latest preview.", **PNG},
             "404": _err("No such job, or no preview yet (`no_preview`).")}),
        "/api/v1/jobs/{job_id}/cancel": _job_route(
            "post", "cancelJob", "Cancel a queued or running job (idempotent).",
            {"202": _json(_ref("Job"), "Canceled, or the worker was asked to stop."),
             "409": _err("The job already succeeded or failed.")}),
        "/api/v1/jobs/{job_id}/events": {
            "parameters": [JOB_ID],
            "get": {"tags": ["jobs"], "operationId": "jobEvents",
                    "summary": "Server-Sent Events: `progress` on each change, `end` with the final state.",
                    "description": "Each event's data is the Job JSON. The stream ends after `end`, or with a "
                                   "`timeout` event after a server-set time (reconnect), or an `error` event.",
                    "responses": {"200": {"description": "An event stream. It ends after `end`, `timeout` or "
                                                         "`error`: a client that reads the whole body gets it then.",
                                          "content": {"text/event-stream": {"schema": SSE_BODY,
                                                                            "example": SSE_EXAMPLE}}},
                                  **SECURED, "404": _resp("NotFound"), "503": _resp("Unavailable")}},
        },
        "/api/v1/models": {
            "get": {"tags": ["models"], "operationId": "listModels",
                    "summary": "Models, layers, defaults, presets, and whether a ready worker has them.",
                    "responses": {"200": _json({"type": "object", "properties": {
                        "models": {"type": "array", "items": _ref("Model")}}}, "The catalog."),
                        **SECURED, "503": _resp("Unavailable")}},
        },
        "/healthz": {"get": {"tags": ["operations"], "operationId": "healthz", "security": [],
                             "summary": "The process is up.",
                             "responses": {"200": _json({"type": "object"}, "Up.")}}},
        "/readyz": {"get": {"tags": ["operations"], "operationId": "readyz", "security": [],
                            "summary": "Redis reachable and at least one ready worker.",
                            "responses": {"200": _json(_ref("Readiness"), "Ready."),
                                          "503": _json(_ref("Readiness"), "Not ready; `reason` says why.")}}},
        "/metrics": {"get": {"tags": ["operations"], "operationId": "metrics", "security": [],
                             "summary": "Prometheus metrics.",
                             "responses": {"200": {"description": "Prometheus text format.",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/api/openapi.json": {"get": {"tags": ["operations"], "operationId": "openapi", "security": [],
                                      "summary": "This document.",
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")}}},
    },
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "Required when the server sets DREAMQ_API_TOKENS."}},
    },
}
