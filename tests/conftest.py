import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

# The harness lives in bench/cluster.py (tests import bench, never the other way);
# tests import these three from here too.
from bench.cluster import ROOT, SAMPLE, Service  # noqa: E402, F401


LAYERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(items):
    """Each test is marked with its layer, the folder it lives in: `-m unit` runs the fast layer.

    Modules with a `slow` test go first (in their own order): under pytest-xdist, a minute-long
    module started last would leave the other workers idle at the end."""
    for item in items:
        layer = item.path.parent.name
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photograph (NASA, public domain), 512x512 RGB."""
    return np.asarray(Image.open(SAMPLE).convert("RGB"))


@pytest.fixture(scope="session")
def small_photo(photo) -> np.ndarray:
    """The photo at 216x288: just above the seed's minimum for 3 octaves of mixed4..7."""
    return np.asarray(Image.fromarray(photo).resize((288, 216), Image.LANCZOS))


@pytest.fixture(scope="session")
def inception_weights_file(tmp_path_factory) -> Path:
    """InceptionV3 with dreamq's fixed-seed random weights, saved as an ordinary weights file."""
    from worker.models import load_model

    path = tmp_path_factory.mktemp("weights") / "inception_v3_random.weights.h5"
    load_model("inception_v3", "random").network.save_weights(str(path))
    return path


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis: $DREAMQ_TEST_REDIS_URL if set (flushed first), else the embedded one."""
    import redis

    url = os.environ.get("DREAMQ_TEST_REDIS_URL")
    if url:
        redis.Redis.from_url(url).flushdb()
        yield url
        return
    from dreamq.redis_server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def clean_redis(redis_url):
    """The shared Redis, emptied before the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return client


@pytest.fixture
def service(clean_redis, redis_url, tmp_path):
    """Start workers with ``service.start_worker()``; they are stopped after the test."""
    svc = Service(redis_url, tmp_path, {})
    yield svc
    svc.stop()


@pytest.fixture
def live_worker(service):
    """One ready worker (vgg16_hed loaded; inception_v3 unavailable: no weights file)."""
    service.start_worker()
    return service


@pytest.fixture(scope="session")
def tiny_photo(photo) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).resize((96, 96), Image.LANCZOS))


@pytest.fixture
def app_settings() -> dict:
    """Settings of the ``app`` fixture beyond the test Redis and data dir: a module (or a test)
    that needs others overrides this fixture, never ``app`` itself."""
    return {}


@pytest.fixture
def app(clean_redis, redis_url, tmp_path, app_settings):
    """The web app (the app factory, as gunicorn runs it) on the emptied test Redis."""
    from .webutil import make_app

    return make_app(redis_url, tmp_path, **app_settings)


@pytest.fixture
def client(app):
    """The Flask test client of ``app``."""
    return app.test_client()


@pytest.fixture(scope="module")
def jpeg(photo) -> bytes:
    from .webutil import encode

    return encode(photo, "JPEG", quality=90)


# Small, fast jobs for the queue tests: one VGG layer that works from 32 px.
QUICK = {"model": "vgg16_hed", "layers": "block3_conv3=1", "octaves": 2, "iterations": 4}
