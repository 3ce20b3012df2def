"""Settings from the environment (``DREAMQ_*``), one object for web, worker and CLI."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated
from pydantic import field_validator


MIN_TOKEN_LENGTH = 32


class Settings(BaseSettings):
    # hide_input_in_errors: a refused token (or a URL with a password) never reaches a log.
    # Every field's description is its line in docs/CONFIGURATION.md (python -m dreamq.configuration).
    model_config = SettingsConfigDict(env_prefix="DREAMQ_", extra="ignore", hide_input_in_errors=True)

    # Where things live.
    redis_url: str | None = Field(None, description=(
        "The Redis that holds the queue and the job records: `redis://[:password@]host:port/db`. "
        "None: `dreamq up` starts an embedded Redis (append-only file in the data directory). "
        "DREAMQ_REDIS_SENTINELS, when set, wins over it."))
    # Redis Sentinel (shared/redis_client.py): the sentinels name the master; a failover moves it.
    redis_sentinels: Annotated[list[str], NoDecode] = Field([], description=(
        "Redis Sentinel instead of one server: `host:port,host:port` (port 26379 when left out). When set, "
        "web, workers, webhook delivery and the CLI ask these sentinels for the master of "
        "DREAMQ_REDIS_MASTER (Celery through its `sentinel://` transport), and DREAMQ_REDIS_URL is ignored."))
    redis_master: str = Field("mymaster", min_length=1, description=(
        "The name the sentinels monitor the Redis master under (`sentinel monitor <name> ...`); "
        "only with DREAMQ_REDIS_SENTINELS."))
    redis_password: SecretStr | None = Field(None, description=(
        "The password of the Redis servers the sentinels name (their `requirepass`); only with "
        "DREAMQ_REDIS_SENTINELS (a plain server's goes in DREAMQ_REDIS_URL)."))
    redis_sentinel_password: SecretStr | None = Field(None, description=(
        "The password of the sentinels themselves (`requirepass` in sentinel.conf), if they have one."))
    redis_wait_replicas: int | None = Field(None, ge=0, description=(
        "Replicas that must hold a new job's record (Redis `WAIT`) before the submit is answered 202, so a "
        "failover right after it loses no accepted job. None: 1 with DREAMQ_REDIS_SENTINELS, else 0 (no wait)."))
    redis_wait_timeout_ms: int = Field(500, ge=1, description=(
        "Milliseconds a submit waits for those replicas; past it the job is kept and queued anyway, with a "
        "warning in the web's log (a replica that is down must not stop submissions)."))
    data_dir: Path = Field(Path("data"), description=(
        "The embedded Redis's files, the default store and the webhook secret `dreamq up` makes "
        "(relative to the working directory; `dreamq up --data-dir` overrides it)."))
    store_url: str | None = Field(None, description=(
        "Where images live: `file://...` or `s3://bucket/prefix` (for workers on many hosts). "
        "None: `file://<data dir>/store`."))
    s3_endpoint_url: str | None = Field(None, description=(
        "An S3-compatible server (MinIO, Ceph) instead of AWS, for an `s3://` store."))

    # Jobs.
    job_ttl_s: int = Field(7 * 24 * 3600, ge=60, description=(
        "Seconds until job records and their files expire (604800: 7 days); idempotency keys live as "
        "long, and at least 24 h."))
    job_time_limit_s: int = Field(3600, ge=1, description=(
        "A running job fails with `timeout` past this many seconds."))
    max_attempts: int = Field(3, ge=1, description=(
        "Starts of a job whose worker is lost (its heartbeat expired) before the job fails with `worker_lost`."))
    max_queued: int = Field(1000, ge=1, description=(
        "Above this many queued jobs, submissions get 503 with `Retry-After`."))
    batch: int = Field(1, ge=1, le=64, description=(
        "A free worker takes up to this many queued jobs of one model, picture shape and step parameters "
        "(kind image; no jitter, tiles or guide) in fair order and dreams them as one batch; each keeps its "
        "own progress, previews, cancel and attempts. 1: one job at a time."))
    progress_interval_s: float = Field(0.25, ge=0, description=(
        "A worker writes a job's progress at most once per this many seconds (0.25: 4 a second)."))
    # Zoom videos (kind=zoom): so that no single video holds a worker for hours: the default
    # InceptionV3 frame took 10-15 s at 640x480 on a shared 2-core CPU (10-15 minutes); on a GPU, seconds.
    zoom_max_work: int = Field(60 * 640 * 480, ge=1, description=(
        "Frame pixels (frames × height × width) of one zoom video; above it a submit is a 422 naming "
        "`frames` and the most frames allowed at that size. The default is 60 frames of 640×480; a GPU "
        "deployment raises it (600 frames of 640×480: 184320000)."))

    # Workers.
    models: Annotated[list[str], NoDecode] = Field(["inception_v3", "vgg16_hed"], description=(
        "Models a worker loads and warms before it takes jobs (comma-separated)."))
    # The fault-injection tests load bench.crash_plugin this way.
    plugins: Annotated[list[str], NoDecode] = Field([], description=(
        "Modules a worker imports at start (comma-separated), e.g. ones that subscribe to the "
        "lifecycle signals of shared/jobs.py."))
    heartbeat_s: float = Field(2.0, gt=0, description="Seconds between a worker's heartbeats in Redis.")
    heartbeat_ttl_s: float = Field(8.0, gt=0, description=(
        "A worker silent this many seconds is lost; its job runs again."))
    tile_above_pixels: int = Field(4_000_000, ge=0, description=(
        "Images with more pixels than this are dreamed tile by tile (bounded memory); 0: never."))
    tile_size: int = Field(512, ge=256, description="The side of those tiles, in pixels.")
    shape_buckets: int | None = Field(None, ge=0, description=(
        "Shape buckets, in pixels: each octave's image is padded up to the next multiple of this on each side "
        "(the loss masked to the real pixels, the result cropped back), so that a handful of compiled shapes "
        "serve photos of every size. 0: off, every shape exactly the seed's. Unset: 64 on the JAX backend, "
        "where each new shape compiles; off on TensorFlow, whose one graph takes any size (and keeps the "
        "seed's output exactly). docs/PERFORMANCE.md says what they change."))
    compile_cache: Path | None = Field(None, description=(
        "JAX's persistent compilation cache: compiled steps kept on disk, so that a restarted worker does "
        "not compile a shape it has seen. Unset: `<DREAMQ_DATA_DIR>/jax-cache`. Only the JAX backend "
        "compiles per shape."))
    intra_op_threads: int = Field(0, ge=0, description=(
        "TensorFlow threads within one operation, to cap a worker's CPU use on a shared host; "
        "0: the framework decides."))
    inter_op_threads: int = Field(0, ge=0, description=(
        "TensorFlow threads running operations side by side; 0: the framework decides."))
    bf16: Literal["auto", "on", "off"] = Field("auto", description=(
        "Jobs asking for `precision=bf16`: `auto` runs them in bf16 only where the device has native "
        "bf16 (else in fp32, with a warning on the job); `off`: never; `on`: always (trusts the operator)."))

    # Web.
    max_content_length: int = Field(20 * 1024 * 1024, description=(
        "Bytes of one request body (20 MiB); larger uploads are refused with 413."))
    max_pixels: int = Field(40_000_000, description=(
        "Pixels of one image (40 Mpx), checked from its header before any decoding; larger: 413."))
    api_tokens: Annotated[list[str], NoDecode] = Field([], description=(
        "Bearer tokens (comma-separated, each at least 32 characters: a shorter one stops the start-up). "
        "When set, the API requires one, and each token sees only the jobs it created."))
    rate_limit_per_minute: int = Field(0, ge=0, description=(
        "Submissions per client per minute, then 429 with `Retry-After` (counted in Redis: all web "
        "processes share it); 0: off."))
    proxy_hops: int = Field(0, ge=0, description=(
        "Reverse proxies in front of the web whose `X-Forwarded-*` headers are trusted; with 1 or more, "
        "gunicorn must be reachable only through them."))
    allowed_hosts: Annotated[list[str], NoDecode] = Field([], description=(
        "Host names the web answers besides `localhost` and IP addresses (comma-separated; "
        "`.example.com` for a domain and its subdomains, `*` for any); another `Host` gets 400 "
        "`bad_host` (web/hosts.py: DNS rebinding)."))
    events_max_s: float = Field(300.0, gt=0, description=(
        "An event stream (`/api/v1/jobs/{id}/events`) ends after this many seconds; EventSource reconnects."))
    # Uploads: Werkzeug's own multipart limits, set explicitly so a 413 can name the one hit.
    max_form_parts: int = Field(100, ge=1, description=(
        "Multipart parts (fields and files) per request; more: 413 naming the limit."))
    # Werkzeug also applies it to each 64 KiB read of the body: keep it well above that.
    max_form_memory_size: int = Field(500_000, ge=256 * 1024, description=(
        "Bytes of one text field of a multipart form; more: 413 naming the limit."))
    # Each decode of 40 Mpx takes up to ~0.5 GB. 8 hostile uploads against 2 processes peaked at
    # 0.98 GB a process with 1, 1.38 GB with 2.
    max_decodes: int = Field(1, ge=1, description=(
        "Concurrent decodes of images over ~2 Mpx per web process; the others wait."))
    decode_wait_s: float = Field(10.0, ge=0, description=(
        "Seconds an upload waits for a decode slot, then 503 with `Retry-After`."))
    # 12 s for 40 Mpx: ten times what the busiest 40 Mpx JPEG took.
    decode_budget_s: float = Field(2.0, gt=0, description=(
        "CPU seconds one image's decoding may take, plus 0.25 s per megapixel (shared/images.py), then "
        "422 `image_too_complex` (so are JPEGs of more than 64 scans, refused from their markers)."))
    max_queued_per_client: int = Field(0, ge=0, description=(
        "Queued jobs per client (keyed like the rate limit), then 429 `too_many_queued`; 0: off."))
    cache_shared: bool = Field(False, description=(
        "The result cache (shared/cache.py) answers each token from its own jobs only; true shares it "
        "across tokens, for a public deployment (a hit then tells that someone already sent the photo, "
        "but never shows another token's job id)."))

    # Webhooks (shared/webhooks.py and the delivery process).
    webhook_secret: SecretStr | None = Field(None, description=(
        "Signs webhook deliveries (Standard Webhooks: `whsec_` + base64 of 24-64 random bytes); checked "
        "at start. Without one, a submit that names a webhook is a 422; `dreamq up` makes one in the "
        "data directory when none is set."))
    webhook_allow_private: bool = Field(False, description=(
        "Deliver webhooks to loopback and private addresses too (local setups, tests)."))
    webhook_max_attempts: int = Field(6, ge=1, le=20, description="Attempts per event, the first one included.")
    webhook_retry_base_s: float = Field(10.0, gt=0, description=(
        "Seconds before an event's 2nd attempt; ×4 each time after (±20 % jitter)."))
    webhook_timeout_s: float = Field(5.0, gt=0, le=30, description=(
        "Seconds to connect to a receiver, and for each read of its answer."))
    webhook_attempt_s: float = Field(15.0, gt=0, le=300, description=(
        "Seconds for the whole of one attempt (resolve, connect, send, read the answer): a receiver that "
        "sends a byte now and then resets the per-read timeout, never this."))
    webhook_per_origin: int = Field(2, ge=0, description=(
        "Attempts in flight to one receiver origin (scheme, host, port), across delivery processes; "
        "0: no limit."))
    webhook_progress_interval_s: float = Field(5.0, ge=0, description=(
        "At most one `progress` (and one `output`) event per job per this many seconds."))
    webhook_concurrency: int = Field(8, ge=1, description="Deliveries in flight per delivery process.")

    # Tokens and sessions (web/auth.py).
    admin_tokens: Annotated[list[str], NoDecode] = Field([], description=(
        "Tokens (comma-separated, each at least 32 characters) that see, read and cancel every job; "
        "other tokens see only their own."))
    login_max_failures: int = Field(10, ge=1, description=(
        "Failed page logins per address per window, then 429 with `Retry-After` (counted in Redis)."))
    login_window_s: int = Field(300, ge=1, description="The window of those failed logins, in seconds.")

    @field_validator("models", "plugins", "api_tokens", "admin_tokens", "allowed_hosts", "redis_sentinels",
                     mode="before")
    @classmethod
    def _comma_list(cls, v):
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("api_tokens", "admin_tokens")
    @classmethod
    def _long_tokens(cls, v: list[str], info):
        # A short token can be guessed; the message names the variable, never the token.
        if any(len(t) < MIN_TOKEN_LENGTH for t in v):
            raise ValueError(f"DREAMQ_{info.field_name.upper()}: every token must be at least {MIN_TOKEN_LENGTH} "
                             "characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        return v

    @field_validator("redis_sentinels")
    @classmethod
    def _host_ports(cls, v: list[str]) -> list[str]:
        # Checked at start: a typo fails the process, not every connection.
        for entry in v:
            host, _, port = entry.rpartition(":") if ":" in entry else (entry, "", "26379")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"DREAMQ_REDIS_SENTINELS: {entry!r} is not host:port")
        return v

    @field_validator("redis_password", "redis_sentinel_password", mode="before")
    @classmethod
    def _empty_is_none(cls, v):
        # Empty (compose's `${DREAMQ_REDIS_PASSWORD:-}`) means none, not an empty AUTH.
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        return None if v is None or (isinstance(v, str) and not v) else v

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _webhook_secret(cls, v):
        # Checked at start, so that a typo fails the process, not every delivery; never echoed.
        # Empty (compose's `${DREAMQ_WEBHOOK_SECRET:-}`) means none.
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        from .signing import check_secret

        check_secret(v)
        return v

    @property
    def has_redis(self) -> bool:
        """A Redis is configured: DREAMQ_REDIS_URL or DREAMQ_REDIS_SENTINELS (shared/redis_client.py)."""
        return bool(self.redis_url or self.redis_sentinels)

    @property
    def wait_replicas(self) -> int:
        """DREAMQ_REDIS_WAIT_REPLICAS, or its default: 1 under Sentinel, else 0."""
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_sentinels else 0

    @property
    def store(self) -> str:
        return self.store_url or f"file://{self.data_dir.resolve() / 'store'}"

    @property
    def visibility_timeout_s(self) -> int:
        # Longer than the longest job, so Redis never hands a running job to a second worker.
        return self.job_time_limit_s + 600


@lru_cache
def get_settings() -> Settings:
    return Settings()
