"""The job record: what a job is and where it stands, as kept in Redis.

The record is the single source of truth for a job's state; Celery only carries
``(job_id, dispatch token)``.  How a record changes state lives in ``shared/jobs.py``.

States: queued -> running -> succeeded | failed | canceled (and queued -> canceled).

One description of a job, in pydantic models: ``Job`` is the record (its Redis mapping,
``from_redis`` and ``to_redis``, derives from its fields); ``JobView`` is the job as the API
shows it (GET /api/v1/jobs/{id}, the event stream, webhook bodies: ``job_json``), and its JSON
schema is the OpenAPI document's ``Job`` (``openapi_schemas``; web/openapi.py).
"""
from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    WithJsonSchema,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema

from .kinds import DEFAULT_KIND, KINDS, get_kind
from .params import DreamParams


class Status(StrEnum):
    """Where a job stands.  Members are their strings: they compare equal to them, and JSON and
    Redis write the plain string."""
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = Status
FINISHED = (SUCCEEDED, FAILED, CANCELED)


class Priority(StrEnum):
    """Which of an owner's queued jobs runs first: every ``interactive`` one before any ``batch``
    one, each in submission order.  It orders an owner's own jobs, never one owner against another
    (shared/jobs.py, "Fair share")."""
    INTERACTIVE = "interactive"
    BATCH = "batch"


def dumps(value: Any) -> str:
    """JSON as every client parses it: NaN and Infinity raise ValueError here, never reach a reader
    (Python's json writes them as bare words that JSON.parse refuses)."""
    return json.dumps(value, allow_nan=False)


def is_job_id(value: str) -> bool:
    """Only canonical UUID4 strings are job ids (anything else is a 404, never a path)."""
    try:
        return len(value) == 36 and str(uuid.UUID(value, version=4)) == value
    except (ValueError, AttributeError, TypeError):
        return False


# -- the record ---------------------------------------------------------------------

class Job(BaseModel):
    """A job's record.  Keyword construction validates (a status string becomes a ``Status``);
    assignment does not."""
    id: str
    status: Status
    params: dict[str, Any]
    created_at: float
    kind: str = DEFAULT_KIND
    started_at: float | None = None
    finished_at: float | None = None
    enqueued_at: float | None = None
    attempts: int = 0
    worker: str | None = None
    progress: dict[str, Any] = Field(default_factory=dict)
    error: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)  # what ran differently from what was asked, and why
    input_url: str | None = None
    preview_url: str | None = None
    result_url: str | None = None
    dispatch: str | None = None
    cancel_requested: bool = False
    owner: str | None = None  # a hash of the token that created the job (never the token); None: no tokens set
    webhook: dict[str, Any] | None = None  # {"url", "events_filter"}: where its events are POSTed (shared/webhooks.py)
    webhook_delivery: dict[str, Any] = Field(default_factory=dict)  # what the deliveries did (dreamq/delivery.py)
    # A result-cache hit stores no files: this names the job whose store folder holds them
    # (always the one that ran, never another hit; shared/cache.py).  None: its own folder.
    files_from: str | None = None
    priority: Priority = Priority.INTERACTIVE
    # Whose share of the workers the job uses (shared/jobs.py, "Fair share"): kept only when it is not
    # the owner, i.e. the client's address in open mode.  ``share_key`` is the one to use.
    share: str | None = None
    # Jobs queued with the same key may run as one batch (shared/jobs.py, "Batching"): the kind's
    # batch_key of the job's parameters and picture; None: never batched.  Not shown to clients.
    batch_key: str | None = None

    @property
    def share_key(self) -> str:
        return self.share or self.owner or ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def files_id(self) -> str:
        """The store folder of the job's files: read a job's stored files through this, never ``id``."""
        return self.files_from or self.id

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> Job:
        """The job of a Redis hash: JSON fields parsed, ``1`` a true flag, numbers by their field's
        type; a missing or empty field takes its default."""
        d = {k.decode(): v.decode() for k, v in raw.items()}
        kw: dict[str, Any] = {}
        for name in cls.model_fields:
            if name not in d or d[name] == "":
                continue
            value: Any = d[name]
            if name in JSON_FIELDS:
                value = json.loads(value)
            elif name in _FLAGS:
                value = value == "1"
            kw[name] = value
        kw.setdefault("params", {})
        return cls(**kw)

    def to_redis(self, *, sparse: bool = False) -> dict[str, str | int | float]:
        """The job as a Redis hash mapping, as ``from_redis`` reads it back: JSON fields as JSON,
        flags as ``1``/``0``, a missing value as ``""``.  ``sparse``: only the fields that differ
        from their default (a missing field reads as its default), so a queued record stays small."""
        out: dict[str, str | int | float] = {}
        defaults = _defaults(type(self))
        for name in type(self).model_fields:
            value = getattr(self, name)
            if sparse and name != "id" and value == defaults[name]:
                continue
            if name in JSON_FIELDS:
                out[name] = "" if value is None else dumps(value)
            elif name in _FLAGS:
                out[name] = "1" if value else "0"
            elif value is None:
                out[name] = ""
            else:
                out[name] = str(value) if isinstance(value, StrEnum) else value
        return out

    def public(self) -> dict[str, Any]:
        """The job as clients see it, less its links and queue position (``job_json``)."""
        return _view(self).model_dump(mode="json", exclude_unset=True, exclude={"queue_position", "links"})

    def webhook_json(self) -> dict[str, Any] | None:
        """Where the job's events go and every delivery attempt so far; null without a webhook."""
        state = _webhook_state(self)
        return None if state is None else state.model_dump(mode="json", exclude_unset=True)


