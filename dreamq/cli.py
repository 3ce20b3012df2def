"""`dreamq`: dream locally, run the service, talk to it.

Heavy imports (Keras) happen inside the commands that need them, so that
`dreamq --help` and the client commands start instantly.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from dreamq.client import _fail, param_options
from shared.params import DreamParams

SAMPLE = Path(__file__).parent / "samples" / "astronaut.jpg"


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Modules of the `worker` extra: a core install (the web image, a client) has none of them.
# The framework is Keras' backend: TensorFlow by default, JAX on the GPU test machines.
WORKER_MODULES = ("keras", "h5py")


def _need_worker_extra(command: str, hint: str = "") -> None:
    """Exit saying what to install, instead of an ImportError traceback later."""
    import importlib.util

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    missing = [m for m in (*WORKER_MODULES, backend) if importlib.util.find_spec(m) is None]
    if missing:
        _fail(f"`dreamq {command}` runs models and needs the worker extra, which is not installed "
              f"(missing: {', '.join(missing)}): pip install 'dreamq[worker]' "
              f"(or 'dreamq[gpu]' for NVIDIA GPUs){hint}")


PARAM_NAMES = tuple(DreamParams.model_fields)


def collect_params(kwargs: dict) -> dict:
    return {k: kwargs[k] for k in PARAM_NAMES if kwargs.get(k) is not None}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """dreamq: Deep Dream at scale."""


@main.command()
@click.argument("input", type=click.Path(dir_okay=False, path_type=Path), default=SAMPLE)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG to write [INPUT_dream.png].")
@click.option("--weights", default=None,
              help="imagenet | random | PATH; default $DREAMQ_<MODEL>_WEIGHTS or imagenet (bundled for vgg16_hed).")
@param_options
def dream(input: Path, output: Path | None, weights: str | None, **kwargs) -> None:
    """Dream on INPUT (default: a bundled sample photo) and write a PNG."""
    _need_worker_extra("dream")
    from shared.images import ImageError, check_size, decode_image, encode_png
    from shared.params import ParamsError, parse_params

    try:
        params = parse_params(collect_params(kwargs))
    except ParamsError as exc:
        _fail(f"invalid parameters: {exc}")
    if not input.is_file():
        _fail(f"no such file: {input}")
    try:
        image = decode_image(input.read_bytes(), max_side=params.max_side)
        small = check_size(image.shape[0], image.shape[1], params)
    except ImageError as exc:
        _fail(f"{input}: {exc}")
    if small:
        click.echo(f"warning: {small}", err=True)
    output = output or input.with_name(f"{input.stem}_dream.png")

    _quiet_tensorflow()
    from tqdm import tqdm

    from shared.provenance import png_info
    from shared.settings import get_settings
    from worker.device import detect_bf16, resolve_precision
    from worker.dream import Dreamer
    from worker.models import WeightsUnavailable, load_model, weights_fingerprint

    try:
        model = load_model(params.model, weights)
    except WeightsUnavailable as exc:
        _fail(str(exc))
    bf16 = detect_bf16(get_settings().bf16)
    precision, warning = resolve_precision(params.precision, bf16)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    params = params.model_copy(update={"precision": precision})
    dreamer = Dreamer(model)
    total = params.octaves * params.iterations
    with tqdm(total=total, unit="step", desc="octave 1", dynamic_ncols=True) as bar:
        def on_progress(p):
            bar.total = p.octaves * p.steps  # a small image may skip octaves
            bar.set_description(f"octave {p.octave + 1}/{p.octaves}")
            bar.set_postfix(loss=f"{p.loss:.2f}")
            bar.n = p.octave * p.steps + p.step + 1
            bar.refresh()

        result = dreamer.dream(image, params, on_progress=on_progress)
        bar.n = total
    output.parent.mkdir(parents=True, exist_ok=True)
    # The PNG says how it was dreamed, as the service's do (shared/provenance.py).
    output.write_bytes(encode_png(result, png_info("image", params, weights_fingerprint(model))))
    click.echo(f"wrote {output} ({result.shape[1]}x{result.shape[0]})")


@main.command()
def weights() -> None:
    """Download and cache the ImageNet weights of InceptionV3 (needs internet once)."""
    _need_worker_extra("weights")
    _quiet_tensorflow()
    from worker.models import WeightsUnavailable, fetch_imagenet_weights

    try:
        where = fetch_imagenet_weights()
    except WeightsUnavailable as exc:
        _fail(str(exc))
    click.echo(f"InceptionV3 ImageNet weights are cached in {where}")


NO_REDIS = ("neither DREAMQ_REDIS_URL nor DREAMQ_REDIS_SENTINELS is set: start the whole service with "
            "`dreamq up`, or point one of them at Redis")


@main.command()
@click.option("--gpus", default=None, help="Comma-separated GPU ids: one worker process per GPU (e.g. 0,1).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--check", is_flag=True,
              help="Exit 0 if a worker process of this host has a live heartbeat in Redis, else 1 (a healthcheck).")
def worker(gpus: str | None, loglevel: str, check: bool) -> None:
    """Run a worker (needs DREAMQ_REDIS_URL or DREAMQ_REDIS_SENTINELS; `dreamq up` sets everything up).

    The same as `celery -A worker worker -Q dreamq`, which Celery's own tools understand.
    """
    if check:
        _check_worker()
    _need_worker_extra("worker")
    _quiet_tensorflow()
    from shared.settings import get_settings
    from dreamq.supervisor import supervise_gpus
    from worker.main import run_worker

    settings = get_settings()
    if not settings.has_redis:
        _fail(NO_REDIS)
    if gpus:
        sys.exit(supervise_gpus([g.strip() for g in gpus.split(",") if g.strip()]))
    run_worker(settings, device=os.environ.get("DREAMQ_DEVICE", "cpu"), loglevel=loglevel)


@main.command()
@click.option("--loglevel", default="INFO", show_default=True)
def webhooks(loglevel: str) -> None:
    """Run the webhook delivery process (needs DREAMQ_REDIS_URL or DREAMQ_REDIS_SENTINELS, and DREAMQ_WEBHOOK_SECRET).

    The same as `celery -A dreamq.delivery worker -Q dreamq.webhooks`; no Keras, no GPU.
    """
    import logging

    from shared.settings import get_settings

    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError: a malformed secret, named but never shown
        _fail(str(exc))
    if not settings.has_redis:
        _fail(NO_REDIS)
    if settings.webhook_secret is None:
        click.echo("warning: DREAMQ_WEBHOOK_SECRET is not set: the web refuses jobs with a webhook", err=True)
    logging.basicConfig(level=loglevel, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from dreamq.delivery import QUEUE, create_app

    # One per host (compose: per container), so the node name is fixed: the healthcheck pings it.
    create_app(settings).worker_main(["worker", "-Q", QUEUE, "-n", "dreamq-webhooks@%h", f"--loglevel={loglevel}"])


@main.command()
@click.argument("who", required=False)
@click.argument("weight", required=False, type=click.FloatRange(min=0, min_open=True))
@click.option("--address", is_flag=True, help="WHO is a client address (open mode: no tokens), not a token.")
def share(who: str | None, weight: float | None, address: bool) -> None:
    """Set a token's share of the workers: WEIGHT 3 gets three jobs started for each one of a token at 1
    (the default), whenever both have jobs queued.  Without WEIGHT, show WHO's; without WHO, every
    weight set (by owner id: the token's hash, never the token).

    Needs the service's Redis (DREAMQ_REDIS_URL, DREAMQ_REDIS_SENTINELS, or `dreamq up`'s data dir).
    """
    from shared.jobs import Jobs
    from shared.redis_client import NoRedis, connect
    from shared.settings import get_settings
    from web.auth import token_hash

    try:
        jobs = Jobs(connect(get_settings(), socket_timeout=5, socket_connect_timeout=5))
    except NoRedis as exc:
        _fail(str(exc))
    weights = jobs.weights()
    if who is None:
        for owner, w in sorted(weights.items()):
            click.echo(f"{owner}\t{w:g}")
        return
    key = who if address else token_hash(who)
    if weight is not None:
        jobs.set_weight(key, weight)
        weights = jobs.weights()
    click.echo(f"{key}\t{weights.get(key, 1.0):g}")


def _check_worker() -> None:
    """`dreamq worker --check`: the image's HEALTHCHECK (docker/healthcheck.py), no Keras needed."""
    from shared.workers import local_worker_problem

    problem = local_worker_problem()
    if problem:
        click.echo(f"unhealthy: {problem}")
        sys.exit(1)
    click.echo("healthy: a worker process of this host has a live heartbeat")
    sys.exit(0)


@main.command(name="up")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(0, 64), help="Worker processes.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Store, embedded Redis and logs [$DREAMQ_DATA_DIR or ./data].")
def up_command(host: str, port: int, workers: int, data_dir: Path | None) -> None:
    """Run the whole service: embedded Redis (unless DREAMQ_REDIS_URL or DREAMQ_REDIS_SENTINELS), web, workers."""
    if workers:
        _need_worker_extra("up", hint=", or `dreamq up --workers 0` for the web alone")
    from dreamq.up import up

    sys.exit(up(host, port, workers, data_dir))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--debug", is_flag=True, help="Flask's debugger and reloader (never on a public address).")
def web(host: str, port: int, debug: bool) -> None:
    """Run the web front end with Flask's development server (production: gunicorn 'web:create_app()')."""
    from web import create_app

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    create_app().run(host=host, port=port, debug=debug, threaded=True)


def _register_commands() -> None:
    from dreamq.client import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register_commands()

if __name__ == "__main__":
    main()
