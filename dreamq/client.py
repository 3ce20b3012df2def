"""Client commands of `dreamq` (submit, status, cancel): no Keras here.

They talk to the HTTP API with `requests`.  Exit codes: 0 ok, 1 the job failed,
2 usage error or the server refused the request (4xx), 3 the job was canceled,
4 the server is unreachable or unavailable (connection error, 5xx).
"""
from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import click
import requests

from shared import provenance
from shared.kinds import DEFAULT_KIND, KINDS
from shared.models import MODELS
from shared.params import DreamParams, form_value

COMMANDS: list[click.Command] = []

DEFAULT_SERVER = "http://127.0.0.1:8000"
OK, FAILED, USAGE, CANCELED, UNREACHABLE = 0, 1, 2, 3, 4
EXIT_OF_STATUS = {"succeeded": OK, "failed": FAILED, "canceled": CANCELED}

PARAM_HELP = {
    "model": "Network [inception_v3].", "preset": "Named set of parameters of the model.",
    "layers": "Layers and weights, e.g. mixed4=1.0,mixed5=1.5.", "step": "Gradient ascent step.",
    "octaves": "Number of scales [3].", "octave_scale": "Size ratio between octaves [1.4].",
    "iterations": "Ascent steps per octave [20].", "max_loss": "Stop an octave past this loss, or 'none'.",
    "max_side": "Downscale so the longer side is at most this.", "precision": "fp32 (exact), bf16 (faster where the worker has native bf16, else runs fp32) or auto.",
    "tile_size": "Gradient tile by tile of this size (bounded memory).",
    "jitter": "Random roll of up to this many pixels per step.", "seed": "Seed of the random rolls.",
    "guide_layer": "With --guide: the layer drawn toward the guide's features [the model's].",
}  # a kind's own parameters: their description in the kind's declaration (shared/kinds/)
# Result media type -> file extension, for the default output name (each kind declares its own).
EXTENSIONS = {t: ext for k in KINDS.values() for t, ext in k.result_types.items()}


def _fail(message: str, code: int = USAGE) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def param_options(f):
    """One option per field of DreamParams (so new parameters appear here too); unset ones: server defaults."""
    for name in reversed(list(DreamParams.model_fields)):
        kind = click.Choice(list(MODELS)) if name == "model" else None
        f = click.option(f"--{name.replace('_', '-')}", name, type=kind, default=None,
                         help=PARAM_HELP.get(name, f"Dream parameter {name}."))(f)
    return f


def kind_options(f):
    """--kind, and one option per parameter that only some kinds have, documented by its declaration."""
    extra: dict[str, list[str]] = {}
    words: dict[str, str] = {}
    for kind in KINDS.values():
        for name, field in kind.params.model_fields.items():
            if name not in DreamParams.model_fields:
                extra.setdefault(name, []).append(kind.name)
                words.setdefault(name, field.description or f"Parameter {name}.")
    for name in reversed(list(extra)):
        f = click.option(f"--{name.replace('_', '-')}", name, default=None,
                         help=f"{words[name]} [--kind {' or '.join(extra[name])}]")(f)
    f = click.option("--guide", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="A guide image: the dream is drawn toward its features.")(f)
    return click.option("--kind", type=click.Choice(list(KINDS)), default=None,
                        help="What to make: " + "; ".join(f"{k.name}, {k.summary}" for k in KINDS.values())
                        + f" [{DEFAULT_KIND}].")(f)


def server_options(f):
    f = click.option("--token", envvar="DREAMQ_TOKEN", default=None,
                     help="API token, sent as a bearer token [$DREAMQ_TOKEN].")(f)
    return click.option("--server", envvar="DREAMQ_SERVER", default=DEFAULT_SERVER, show_default=True,
                        help="dreamq web server [$DREAMQ_SERVER].")(f)


