"""The wheel is complete: built from the sources, installed into a fresh venv
without the source tree on the path, it serves the form and its scripts.

Installing the dependencies afresh would take minutes.  The fresh venv sees
the tested venv's packages instead, through a directory of links to those that
the core install has (the web image's: `dreamq[s3,flower]`, no Keras or
TensorFlow), named in a .pth file.  Python adds a directory named in a .pth file
to sys.path but reads no .pth files inside it, so the tested venv's editable
install of dreamq (a .pth file and its finder) stays out: the tests check that
the code comes from the fresh venv.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import requests

from ..conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Top-level package folders (subpackages such as shared.kinds are listed too, and copied with their parent).
# The top-level packages: the include patterns of [tool.setuptools.packages.find] ("web*" -> web).
PACKAGES = [p.rstrip("*") for p in PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
WEB_IMAGE_EXTRAS = ["s3", "flower"]  # the Dockerfile's web target; tests/system/test_compose.py checks it


def _constraints_module():
    spec = importlib.util.spec_from_file_location("dreamq_ci_constraints", ROOT / ".ci" / "constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _source_files() -> set[str]:
    """Every file of the packages in the source tree, as wheel paths (no bytecode)."""
    return {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of what the Dockerfile copies (no build/ in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheels")
    # No build isolation: setuptools from this venv, so no download is needed.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(src)], check=True, capture_output=True, cwd=src)
    (path,) = out.glob("dreamq-*.whl")
    return path


def _core_packages_dir(where: Path) -> Path:
    """Links to the tested venv's entries of the core install's distributions, and nothing else."""
    constraints = _constraints_module()
    found, missing = constraints.closure(constraints.root_requirements(WEB_IMAGE_EXTRAS))
    assert missing <= {"flower"}, f"core dependencies missing from the tested venv: {missing}"
    where.mkdir()
    for dist in found.values():
        for top in {Path(f).parts[0] for f in dist.files or []}:
            target = Path(dist.locate_file(top))
            if top not in ("..", "__pycache__") and target.exists() and not (where / top).exists():
                (where / top).symlink_to(target)
    return where


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh venv holding the wheel, over the core dependencies only."""
    tmp = tmp_path_factory.mktemp("installed")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = _core_packages_dir(tmp / "core-deps")
    Path(site, "dreamq-test-deps.pth").write_text(f"{deps}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # Run from a directory that is neither the source tree nor the venv.
    cwd = tmp / "cwd"
    cwd.mkdir()
    return {"venv": venv, "python": python, "site": Path(site), "env": env, "cwd": cwd}


def test_the_wheel_holds_templates_static_files_and_samples(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _source_files() - names
    assert not missing, f"files of the source tree missing from the wheel: {sorted(missing)}"
    assert {"web/templates/index.html", "web/static/form.js", "dreamq/samples/astronaut.jpg"} <= names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"dreamq = dreamq.cli:main" in entry_points


def test_the_installed_copy_runs_from_the_fresh_venv_without_keras(installed):
    probe = (
        "import json, sys, importlib.util\n"
        "import web, shared, dreamq, worker\n"
        "from dreamq.cli import SAMPLE\n"
        "web.create_app()\n"
        "print(json.dumps({'files': [m.__file__ for m in (web, shared, dreamq, worker)], 'path': sys.path,\n"
        "    'sample': str(SAMPLE), 'sample_exists': SAMPLE.is_file(),\n"
        "    'finders': [type(f).__module__ for f in sys.meta_path],\n"
        "    'keras': importlib.util.find_spec('keras') is not None,\n"
        "    'tensorflow': importlib.util.find_spec('tensorflow') is not None,\n"
        "    'imported': sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules)}))\n"
    )
    out = subprocess.run([str(installed["python"]), "-c", probe], env=installed["env"], cwd=installed["cwd"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    for path in seen["files"] + [seen["sample"]]:
        assert Path(path).is_relative_to(installed["site"]), f"{path} is not the installed copy"
    assert seen["sample_exists"]
    # '' is the working directory (python -c), a temporary one.
    assert not any(Path(p or installed["cwd"]).resolve().is_relative_to(ROOT) for p in seen["path"]), seen["path"]
    assert not any("editable" in module for module in seen["finders"]), seen["finders"]
    # The core install, as in the web image: no Keras or TensorFlow to import at all.
    assert not seen["keras"] and not seen["tensorflow"] and seen["imported"] == []


def test_the_installed_wheel_serves_the_form_and_its_script(installed, redis_url, tmp_path):
    env = {**installed["env"], "DREAMQ_REDIS_URL": redis_url, "DREAMQ_DATA_DIR": str(tmp_path / "data")}
    # Gunicorn in the fresh venv, as the web image runs it, on a socket bound
    # here: requests wait in its backlog until the server accepts, no polling.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    # The serving process says where its app's code comes from.
    config = tmp_path / "gunicorn_conf.py"
    config.write_text("import sys\n\ndef post_worker_init(worker):\n"
                      "    print('web package:', sys.modules['web'].__file__, flush=True)\n")
    server = subprocess.Popen(
        # `python -m`: the gunicorn script is not in the fresh venv, its package is.  No control
        # socket: its default path is one per $HOME, shared with any other gunicorn running.
        [str(installed["python"]), "-m", "gunicorn", "--bind", f"fd://{listener.fileno()}", "--workers", "1",
         "--config", str(config), "--no-control-socket", "web:create_app()"],
        pass_fds=[listener.fileno()], env=env, cwd=installed["cwd"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    listener.close()  # the server holds it now: if it dies, requests fail at once
    base = f"http://127.0.0.1:{port}"
    try:
        page = requests.get(base + "/", timeout=60)
        assert page.status_code == 200, page.text
        assert 'id="dream-form"' in page.text and 'enctype="multipart/form-data"' in page.text
        scripts = re.findall(r'<script[^>]* src="(/static/[^"?]+\.js)', page.text)
        assert scripts, page.text
        for src in scripts:
            script = requests.get(base + src, timeout=60)
            assert script.status_code == 200
            assert "javascript" in script.headers["Content-Type"]
            assert script.content == (ROOT / "web" / src.lstrip("/")).read_bytes()
        # The web image's HEALTHCHECK, against this server.
        health = subprocess.run([str(installed["python"]), str(ROOT / "docker" / "healthcheck.py"), "web",
                                 f"{base}/healthz"], env=env, cwd=installed["cwd"], capture_output=True, text=True)
        assert health.returncode == 0, health.stdout + health.stderr
    finally:
        server.terminate()
        log, _ = server.communicate(timeout=60)
        print(log)  # pytest shows it when the test fails
    assert "Traceback" not in log, log
    assert f"web package: {installed['site'] / 'web' / '__init__.py'}" in log, log


@pytest.mark.parametrize("args", [["worker"], ["dream"], ["weights"], ["up", "--workers", "1"]])
def test_model_commands_without_the_worker_extra_say_what_to_install(installed, args):
    out = subprocess.run([str(installed["venv"] / "bin" / "dreamq"), *args], env=installed["env"],
                         cwd=installed["cwd"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "pip install 'dreamq[worker]'" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_constraints_pin_the_tested_versions():
    """constraints.txt is what `make constraints` writes from this venv: the versions tested here."""
    generated = subprocess.run([sys.executable, str(ROOT / ".ci" / "constraints.py")], check=True,
                               capture_output=True, text=True).stdout
    committed = (ROOT / "constraints.txt").read_text()

    def pins(text):
        return sorted(line for line in text.splitlines() if line and not line.startswith("#"))

    assert pins(committed) == pins(generated), (
        "constraints.txt differs from this venv's versions: after changing dependencies, run `make constraints`")
    # Every run-time dependency that is installed here is pinned, dreamq's own extras included.
    assert {"flask", "celery", "tensorflow", "keras", "numpy"} <= {p.split("==")[0] for p in pins(committed)}
