"""The OpenAPI 3.1 description of the HTTP API, written by hand: it is the contract.

Only the dream parameters are derived: from the pydantic model that validates them
(shared.params.DreamParams) and the model catalog, so that their bounds have one source.
Code generators are one of its readers (tests/test_openapi_client.py generates a client
with openapi-python-client and dreams with it), schemathesis another (tests/test_fuzz.py).
"""
from __future__ import annotations

import copy

from shared.models import DEFAULT_MODEL, MODELS
from shared.params import DreamParams

ERROR_CODES = ["not_found", "no_preview", "invalid_params", "unsupported_image", "image_too_large", "image_too_small",
               "upload_too_large", "unsupported_media_type", "not_succeeded", "job_finished", "unauthorized",
               "rate_limited", "queue_full", "redis_unavailable", "store_unavailable", "method_not_allowed",
               "bad_request", "internal_error", "too_many_form_parts", "form_field_too_large", "too_many_queued",
               "busy"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict:
    return _json(_ref("Error"), description)


def _resp(name: str) -> dict:
    return {"$ref": f"#/components/responses/{name}"}


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
NUM = {"type": ["number", "null"]}
INT = {"type": ["integer", "null"]}
TIME = {"type": ["string", "null"], "format": "date-time"}
URL = {"type": ["string", "null"]}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "description": "The job's id (a UUID4).",
          "schema": {"type": "string", "format": "uuid"}}
# format: binary is what generators read as "bytes" (a file); contentMediaType is 3.1's own spelling.
PNG = {"content": {"image/png": {"schema": {"type": "string", "format": "binary", "contentMediaType": "image/png"}}}}

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
}
# How a multipart form spells what JSON has as an object or null (see shared/params.py).
FORM_LAYERS = {"type": "string", "examples": ["block3_conv3=1.0,block4_conv3=1.5"],
               "description": "Layer name -> weight, as `name=weight` pairs separated by commas "
                              "(a name alone weighs 1.0); the model's (or preset's) layers if missing."}
FORM_NONE = {"max_loss": ["none", "off"]}  # the only null the form can ask for; other nulls are the default


def _params_schemas() -> tuple[dict, dict]:
    """(the Params schema, extra component schemas) from DreamParams, with the model enum from the catalog."""
    schema = DreamParams.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    schema.pop("title", None)  # the component's name is Params
    for name, prop in schema["properties"].items():
        # Generators name classes after titles: pydantic's "Model" would shadow the Model schema.
        prop.pop("title", None)
        if name in PARAM_DOCS:
            prop.setdefault("description", PARAM_DOCS[name])
    # The model field is a str checked against the catalog by a validator: pydantic cannot see the choice.
    schema["properties"]["model"].update(enum=list(MODELS), default=DEFAULT_MODEL)
    schema["description"] = (schema.get("description", "") + " In a job, these are the effective values: "
                             "every missing one filled in from the model and preset.").strip()
    return schema, defs


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
SUBMIT_FORM = {
    "type": "object", "required": ["image"], "additionalProperties": False,
    "description": "The photo and, as form fields, any Params; a missing (or blank) field takes the model's "
                   "(and preset's) default.",
    "properties": {
        "image": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream",
                  "description": "PNG, JPEG, GIF, WebP, BMP or TIFF, sent as a file part (with a filename; "
                                 "its name is ignored)."},
        **{name: _form_field(name, prop) for name, prop in PARAMS_SCHEMA["properties"].items()},
    },
}

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
    **PARAMS_DEFS,
    "ServerSentEvent": SSE_EVENT,
    "Progress": {
        "type": "object",
        "properties": {"fraction": {"type": "number", "minimum": 0, "maximum": 1},
                       "octave": INT | {"description": "Current octave, from 0."}, "octaves": INT,
                       "step": INT | {"description": "Current step of the octave, from 0."}, "steps": INT,
                       "loss": NUM, "eta_s": NUM},
    },
    "Job": {
        "type": "object",
        "required": ["id", "status", "progress", "params", "created_at", "error", "links"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "canceled"]},
            "progress": _ref("Progress"),
            "params": _ref("Params"),
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": TIME, "finished_at": TIME,
            "attempts": {"type": "integer", "description": "How many times a worker started it."},
            "worker": {"type": ["string", "null"]},
            "queue_position": INT | {"description": "1 = next; null unless queued."},
            "error": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["code", "message"],
                                                   "properties": {"code": {"type": "string"},
                                                                  "message": {"type": "string"}}}]},
            "warnings": {"type": "array", "items": {"type": "string"},
                         "description": "What ran differently from what was asked, and why."},
            "metrics": {"type": "object", "properties": {
                "queue_s": NUM, "run_s": NUM, "dream_s": NUM | {"description": "The engine's share of run_s."},
                "precision": {"type": "string", "description": "The precision that really ran."}}},
            "links": {"type": "object", "description": "result and preview are null until they exist.",
                      "properties": {"self": {"type": "string"}, "result": URL, "preview": URL,
                                     "cancel": {"type": "string"}, "events": {"type": "string"}}},
        },
    },
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

SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "dreamq", "version": "1.0.0",
             "description": "Deep Dream as a service: submit a photo, poll the job, fetch the dream. "
                            "Errors are `{\"error\": {code, message, fields?}}`."},
    "servers": [{"url": "/"}],
    "security": [{}, {"bearer": []}],
    "tags": [{"name": "jobs"}, {"name": "models"}, {"name": "operations"}],
    "paths": {
        "/api/v1/jobs": {
            "post": {
                "tags": ["jobs"], "operationId": "createJob", "summary": "Submit a photo to dream on.",
                "requestBody": {"required": True, "content": {"multipart/form-data": {
                    "schema": SUBMIT_FORM}}},
                "responses": {
                    "202": {**_json(_ref("Job"), "Queued."),
                            "headers": {"Location": {"description": "The job's URL.", "schema": {"type": "string"}}}},
                    **SECURED,
                    "413": _err("Upload over the size limit (`upload_too_large`), too many form parts "
                                "(`too_many_form_parts`), a text field over its limit (`form_field_too_large`) "
                                "or too many pixels (`image_too_large`)."),
                    "415": _err("Not a supported image, or not multipart/form-data."),
                    "422": _err("Invalid parameters, missing/duplicate fields, or an image too small."),
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
        "/api/v1/jobs/{job_id}": {
            "parameters": [JOB_ID],
            "get": {"tags": ["jobs"], "operationId": "getJob", "summary": "A job's state and progress.",
                    "responses": {"200": _json(_ref("Job"), "The job."), **SECURED, "404": _resp("NotFound"),
                                  "503": _resp("Unavailable")}},
        },
        "/api/v1/jobs/{job_id}/result": {
            "parameters": [JOB_ID, {"name": "download", "in": "query", "schema": {"type": "string"},
                                    "description": "Any value: sent as an attachment."}],
            "get": {"tags": ["jobs"], "operationId": "getResult", "summary": "The dream, once succeeded.",
                    "responses": {"200": {"description": "The dream.", **PNG}, **SECURED,
                                  "404": _resp("NotFound"), "409": _err("The job has not succeeded (yet)."),
                                  "503": _resp("Unavailable")}},
        },
        "/api/v1/jobs/{job_id}/preview": {
            "parameters": [JOB_ID],
            "get": {"tags": ["jobs"], "operationId": "getPreview",
                    "summary": "The latest intermediate image (after each octave).",
                    "responses": {"200": {"description": "The latest preview.", **PNG}, **SECURED,
                                  "404": _err("No such job, or no preview yet (`no_preview`)."),
                                  "503": _resp("Unavailable")}},
        },
        "/api/v1/jobs/{job_id}/cancel": {
            "parameters": [JOB_ID],
            "post": {"tags": ["jobs"], "operationId": "cancelJob",
                     "summary": "Cancel a queued or running job (idempotent).",
                     "responses": {"202": _json(_ref("Job"), "Canceled, or the worker was asked to stop."),
                                   **SECURED, "404": _resp("NotFound"),
                                   "409": _err("The job already succeeded or failed."),
                                   "503": _resp("Unavailable")}},
        },
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