class Api:
    def __init__(self, server: str, token: str | None):
        self.server = server.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, *, retries: int = 0, **kwargs) -> requests.Response:
        """The response, or exit with the error: 2 for 4xx, 4 when unreachable or 5xx."""
        for attempt in range(retries + 1):
            try:
                response = self.session.request(method, self.server + path, timeout=(5, 60), **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt < retries:
                    time.sleep(1)
                    continue
                _fail(f"cannot reach {self.server}: {exc.__class__.__name__}", UNREACHABLE)
            # 409 with an Idempotency-Key: our own first try is still being processed.
            in_flight = response.status_code == 409 and "Idempotency-Key" in (kwargs.get("headers") or {})
            if (response.status_code >= 500 or in_flight) and attempt < retries:
                time.sleep(1)
                continue
            break
        if response.status_code >= 400:
            _fail(f"{response.status_code}: {_error_text(response)}",
                  UNREACHABLE if response.status_code >= 500 else USAGE)
        return response


def _error_text(response: requests.Response) -> str:
    """The message, then each field's error once, a line each."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return response.reason or "error"
    message, fields = error["message"], error.get("fields") or {}
    # A 422 spells its fields out in its message too ("invalid request: octaves: ...; layers: ..."):
    # keep the head, the lines below say each.
    first = next((f"{name}: {text}" for name, text in fields.items()), None)
    if first and first in message:
        message = message.split(first, 1)[0].rstrip(": ;") or "invalid request"
    details = "".join(f"\n  {name}: {text}" for name, text in fields.items() if text != message)
    return f"{message}{details}"


def _describe(job: dict) -> str:
    p = job["progress"]
    if job["status"] == "queued":
        return f"queued (#{job['queue_position']})" if job.get("queue_position") else "queued"
    if job["status"] == "running" and "frame" in (job.get("links") or {}):
        frames = job["params"].get("frames") or p.get("frames")
        text = f"frame {min(frames_done(job) + 1, frames or 0) or '?'}/{frames}"
        if p.get("octave") is not None:
            text += f", octave {p['octave'] + 1}/{p['octaves']}"
        return text
    if job["status"] == "running" and p.get("octave") is not None:
        return f"octave {p['octave'] + 1}/{p['octaves']}"
    return job["status"]


def frames_done(job: dict) -> int:
    """Finished frames of a video job: the server links the latest, /frames/<n>."""
    link = (job.get("links") or {}).get("frame")
    return int(link.rsplit("/", 1)[1]) + 1 if link else 0


class Progress:
    """The terminal's progress bar: percent for a picture, frames for a video."""

    def __init__(self):
        self.bar = None

    def show(self, job: dict) -> None:
        from tqdm import tqdm

        p = job["progress"]
        video = "frame" in (job.get("links") or {})
        if self.bar is None:
            if video:
                self.bar = tqdm(total=job["params"].get("frames") or p.get("frames") or 1, unit="frame",
                                bar_format="{n_fmt}/{total_fmt} frames|{bar}| {desc}", dynamic_ncols=True)
            else:
                self.bar = tqdm(total=100, unit="%", bar_format="{percentage:3.0f}%|{bar}| {desc}",
                                dynamic_ncols=True)
        text = _describe(job)
        if p.get("loss") is not None and job["status"] == "running":
            eta = f", eta {p['eta_s']:.0f}s" if p.get("eta_s") else ""
            text += f", loss {p['loss']:.2f}{eta}"
        self.bar.set_description_str(text, refresh=False)
        if video:
            self.bar.n = self.bar.total if job["status"] == "succeeded" else frames_done(job)
        else:
            self.bar.n = round(100 * (p.get("fraction") or 0), 1)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def wait_for(api: Api, job_id: str, output: Path | None, image: Path | None = None) -> int:
    """Follow the job with a progress bar; once it succeeds, write its result to ``output``
    (default: IMAGE_dream with the result's extension)."""
    progress = Progress()
    try:
        while True:
            job = api.call("GET", f"/api/v1/jobs/{job_id}", retries=10).json()
            progress.show(job)
            if job["status"] in EXIT_OF_STATUS:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        progress.close()
        click.echo(f"\nstopped waiting; the job goes on: dreamq status {job_id} / dreamq cancel {job_id}", err=True)
        return 130
    progress.close()
    if job["status"] == "succeeded":
        with api.call("GET", f"/api/v1/jobs/{job_id}/result", retries=3, stream=True) as response:
            if output is None:
                media_type = response.headers.get("Content-Type", "image/png").split(";")[0].strip()
                stem = image.stem if image is not None else job_id
                output = (image.parent if image is not None else Path(".")) / (
                    f"{stem}_dream{EXTENSIONS.get(media_type, '.png')}")
            output.parent.mkdir(parents=True, exist_ok=True)
            # Streamed to the file: a video need not fit in memory.
            partial = output.with_name(output.name + ".part")
            with partial.open("wb") as fh:
                for chunk in response.iter_content(256 * 1024):
                    fh.write(chunk)
            partial.replace(output)
        click.echo(f"wrote {output}", err=True)
    else:
        error = job.get("error") or {}
        click.echo(f"job {job['status']}: {error.get('message', '')}", err=True)
    return EXIT_OF_STATUS[job["status"]]


# Parameters that mean something only for the model they were chosen for.
MODEL_SPECIFIC = ("preset", "layers", "step", "max_loss", "guide_layer")


def params_from(picture: Path, kind: str | None, options: dict, guide: bool) -> tuple[str, dict[str, str]]:
    """The kind and the form fields of the parameters a picture dreamq made carries (shared/provenance.py).

    Those of another kind, and, for another ``--model``, the model's own, are left out, and the
    guide layer without a guide: the options given complete them."""
    found = provenance.read(picture)
    if found is None:
        _fail(f"{picture}: it carries no dreamq parameters (only a PNG that dreamq made does)")
    kind = kind or found.get("kind") or DEFAULT_KIND
    if kind not in KINDS:
        _fail(f"{picture}: made by a job of kind {found.get('kind')!r}, which this dreamq does not know")
    params = {k: v for k, v in found["params"].items() if k in KINDS[kind].params.model_fields}
    if options.get("model") not in (None, params.get("model")):
        params = {k: v for k, v in params.items() if k not in MODEL_SPECIFIC}
    if not guide:
        params.pop("guide_layer", None)
    return kind, {k: form_value(k, v) for k, v in params.items() if v is not None or k == "max_loss"}


def cache_note(job: dict) -> str | None:
    """What to say of a job answered from the result cache (shared/cache.py), else None."""
    metrics = job.get("metrics") or {}
    if not metrics.get("cached"):
        return None
    source = f", {metrics['cached_from']}" if metrics.get("cached_from") else ""
    return f"served from the cache (an earlier identical job{source}); --no-cache to dream again"


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@server_options
@click.option("--wait", is_flag=True, help="Show progress until the job ends, then save the result.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where --wait saves the result [IMAGE_dream.png, .mp4...]; implies --wait.")
@click.option("--webhook", default=None, metavar="URL",
              help="POST the job's events to URL, signed with the server's DREAMQ_WEBHOOK_SECRET.")
@click.option("--webhook-events", default=None, metavar="EVENTS",
              help="Comma-separated: start, progress, output, completed [completed].")
@click.option("--params-from", "picture", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, metavar="PNG",
              help="Dream with the parameters (and kind) of a PNG dreamq made; the options given override them.")
@click.option("--no-cache", is_flag=True,
              help="Dream again even when an identical job's result is in the server's cache.")
@click.option("--priority", type=click.Choice(["interactive", "batch"]), default=None,
              help="Which of your own queued jobs runs first: interactive ones before batch ones [interactive].")
@kind_options
@param_options
def submit(image: Path, server: str, token: str | None, wait: bool, output: Path | None, kind: str | None,
           guide: Path | None, webhook: str | None, webhook_events: str | None, picture: Path | None,
           no_cache: bool, priority: str | None, **params) -> None:
    """Submit IMAGE to a dreamq server; prints the job id.

    A zoom video: dreamq submit photo.jpg --kind zoom --frames 48 --wait -o dream.mp4

    Again, as a picture was dreamed: dreamq submit photo.jpg --params-from photo_dream.png --wait
    """
    api = Api(server, token)
    fields = {}
    if picture is not None:
        kind, fields = params_from(picture, kind, params, guide is not None)
    fields.update({k: str(v) for k, v in params.items() if v is not None})
    if kind is not None:
        fields["kind"] = kind
    if no_cache:
        fields["cache"] = "false"
    if priority is not None:
        fields["priority"] = priority
    if webhook is not None:
        fields["webhook"] = webhook
    if webhook_events is not None:
        fields["webhook_events_filter"] = webhook_events
    # Read once, so that a retry sends the same bytes; one fresh Idempotency-Key for this
    # command, reused on its own retries, so a retried submit never makes a second job.
    files = {"image": (image.name, image.read_bytes())}
    if guide is not None:
        files["guide"] = (guide.name, guide.read_bytes())
    response = api.call("POST", "/api/v1/jobs", files=files, data=fields, retries=3,
                        headers={"Idempotency-Key": str(uuid.uuid4())})
    job = response.json()
    click.echo(job["id"])
    if cache_note(job):
        click.echo(cache_note(job), err=True)
    if wait or output:
        sys.exit(wait_for(api, job["id"], output, image))


@click.command()
@click.argument("job_id")
@server_options
@click.option("--json", "as_json", is_flag=True, help="Print the job's JSON.")
def status(job_id: str, server: str, token: str | None, as_json: bool) -> None:
    """Show a job's state; exits 1 if it failed, 3 if it was canceled."""
    job = Api(server, token).call("GET", f"/api/v1/jobs/{job_id}").json()
    if as_json:
        import json

        click.echo(json.dumps(job, indent=2))
    else:
        p = job["progress"]
        click.echo(f"{job['id']}  {_describe(job)}  {100 * (p.get('fraction') or 0):.0f}%")
        if job.get("error"):
            click.echo(f"error: {job['error']['code']}: {job['error']['message']}")
        if job["status"] == "succeeded":
            click.echo(f"result: {server.rstrip('/')}{job['links']['result']}")
            if cache_note(job):
                click.echo(cache_note(job))
    sys.exit(EXIT_OF_STATUS.get(job["status"], OK))


@click.command()
@click.argument("job_id")
@server_options
def cancel(job_id: str, server: str, token: str | None) -> None:
    """Cancel a queued or running job (a running one stops at its next step)."""
    job = Api(server, token).call("POST", f"/api/v1/jobs/{job_id}/cancel").json()
    click.echo("canceled" if job["status"] == "canceled" else "cancel requested: the worker stops at its next step")


COMMANDS += [submit, status, cancel]
