"""The OpenAPI 3.1 description of the HTTP API, written by hand: it is the contract."""
from __future__ import annotations

from shared.params import MAX_ITERATIONS, MAX_OCTAVES

ERROR_CODES = ["not_found", "no_preview", "invalid_params", "unsupported_image", "image_too_large", "image_too_small",
               "upload_too_large", "unsupported_media_type", "not_succeeded", "job_finished", "unauthorized",
               "rate_limited", "queue_full", "redis_unavailable", "store_unavailable", "method_not_allowed",
               "bad_request", "internal_error"]


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
PNG = {"content": {"image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}}}

# One Server-Sent Event (tools such as schemathesis validate each event of a stream against the schema).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["progress", "end", "error", "timeout"]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"anyOf": [_ref("Job"), _ref("Error"),
                                             {"type": "object", "required": ["message"],
                                              "properties": {"message": {"type": "string"}}}]}},
        "retry": {"type": "integer", "minimum": 0},
    },
}

PARAMS_SCHEMA = {
    "type": "object",
    "description": "Dream parameters; a missing one takes the model's (and preset's) default.",
    "properties": {
        "model": {"type": "string", "enum": ["inception_v3", "vgg16_hed"], "default": "inception_v3"},
        "preset": {"type": ["string", "null"], "description": "A preset of the model, see /api/v1/models."},
        "layers": {"type": "object", "additionalProperties": {"type": "number"},
                   "description": "Layer name -> weight. As a form field: `mixed4=1.0,mixed5=1.5`."},
        "step": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
        "octaves": {"type": "integer", "minimum": 1, "maximum": MAX_OCTAVES, "default": 3},
        "octave_scale": {"type": "number", "minimum": 1, "maximum": 4, "default": 1.4},
        "iterations": {"type": "integer", "minimum": 0, "maximum": MAX_ITERATIONS, "default": 20},
        "max_loss": {"type": ["number", "null"], "exclusiveMinimum": 0,
                     "description": "Stop an octave once the loss exceeds this; `none` (form) / null: never."},
        "max_side": {"type": ["integer", "null"], "minimum": 32, "maximum": 16384,
                     "description": "Downscale the input so that its longer side is at most this."},
        "precision": {"type": "string", "enum": ["fp32", "bf16"], "default": "fp32",
                      "description": "bf16 is faster; the loss and the image stay float32."},
        "tile_size": {"type": ["integer", "null"], "minimum": 256, "maximum": 4096,
                      "description": "Compute the gradient tile by tile (bounded memory)."},
        "jitter": {"type": "integer", "minimum": 0, "maximum": 256, "default": 0,
                   "description": "Random roll of up to this many pixels per step."},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2147483647, "default": 0,
                 "description": "Seed of the random rolls of tiling and jitter."},
    },
}

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
            "metrics": {"type": "object", "properties": {"queue_s": NUM, "run_s": NUM}},
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
                       "ready_workers": {"type": "integer"}},
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
    "Unavailable": {**_err("Queue full (`queue_full`) or Redis/store unreachable."), "headers": RETRY_AFTER},
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
                    "schema": {"type": "object", "required": ["image"], "properties": {
                        "image": {"type": "string", "contentMediaType": "application/octet-stream",
                                  "description": "PNG, JPEG, GIF, WebP, BMP or TIFF; its filename is ignored."},
                        **{k: {"type": "string", "description": f"See Params.{k}."} for k in PARAMS_SCHEMA["properties"]},
                    }},
                }}},
                "responses": {
                    "202": {**_json(_ref("Job"), "Queued."),
                            "headers": {"Location": {"description": "The job's URL.", "schema": {"type": "string"}}}},
                    **SECURED,
                    "413": _err("Upload over the size limit (`upload_too_large`) or too many pixels (`image_too_large`)."),
                    "415": _err("Not a supported image, or not multipart/form-data."),
                    "422": _err("Invalid parameters, missing/duplicate fields, or an image too small."),
                    "429": {**_err("Too many submissions from this address this minute."), "headers": RETRY_AFTER},
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
                    "responses": {"200": {"description": "An event stream; the schema is that of one event.",
                                          "content": {"text/event-stream": {"schema": SSE_EVENT}}},
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