@functools.cache
def _defaults(cls) -> dict[str, Any]:
    """Each field's default, computed once: pydantic inspects a default factory on every call (0.3 ms a record)."""
    return {name: f.get_default(call_default_factory=True) for name, f in cls.model_fields.items()}


def _json_field(annotation: Any) -> bool:
    """Whether a field of this type is kept as JSON in Redis: a dict or a list (or one or None)."""
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        return any(_json_field(a) for a in get_args(annotation) if a is not type(None))
    return get_origin(annotation) in (dict, list) or annotation in (dict, list)


JSON_FIELDS = tuple(name for name, f in Job.model_fields.items() if _json_field(f.annotation))
_FLAGS = tuple(name for name, f in Job.model_fields.items() if f.annotation is bool)


# -- the job as the API shows it: GET /api/v1/jobs/{id}, and the body of its webhooks --

def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


# A number as recorded (an int stays an int, a float a float): the API writes what was measured.
Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
# A Unix time, written as ISO 8601 UTC with milliseconds and Z.
Timestamp = Annotated[float, PlainSerializer(_iso, return_type=str),
                      WithJsonSchema({"type": "string", "format": "date-time"})]
# Where the schema names the params components, and the webhook events (shared/webhooks.py, which
# imports this module): filled in by ``openapi_schemas``.
_PARAMS, _EVENTS = "x-dreamq-params", "x-dreamq-webhook-events"


class _View(BaseModel):
    """A part of the job as the API shows it.  NaN and Infinity stay floats when dumped, for ``dumps``
    to refuse (pydantic would write null)."""
    model_config = ConfigDict(ser_json_inf_nan="constants")


class _Open(_View):
    """An object that may hold more than its declared keys, written back in the order it was given."""
    model_config = ConfigDict(extra="allow")
    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, data: Any, handler):
        model = handler(data)
        if isinstance(data, dict):
            model._order = tuple(data)
        return model

    @model_serializer(mode="wrap")
    def _in_order(self, handler) -> dict[str, Any]:
        out = handler(self)
        first = {k: out[k] for k in self._order if k in out}
        return {**first, **{k: v for k, v in out.items() if k not in first}}


class Progress(_Open):
    fraction: Number = Field(None, json_schema_extra={"minimum": 0, "maximum": 1})
    octave: int | None = Field(None, description="Current octave, from 0.")
    octaves: int | None = None
    step: int | None = Field(None, description="Current step of the octave, from 0.")
    steps: int | None = None
    loss: Number | None = None
    eta_s: Number | None = None
    frame: int | None = Field(None, description="A kind with frames (a video): the frame being dreamed "
                                                "(or the last one finished), from 0.")
    frames: int | None = Field(None, description="A kind with frames: frames of the video.")
    frames_done: int | None = Field(None, description="A kind with frames: frames finished (0 to frames_done - 1, "
                                                      "each at `/frames/{n}`; `links.frame` is the latest).")


class JobError(_Open):
    code: str
    message: str = Field(description="A short sentence for whoever asked.")
    detail: str = Field(None, description="Only for admin tokens, only on some failures: the operator's detail "
                                          "(exception text, paths, URLs), as in the worker's log.")


