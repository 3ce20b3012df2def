"""One Job model (shared/job.py): the API JSON, the OpenAPI schema and the Redis record all derive from it.

``job_json`` must write what the hand-built JSON wrote before the model, byte for byte (the key
order too): ``_frozen_job_json`` below is that code, kept as it was.
"""
from __future__ import annotations

import json
import time

import pytest

from shared.job import (
    CANCELED,
    FAILED,
    FINISHED,
    JSON_FIELDS,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Job,
    JobView,
    Status,
    dumps,
    job_json,
    openapi_schemas,
)
from shared.kinds import get_kind
from shared.webhooks import EVENTS
from web.openapi import SPEC

# -- the JSON as it was built by hand before the model (frozen; do not "fix") --------

def _frozen_iso(ts):
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _frozen_webhook_json(job):
    if not job.webhook:
        return None
    d = job.webhook_delivery or {}
    return {"url": job.webhook.get("url"), "events_filter": job.webhook.get("events_filter", []),
            "status": d.get("status", "pending"), "attempts": d.get("attempts", 0),
            "delivered": d.get("delivered", 0), "last_event": d.get("last_event"),
            "last_status": d.get("last_status"), "last_error": d.get("last_error"),
            "last_attempt_at": _frozen_iso(d.get("last_attempt_at")),
            "history": d["history"] if isinstance(d.get("history"), list) else []}


def _frozen_public(job):
    kind = get_kind(job.kind)
    progress = kind.progress(job.params) if kind else {"fraction": 0.0, "eta_s": None}
    progress.update(job.progress)
    if job.status == "succeeded":
        progress["fraction"] = 1.0
        progress["eta_s"] = 0.0
    return {
        "id": job.id, "kind": job.kind, "status": job.status, "progress": progress, "params": job.params,
        "created_at": _frozen_iso(job.created_at), "started_at": _frozen_iso(job.started_at),
        "finished_at": _frozen_iso(job.finished_at), "attempts": job.attempts, "worker": job.worker,
        "error": job.error, "warnings": job.warnings,
        "metrics": {"queue_s": job.metrics.get("queue_s"), "run_s": job.metrics.get("run_s"), **job.metrics},
        "webhook": _frozen_webhook_json(job),
        "priority": str(job.priority),  # issue 22: which of its owner's jobs goes first
    }


def _frozen_frames_done(job):
    p = job.progress or {}
    done = p.get("frames_done")
    if done is None and p.get("frame") is not None:
        done = p["frame"] + 1
    if job.status == "succeeded":
        done = job.params.get("frames", done)
    try:
        return max(0, int(done or 0))
    except (TypeError, ValueError):
        return 0


def _frozen_job_json(job, queue_position=None):
    data = _frozen_public(job)
    data["queue_position"] = queue_position if job.status == "queued" else None
    base = f"/api/v1/jobs/{job.id}"
    data["links"] = {"self": base, "result": f"{base}/result" if job.status == "succeeded" else None,
                     "preview": f"{base}/preview" if job.preview_url else None,
                     "cancel": f"{base}/cancel", "events": f"{base}/events"}
    kind = get_kind(job.kind)
    if kind is not None and "frame" in kind.files:
        done = _frozen_frames_done(job)
        data["links"]["frame"] = f"{base}/frames/{done - 1}" if done else None
    return data


# -- the cases -----------------------------------------------------------------------

def _cases():
    """(name, job keyword arguments, queue_position): every shape the API shows."""
    jid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    t = 1700000000.123456
    params = {"model": "inception_v3", "octaves": 3, "iterations": 10, "step": 0.01}
    zoom = {**params, "frames": 12, "zoom": 1.05, "rotate": 0.0, "fps": 12, "format": "mp4"}
    hist = [{"event": "start", "attempt": 1, "status": 500, "error": None, "at": t + 1.5},
            {"status": None, "at": t + 2.25, "error": "timeout", "attempt": 2, "event": "start"}]
    return [
        ("queued", {"id": jid, "status": "queued", "params": params, "created_at": t, "enqueued_at": t}, 3),
        ("queued_no_position", {"id": jid, "status": "queued", "params": {}, "created_at": t}, None),
        ("running", {"id": jid, "status": "running", "params": params, "created_at": t, "enqueued_at": t, "started_at": t + 2,
                         "attempts": 1, "worker": "w1@host", "warnings": ["bf16 not native: ran fp32"], "preview_url": "s3://p",
                         "progress": {"octave": 1, "step": 5, "loss": 12.5, "fraction": 0.3, "eta_s": 4.2,
                                   "note": "extra"}}, 7),
        ("running_int_numbers", {"id": jid, "status": "running", "params": params, "created_at": t, "started_at": t + 0.9999,
                                     "progress": {"fraction": 0, "loss": 3, "eta_s": 10}}, None),
        ("zoom_running_frame", {"id": jid, "status": "running", "kind": "zoom", "params": zoom, "created_at": t,
                                    "started_at": t + 1, "progress": {"frame": 3, "fraction": 0.25}}, None),
        ("zoom_queued", {"id": jid, "status": "queued", "kind": "zoom", "params": zoom, "created_at": t}, 1),
        ("zoom_succeeded", {"id": jid, "status": "succeeded", "kind": "zoom", "params": zoom, "created_at": t, "enqueued_at": t,
                                "started_at": t + 1, "finished_at": t + 60.5, "attempts": 1, "worker": "w2",
                                "preview_url": "s3://p", "result_url": "s3://r",
                                "progress": {"frame": 11, "frames_done": 12, "fraction": 0.97, "loss": 1.25},
                                "metrics": {"queue_s": 1.0, "run_s": 59.5, "dream_s": 50.25, "precision": "fp32",
                                         "frames_resumed": 0, "frames_done": 12}}, 5),
        ("failed", {"id": jid, "status": "failed", "params": params, "created_at": t, "started_at": t + 1, "finished_at": t + 2,
                        "attempts": 2, "worker": "w1", "error": {"code": "oom", "message": "out of memory"},
                        "metrics": {"run_s": 1.0, "queue_s": 0.5}}, None),
        ("canceled", {"id": jid, "status": "canceled", "params": params, "created_at": t, "finished_at": t + 3,
                          "cancel_requested": True}, None),
        ("webhook_pending", {"id": jid, "status": "queued", "params": params, "created_at": t,
                                 "webhook": {"url": "https://example.com/h"}}, 2),
        ("webhook_history", {"id": jid, "status": "succeeded", "params": params, "created_at": t, "started_at": t + 1,
                                 "finished_at": t + 9, "result_url": "s3://r",
                                 "webhook": {"url": "https://example.com/h", "events_filter": ["start", "completed"]},
                                 "webhook_delivery": {"status": "retrying", "attempts": 2, "delivered": 0,
                                                   "last_event": "start", "last_status": None,
                                                   "last_error": "timeout", "last_attempt_at": t + 2.25,
                                                   "history": hist}}, None),
        ("webhook_lua_empty_history", {"id": jid, "status": "running", "params": params, "created_at": t,
                                           "webhook": {"url": "https://example.com/h", "events_filter": ["completed"]},
                                           "webhook_delivery": {"status": "delivered", "attempts": 1, "delivered": 1,
                                                             "history": {}}}, None),
        ("cached", {"id": jid, "status": "succeeded", "params": params, "created_at": t, "started_at": t, "finished_at": t,
                        "enqueued_at": t, "result_url": "s3://r", "files_from": "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b",
                        "progress": {"octave": 2, "step": 9},
                        "metrics": {"queue_s": 0.0, "run_s": 0.0, "cached": True,
                                 "cached_from": "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b", "precision": "fp32"}}, 9),
        ("unknown_kind", {"id": jid, "status": "running", "kind": "nope", "params": params, "created_at": t,
                              "progress": {"fraction": 0.5}}, None),
    ]


