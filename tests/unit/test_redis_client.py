"""shared/redis_client.py: which Redis each process reaches, and how Celery and the rate limits are told.
No server: nothing here connects (tests/system/test_failover.py does, against a real sentinel)."""
import pytest
from pydantic import ValidationError
from redis.sentinel import SentinelConnectionPool

from shared.redis_client import celery_broker, connect, describe, sentinel_addresses
from shared.settings import Settings


def settings(**kw) -> Settings:
    return Settings(_env_file=None, **kw)


def test_sentinels_are_parsed_and_checked_at_start(monkeypatch):
    monkeypatch.setenv("DREAMQ_REDIS_SENTINELS", "s1:26380, s2 ,[::1]:26381")
    s = Settings(_env_file=None)
    assert s.redis_sentinels == ["s1:26380", "s2", "[::1]:26381"]
    assert sentinel_addresses(s) == [("s1", 26380), ("s2", 26379), ("::1", 26381)]
    assert s.redis_master == "mymaster" and s.has_redis
    for bad in ("s1:port", "s1:0", ":26379"):
        with pytest.raises(ValidationError, match="DREAMQ_REDIS_SENTINELS"):
            settings(redis_sentinels=bad)


def test_an_empty_password_is_none(monkeypatch):
    monkeypatch.setenv("DREAMQ_REDIS_PASSWORD", "")
    monkeypatch.setenv("DREAMQ_REDIS_SENTINEL_PASSWORD", "")
    s = Settings(_env_file=None, redis_sentinels="s1")
    assert s.redis_password is None and s.redis_sentinel_password is None
    assert "password" not in connect(s).connection_pool.connection_kwargs


def test_has_redis_and_wait_replicas_defaults():
    assert not settings().has_redis
    assert settings(redis_url="redis://r:6379/0").has_redis
    assert settings().wait_replicas == 0
    assert settings(redis_sentinels="s1:26379").wait_replicas == 1
    assert settings(redis_sentinels="s1:26379", redis_wait_replicas=0).wait_replicas == 0
    assert settings(redis_url="redis://r/0", redis_wait_replicas=2).wait_replicas == 2


def test_sentinels_take_precedence_over_the_url():
    s = settings(redis_url="redis://:urlpw@plain:6379/3", redis_sentinels="s1:26379,s2:26380", redis_master="dq",
                 redis_password="serverpw", redis_sentinel_password="sentinelpw")
    client = connect(s, socket_timeout=3)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "dq" and pool.is_master
    assert pool.connection_kwargs["password"] == "serverpw" and pool.connection_kwargs["socket_timeout"] == 3
    sentinels = pool.sentinel_manager.sentinels
    assert [(c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
            for c in sentinels] == [("s1", 26379), ("s2", 26380)]
    assert sentinels[0].connection_pool.connection_kwargs["password"] == "sentinelpw"
    assert "urlpw" not in describe(s) and "serverpw" not in describe(s) and "'dq'" in describe(s)


def test_without_sentinels_the_url_then_the_embedded_redis(tmp_path):
    client = connect(settings(redis_url="redis://plain:6390/2"), socket_timeout=3)
    kw = client.connection_pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["db"], kw["socket_timeout"]) == ("plain", 6390, 2, 3)
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "port").write_text("6401")
    kw = connect(settings(data_dir=tmp_path)).connection_pool.connection_kwargs
    assert (kw["host"], kw["port"]) == ("127.0.0.1", 6401)
    with pytest.raises(RuntimeError, match="DREAMQ_REDIS_SENTINELS"):
        connect(settings(data_dir=tmp_path / "none"))
    assert describe(settings(redis_url="redis://:pw@plain:6390/2")) == "redis://:**@plain:6390/2"


def test_celery_gets_kombu_sentinel_urls_and_the_master_name():
    from shared.queue import broker_url, make_celery

    s = settings(redis_url="redis://plain:6379/0", redis_sentinels="s1:26379,[::1]:26380", redis_master="dq",
                 redis_password="p@ss;word", redis_sentinel_password="sp")
    url, options = celery_broker(s)
    assert url == "sentinel://:p%40ss%3Bword@s1:26379/0;sentinel://:p%40ss%3Bword@[::1]:26380/0"
    assert broker_url(s) == url
    assert options["master_name"] == "dq" and options["sentinel_kwargs"]["password"] == "sp"
    app = make_celery(s)
    transport = app.conf.broker_transport_options
    assert transport["master_name"] == "dq" and transport["visibility_timeout"] == s.visibility_timeout_s
    # kombu reads it as its Sentinel transport, one alternative per sentinel.
    with app.connection_for_write() as conn:
        assert conn.transport_cls == "sentinel" and len(conn.alt) == 2
        assert conn.transport.Channel.__name__ == "SentinelChannel"
    # Without sentinels, the URL as it is, and no Sentinel options.
    plain = make_celery(settings(redis_url="redis://plain:6379/0"))
    assert plain.conf.broker_url == "redis://plain:6379/0"
    assert "master_name" not in plain.conf.broker_transport_options


def test_the_rate_limits_count_on_the_sentinels_master(tmp_path):
    from web import create_app

    app = create_app(settings(redis_sentinels="s1:26379", redis_master="dq", data_dir=tmp_path,
                              rate_limit_per_minute=5))
    storage = app.extensions["dreamq.limiter"]._storage
    pool = storage.storage.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "dq" and pool.is_master


@pytest.mark.parametrize("error", [
    "READONLY You can't write against a read only replica.",
    "ERR Error running script (call to f_0123): @user_script:3: -READONLY You can't write against a read only replica.",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "NOREPLICAS Not enough good replicas to write.",
    "master-not-found",
])
def test_a_failover_answers_503_with_retry_after_never_500(tmp_path, error):
    from redis._parsers.base import BaseParser
    from redis.sentinel import MasterNotFoundError

    from web import create_app

    app = create_app(settings(redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path))
    # As redis-py's parser makes them from the server's answer.
    exc = MasterNotFoundError("No master found for 'mymaster'") if error == "master-not-found" else \
        BaseParser.parse_error(error)

    @app.get("/api/v1/boom")
    def boom():
        raise exc

    r = app.test_client().get("/api/v1/boom")
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
    assert r.get_json()["error"]["code"] == "redis_unavailable"


def test_another_redis_error_is_still_a_500(tmp_path):
    import redis

    from web import create_app

    app = create_app(settings(redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path))

    @app.get("/api/v1/boom")
    def boom():
        raise redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    assert app.test_client().get("/api/v1/boom").status_code == 500
