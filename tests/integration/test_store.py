"""The store: local files by default, S3 for workers on other hosts (moto's real S3 server)."""
import uuid

import pytest

from shared.store import Store, StoreError
from shared.kinds.image import INPUT, RESULT


def test_file_store_round_trip(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    job = str(uuid.uuid4())
    url = store.put(job, RESULT, b"png bytes")
    assert url == f"file://{tmp_path}/store/{job}/result.png"
    assert store.get(job, RESULT) == b"png bytes" and store.get(job, INPUT) is None
    assert not list((tmp_path / "store" / job).glob("*.tmp"))
    store.delete(job)
    assert store.get(job, RESULT) is None


def test_keys_are_job_uuids_only(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    for bad in ("../etc", "a/b", "x" * 40):
        with pytest.raises(ValueError):
            store.put(bad, RESULT, b"x")
    assert not any(tmp_path.parent.glob("etc*"))


def test_names_with_folders_and_streaming_reads(tmp_path):
    store = Store(f"file://{tmp_path}/store")
    job = str(uuid.uuid4())
    assert store.put(job, "frames/00003.png", b"frame") == f"file://{tmp_path}/store/{job}/frames/00003.png"
    assert store.get(job, "frames/00003.png") == b"frame" and store.exists(job, "frames/00003.png")
    assert not store.exists(job, "frames/00004.png") and store.size(job, "frames/00004.png") is None
    assert not list((tmp_path / "store" / job / "frames").glob("*.tmp"))
    big = tmp_path / "video.mp4"
    big.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    assert store.put_file(job, "result.mp4", str(big)).endswith(f"/{job}/result.mp4")
    assert store.size(job, "result.mp4") == 1 << 20 and not list((tmp_path / "store" / job).glob("*.tmp"))
    with store.open(job, "result.mp4") as f:  # a range read: seek, read what is asked
        f.seek(1000)
        assert f.read(4) == bytes([1000 % 256, 1001 % 256, 1002 % 256, 1003 % 256])
    assert store.open(job, "result.webm") is None
    for bad in ("../x.png", "frames/../../x", "/etc/passwd", "a//b", "./a", "a\\b"):
        with pytest.raises(ValueError):
            store.put(job, bad, b"x")
    store.delete(job)
    assert not (tmp_path / "store" / job).exists()


def test_unwritable_store_raises_store_error(tmp_path):
    (tmp_path / "store").write_text("a file where the store directory should be")
    with pytest.raises(StoreError):
        Store(f"file://{tmp_path}/store").put(str(uuid.uuid4()), RESULT, b"x")


@pytest.fixture
def s3(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"DREAMQ_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="dreams")
    yield env
    server.stop()


def _s3_store(env):
    from shared.settings import Settings
    from shared.store import open_store

    return open_store(Settings(store_url="s3://dreams/jobs", s3_endpoint_url=env["DREAMQ_S3_ENDPOINT_URL"]))


def test_s3_store_round_trip(s3, tmp_path):
    store = _s3_store(s3)
    job = str(uuid.uuid4())
    assert store.put(job, RESULT, b"\x89PNG...") == f"s3://dreams/jobs/{job}/result.png"
    assert _s3_store(s3).get(job, RESULT) == b"\x89PNG..."
    store.put(job, "frames/00000.png", b"frame 0")
    assert store.exists(job, "frames/00000.png") and not store.exists(job, "frames/00001.png")
    local = tmp_path / "v.webm"
    local.write_bytes(b"0123456789" * 1000)
    store.put_file(job, "result.webm", str(local))
    assert store.size(job, "result.webm") == 10_000 and store.size(job, "result.mp4") is None
    with store.open(job, "result.webm") as f:
        f.seek(9995)
        assert f.read() == b"56789"
    store.delete(job)
    assert _s3_store(s3).get(job, RESULT) is None and not store.exists(job, "frames/00000.png")


def test_a_job_through_a_worker_with_the_s3_store(s3, clean_redis, redis_url, tmp_path, tiny_photo):
    from ..conftest import QUICK, Service

    svc = Service(redis_url, tmp_path, {"DREAMQ_STORE_URL": "s3://dreams/jobs", **s3})
    try:
        svc.start_worker()
        job = svc.wait(svc.submit(tiny_photo, **QUICK))
        assert job.status == "succeeded", job.error
        assert job.result_url.startswith("s3://dreams/jobs/")
        assert svc.store.get(job.id, RESULT)[:8] == b"\x89PNG\r\n\x1a\n"
        assert not (tmp_path / "store").exists()  # nothing went to local disk
    finally:
        svc.stop()