CASES = _cases()


@pytest.mark.parametrize("name,fields,position", CASES, ids=[c[0] for c in CASES])
def test_job_json_is_byte_for_byte_the_hand_built_json(name, fields, position):
    got, want = job_json(Job(**fields), position), _frozen_job_json(Job(**fields), position)
    assert dumps(got) == dumps(want)  # the same keys, values and order
    assert json.dumps(got, indent=1) == json.dumps(want, indent=1)


@pytest.mark.parametrize("name,fields,position", CASES, ids=[c[0] for c in CASES])
def test_public_and_webhook_json_are_the_hand_built_ones(name, fields, position):
    job = Job(**fields)
    assert dumps(job.public()) == dumps(_frozen_public(Job(**fields)))
    assert dumps(job.webhook_json()) == dumps(_frozen_webhook_json(Job(**fields)))


def test_job_json_writes_a_status_as_its_plain_string():
    job = Job(id="0f8fad5b-d9cb-469f-a165-70867728950e", status="queued", params={}, created_at=1.5)
    assert job.status is Status.QUEUED and job.status == "queued" and QUEUED == "queued"
    job.status = SUCCEEDED  # assignment, as the code does
    data = job_json(job)
    assert type(data["status"]) is str and data["status"] == "succeeded"
    assert '"status": "succeeded"' in dumps(data)
    assert [str(s) for s in (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)] == [s.value for s in Status]
    assert FINISHED == ("succeeded", "failed", "canceled")


def test_job_json_refuses_nan_as_before():
    job = Job(id="0f8fad5b-d9cb-469f-a165-70867728950e", status="running", params={}, created_at=1.0,
              progress={"loss": float("nan")})
    with pytest.raises(ValueError):
        dumps(job_json(job))


# -- the OpenAPI document is what the model generates ------------------------------------

def test_openapi_job_schemas_are_the_models():
    schemas = SPEC["components"]["schemas"]
    generated = openapi_schemas(EVENTS)
    assert {"Job", "Progress", "WebhookState"} <= set(generated)
    for name, schema in generated.items():
        assert schemas[name] == schema, name
    assert generated == openapi_schemas(EVENTS)  # deterministic
    assert generated["WebhookState"]["properties"]["events_filter"]["items"] == {"type": "string",
                                                                                "enum": list(EVENTS)}
    assert set(JobView.model_fields) == set(generated["Job"]["properties"])


def test_every_job_json_validates_against_the_openapi_schema():
    jsonschema = pytest.importorskip("jsonschema")
    doc = {"components": SPEC["components"], **SPEC["components"]["schemas"]["Job"]}
    doc["properties"] = {**doc["properties"], "params": {"type": "object"}}  # the cases' params are sketches
    for name, fields, position in CASES:
        if fields.get("kind") == "nope":
            continue  # not a kind the document knows
        jsonschema.validate(json.loads(dumps(job_json(Job(**fields), position))), doc)


# -- the Redis record --------------------------------------------------------------------

def test_json_fields_are_derived_from_the_model():
    assert JSON_FIELDS == ("params", "progress", "error", "metrics", "warnings", "webhook", "webhook_delivery")


@pytest.mark.parametrize("name,fields,position", CASES, ids=[c[0] for c in CASES])
def test_to_redis_round_trips_through_from_redis(name, fields, position):
    job = Job(**fields)
    raw = {k.encode(): (v if isinstance(v, str) else repr(v)).encode() for k, v in job.to_redis().items()}
    back = Job.from_redis(raw)
    assert back == job
    assert dumps(job_json(back, position)) == dumps(job_json(job, position))
