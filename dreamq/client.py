"""Client commands of `dreamq` (submit, status, cancel) and `dreamq web`: no Keras here.

They talk to the HTTP API with `requests`.  Exit codes: 0 ok, 1 the job failed,
2 usage error or the server refused the request (4xx), 3 the job was canceled,
4 the server is unreachable or unavailable (connection error, 5xx).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import requests

from shared.models import MODELS
from shared.params import DreamParams

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
}


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
            if response.status_code >= 500 and attempt < retries:
                time.sleep(1)
                continue
            break
        if response.status_code >= 400:
            _fail(f"{response.status_code}: {_error_text(response)}",
                  UNREACHABLE if response.status_code >= 500 else USAGE)
        return response


def _error_text(response: requests.Response) -> str:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return response.reason or "error"
    fields = error.get("fields") or {}
    details = "".join(f"\n  {name}: {message}" for name, message in fields.items() if message != error["message"])
    return f"{error['message']}{details}"


def _describe(job: dict) -> str:
    p = job["progress"]
    if job["status"] == "queued":
        return f"queued (#{job['queue_position']})" if job.get("queue_position") else "queued"
    if job["status"] == "running" and p.get("octave") is not None:
        return f"octave {p['octave'] + 1}/{p['octaves']}"
    return job["status"]


def wait_for(api: Api, job_id: str, output: Path) -> int:
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", bar_format="{percentage:3.0f}%|{bar}| {desc}", dynamic_ncols=True)
    try:
        with bar:
            while True:
                job = api.call("GET", f"/api/v1/jobs/{job_id}", retries=10).json()
                p = job["progress"]
                text = _describe(job)
                if p.get("loss") is not None and job["status"] == "running":
                    eta = f", eta {p['eta_s']:.0f}s" if p.get("eta_s") else ""
                    text += f", loss {p['loss']:.2f}{eta}"
                bar.set_description_str(text, refresh=False)
                bar.n = round(100 * (p.get("fraction") or 0), 1)
                bar.refresh()
                if job["status"] in EXIT_OF_STATUS:
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo(f"\nstopped waiting; the job goes on: dreamq status {job_id} / dreamq cancel {job_id}", err=True)
        return 130
    if job["status"] == "succeeded":
        data = api.call("GET", f"/api/v1/jobs/{job_id}/result", retries=3).content
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(data)
        click.echo(f"wrote {output}", err=True)
    else:
        error = job.get("error") or {}
        click.echo(f"job {job['status']}: {error.get('message', '')}", err=True)
    return EXIT_OF_STATUS[job["status"]]


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@server_options
@click.option("--wait", is_flag=True, help="Show progress until the job ends, then save the result.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where --wait saves the result [IMAGE_dream.png]; implies --wait.")
@param_options
def submit(image: Path, server: str, token: str | None, wait: bool, output: Path | None, **params) -> None:
    """Submit IMAGE to a dreamq server; prints the job id."""
    api = Api(server, token)
    fields = {k: str(v) for k, v in params.items() if v is not None}
    with image.open("rb") as fh:
        response = api.call("POST", "/api/v1/jobs", files={"image": (image.name, fh)}, data=fields)
    job = response.json()
    click.echo(job["id"])
    if wait or output:
        sys.exit(wait_for(api, job["id"], output or image.with_name(f"{image.stem}_dream.png")))


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
    sys.exit(EXIT_OF_STATUS.get(job["status"], OK))


@click.command()
@click.argument("job_id")
@server_options
def cancel(job_id: str, server: str, token: str | None) -> None:
    """Cancel a queued or running job (a running one stops at its next step)."""
    job = Api(server, token).call("POST", f"/api/v1/jobs/{job_id}/cancel").json()
    click.echo("canceled" if job["status"] == "canceled" else "cancel requested: the worker stops at its next step")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--debug", is_flag=True, help="Flask's debugger and reloader (never on a public address).")
def web(host: str, port: int, debug: bool) -> None:
    """Run the web front end with Flask's development server (production: gunicorn 'web:create_app()')."""
    from web import create_app

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    create_app().run(host=host, port=port, debug=debug, threaded=True)


COMMANDS += [submit, status, cancel, web]