class JobTimings(_Open):
    queue_s: Number = Field(None, description="Queued, until a worker started it (as metrics.queue_s).")
    load_s: Number = Field(None, description="Reading and decoding the input (and guide).")
    steps_s: Number = Field(None, description="Inside the gradient ascent steps.")
    preview_s: Number = Field(None, description="The steps' thread handing previews over (a thread of their "
                                                "own shrinks, encodes and stores them).")
    encode_s: Number = Field(None, description="Encoding the result (a video: its frames and the video).")
    store_s: Number = Field(None, description="Storing the result, and the last preview's write.")


class JobMetrics(_Open):
    queue_s: Number | None = None
    run_s: Number | None = None
    dream_s: Number | None = Field(None, description="The engine's share of run_s.")
    timings: JobTimings = Field(None, description="Where a worker's run_s went: load_s + steps_s + preview_s + "
                                                  "encode_s + store_s, the rest being the queue's own writes.")
    precision: str = Field(None, description="The precision that really ran.")
    cached: bool = Field(None, description="true: answered from the result cache, no worker ran it (run_s 0); "
                                           "absent otherwise.")
    cached_from: str = Field(None, json_schema_extra={"format": "uuid"},
                             description="With cached: the earlier identical job that answered this one (its "
                                         "files are shared); only when that job has the same owner.")


class WebhookStateHistoryItem(_Open):
    event: str = None
    attempt: int = None
    status: int | None = None
    error: str | None = None
    at: Number | None = None


class WebhookState(_View):
    url: str
    events_filter: list[Annotated[str, WithJsonSchema({"type": "string", _EVENTS: True})]]
    status: str = Field(json_schema_extra={"enum": ["pending", "delivered", "retrying", "failed"]},
                        description="Of the latest attempt: `pending` before the first; `retrying`: it failed and "
                                    "will be tried again; `failed`: an event was given up on.")
    attempts: int = Field(description="Attempts so far, all events together.")
    delivered: int = Field(None, description="Events delivered (a 2xx answer).")
    last_event: str | None = None
    last_status: int | None = Field(None, description="The HTTP status of the latest attempt; null: none "
                                                      "(network error).")
    last_error: str | None = None
    last_attempt_at: Timestamp | None = None
    history: list[WebhookStateHistoryItem] = Field(None, description="The latest 20 attempts, oldest first.")


class JobLinks(_View):
    self: str = None
    result: str | None = None
    preview: str | None = None
    cancel: str = None
    events: str = None
    frame: str | None = Field(None, description="Only a kind with frames: the latest finished frame "
                                                "(`/frames/{n}`), null until one is.")


# The job as the API shows it: ``job_json`` fills every field (``links.frame`` only for kinds with
# frames) and dumps the fields set.  Its schema is the OpenAPI document's Job (``openapi_schemas``).
class JobView(_View):
    
    id: str = Field(json_schema_extra={"format": "uuid"})
    kind: str = Field(None, json_schema_extra={"enum": list(KINDS)})
    status: Annotated[Status, WithJsonSchema({"type": "string", "enum": [s.value for s in Status]})]
    progress: Progress
    params: Annotated[dict[str, Any], WithJsonSchema({_PARAMS: True})] = Field(
        description="Params, or those of the job's kind where it has its own.")
    created_at: Timestamp
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    attempts: int = Field(None, description="How many times a worker started it.")
    worker: str | None = None
    error: JobError | None
    warnings: list[str] = Field(None, description="What ran differently from what was asked, and why.")
    metrics: JobMetrics = None
    webhook: WebhookState | None = Field(None, description="null without a `webhook`; else where its events go "
                                                           "and every attempt.")
    priority: Annotated[Priority, WithJsonSchema({"type": "string", "enum": [p.value for p in Priority]})] = Field(
        None, description="`interactive` (the default) runs before the same owner's `batch` jobs.")
    queue_position: int | None = Field(None, description="1 = next (an estimate under fair share: your own "
                                                          "jobs ahead times the owners with jobs queued); "
                                                          "null unless queued.")
    links: JobLinks = Field(description="result and preview are null until they exist.")


def _webhook_state(job: Job) -> WebhookState | None:
    if not job.webhook:
        return None
    d = job.webhook_delivery or {}
    return WebhookState(url=job.webhook.get("url"), events_filter=job.webhook.get("events_filter", []),
                        status=d.get("status", "pending"), attempts=d.get("attempts", 0),
                        delivered=d.get("delivered", 0), last_event=d.get("last_event"),
                        last_status=d.get("last_status"), last_error=d.get("last_error"),
                        last_attempt_at=d.get("last_attempt_at"),
                        history=d["history"] if isinstance(d.get("history"), list) else [])  # cjson writes [] as {}


def _error(job: Job, detail: bool) -> dict[str, Any] | None:
    """The job's error as shown: its ``detail`` is the operator's, dropped unless ``detail``."""
    if job.error is None or detail:
        return job.error
    return {k: v for k, v in job.error.items() if k != "detail"}


def _view(job: Job, queue_position: int | None = None, detail: bool = False) -> JobView:
    kind = get_kind(job.kind)
    progress = kind.progress(job.params) if kind else {"fraction": 0.0, "eta_s": None}
    progress.update(job.progress)
    if job.status == SUCCEEDED:
        progress["fraction"] = 1.0
        progress["eta_s"] = 0.0
    base = f"/api/v1/jobs/{job.id}"
    # result and preview are null until they exist, so a client knows when to fetch them.
    links = {"self": base, "result": f"{base}/result" if job.status == SUCCEEDED else None,
             "preview": f"{base}/preview" if job.preview_url else None,
             "cancel": f"{base}/cancel", "events": f"{base}/events"}
    if has_frames(kind):  # the latest finished frame of a video, null until the first is done
        done = frames_done(job)
        links["frame"] = f"{base}/frames/{done - 1}" if done else None
    return JobView(
        id=job.id, kind=job.kind, status=job.status, progress=progress, params=job.params,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at, attempts=job.attempts,
        worker=job.worker, error=_error(job, detail), warnings=job.warnings,
        # queue_s and run_s always (null until known); what else a kind measured, when it did.
        metrics={"queue_s": job.metrics.get("queue_s"), "run_s": job.metrics.get("run_s"), **job.metrics},
        webhook=_webhook_state(job), priority=job.priority,
        queue_position=queue_position if job.status == QUEUED else None, links=links)


def job_json(job: Job, queue_position: int | None = None, detail: bool = False) -> dict:
    """The job as the API shows it; ``detail``: with its error's detail (admin tokens only)."""
    return _view(job, queue_position, detail).model_dump(mode="json", exclude_unset=True)


def has_frames(kind) -> bool:
    """Whether jobs of ``kind`` (a Kind or None) keep numbered frames."""
    return kind is not None and kind.has_frames


def frames_done(job: Job) -> int:
    """How many frames of a video job are finished (frames 0 to this - 1), from its progress."""
    p = job.progress or {}
    done = p.get("frames_done")
    if done is None and p.get("frame") is not None:
        done = p["frame"] + 1  # the index of the last finished frame
    if job.status == SUCCEEDED:
        done = job.params.get("frames", done)
    try:
        return max(0, int(done or 0))
    except (TypeError, ValueError):
        return 0


# -- the OpenAPI schemas of JobView ---------------------------------------------------

def params_components() -> dict[str, type]:
    """Component name -> params model: Params, then each kind's whose params are its own."""
    out: dict[str, type] = {"Params": DreamParams}
    for kind in KINDS.values():
        if kind.params is not DreamParams:
            name = kind.params.__name__
            out[name if name not in ("Params", "DreamParams") else f"{kind.name.title()}Params"] = kind.params
    return out


class _ApiSchema(GenerateJsonSchema):
    """The API's view of a model: no titles (generators name classes after them) and no defaults (the
    API writes every value it has)."""

    def field_title_should_be_set(self, schema) -> bool:
        return False

    def default_schema(self, schema) -> dict:
        return self.generate_inner(schema["schema"])


def openapi_schemas(webhook_events: Sequence[str], ref_template: str = "#/components/schemas/{model}") \
        -> dict[str, dict]:
    """The OpenAPI component schemas of the job: ``Job`` (JobView) and those it refers to.
    ``webhook_events``: shared.webhooks.EVENTS, the enum of ``events_filter``."""
    schema = JobView.model_json_schema(ref_template=ref_template, schema_generator=_ApiSchema)
    defs = schema.pop("$defs", {})
    names = list(params_components())
    refs = [{"$ref": ref_template.format(model=n)} for n in names]
    params = {"anyOf": refs} if len(refs) > 1 else refs[0]

    def clean(node: Any) -> Any:
        if isinstance(node, list):
            return [clean(v) for v in node]
        if not isinstance(node, dict):
            return node
        if node.get(_PARAMS):
            return {**params, **{k: v for k, v in node.items() if k != _PARAMS}}
        if node.get(_EVENTS):
            return {**{k: v for k, v in node.items() if k != _EVENTS}, "enum": list(webhook_events)}
        return {k: clean(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}

    return {name: clean(s) for name, s in {"Job": schema, **defs}.items()}
