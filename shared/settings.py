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
    model_config = SettingsConfigDict(env_prefix="DREAMQ_", extra="ignore", hide_input_in_errors=True)

    # Where things live.
    redis_url: str | None = None  # none: `dreamq up` starts an embedded Redis
    data_dir: Path = Path("data")
    store_url: str | None = None  # default: file://<data_dir>/store; s3://bucket/prefix for many hosts
    s3_endpoint_url: str | None = None  # an S3-compatible server (MinIO, Ceph) instead of AWS

    # Jobs.
    job_ttl_s: int = Field(7 * 24 * 3600, ge=60)  # records and their files expire after this
    job_time_limit_s: int = Field(3600, ge=1)  # a running job fails with `timeout` past this
    max_attempts: int = Field(3, ge=1)  # deliveries before a job fails with `worker_lost`
    max_queued: int = Field(1000, ge=1)  # above this, submissions get 503
    progress_interval_s: float = Field(0.25, ge=0)  # at most 4 progress writes per second
    # Zoom videos (kind=zoom): at most this many frame pixels (frames x height x width) per job,
    # so that no single video holds a worker for hours: 60 frames of 640x480 (the default
    # InceptionV3 frame took 10-15 s at 640x480 on a shared 2-core CPU: 10-15 minutes; on a GPU, seconds).
    # A GPU deployment raises it (600 frames of 640x480: 184_320_000).
    zoom_max_work: int = Field(60 * 640 * 480, ge=1)

    # Workers.
    models: Annotated[list[str], NoDecode] = ["inception_v3", "vgg16_hed"]
    # Modules a worker imports at start, e.g. ones that subscribe to the lifecycle's signals
    # (shared/jobs.py); the fault-injection tests load bench.crash_plugin this way.
    plugins: Annotated[list[str], NoDecode] = []
    heartbeat_s: float = Field(2.0, gt=0)
    heartbeat_ttl_s: float = Field(8.0, gt=0)  # a worker silent this long is lost; its job runs again
    tile_above_pixels: int = Field(4_000_000, ge=0)  # bigger images are dreamed in tiles; 0: never
    tile_size: int = Field(512, ge=256)
    intra_op_threads: int = Field(0, ge=0)  # 0: the framework decides
    inter_op_threads: int = Field(0, ge=0)
    # bf16 jobs: auto runs them in bf16 only where the device has native bf16
    # (else fp32, with a warning on the job); off never; on trusts the operator.
    bf16: Literal["auto", "on", "off"] = "auto"

    # Web.
    max_content_length: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    api_tokens: Annotated[list[str], NoDecode] = []
    rate_limit_per_minute: int = Field(0, ge=0)  # submissions per client per minute; 0: off
    proxy_hops: int = Field(0, ge=0)  # reverse proxies in front of the web to trust X-Forwarded-* from
    # Host names the web answers besides localhost and IP addresses (web/hosts.py: DNS rebinding).
    allowed_hosts: Annotated[list[str], NoDecode] = []
    events_max_s: float = Field(300.0, gt=0)  # an SSE stream ends after this; EventSource reconnects
    # Uploads: Werkzeug's own multipart limits, set explicitly so a 413 can name the one hit.
    max_form_parts: int = Field(100, ge=1)  # multipart parts (fields + files) per request
    # Bytes of one text field.  Werkzeug also applies it to each 64 KiB read of the body: keep it well above.
    max_form_memory_size: int = Field(500_000, ge=256 * 1024)
    # Concurrent decodes of images over ~2 Mpx per web process; each of 40 Mpx takes up to ~0.5 GB.
    # 8 hostile uploads against 2 processes peaked at 0.98 GB a process with 1, 1.38 GB with 2.
    max_decodes: int = Field(1, ge=1)
    decode_wait_s: float = Field(10.0, ge=0)  # an upload waits this long for a decode slot, then 503
    # CPU seconds one upload's decoding may take, plus 0.25 s per megapixel (shared/images.py), then
    # 422 image_too_complex: 12 s for 40 Mpx, ten times what the busiest 40 Mpx JPEG took.
    decode_budget_s: float = Field(2.0, gt=0)
    max_queued_per_client: int = Field(0, ge=0)  # queued jobs per client (keyed like the rate limit); 0: off
    # The result cache (shared/cache.py) answers each owner (token) from its own jobs only; true shares
    # it across owners (a public deployment: a hit then tells that someone already sent the photo).
    cache_shared: bool = False

    # Webhooks (shared/webhooks.py, shared/delivery.py).  Deliveries are signed with the secret
    # (Standard Webhooks: "whsec_" + base64 of 24-64 random bytes); without one, a submit that
    # names a webhook is refused.  `dreamq up` makes one in the data directory when none is set.
    webhook_secret: SecretStr | None = None
    webhook_allow_private: bool = False  # deliver to loopback and private addresses (local setups, tests)
    webhook_max_attempts: int = Field(6, ge=1, le=20)  # per event, the first one included
    webhook_retry_base_s: float = Field(10.0, gt=0)  # the wait before the 2nd attempt; x4 each time after
    webhook_timeout_s: float = Field(5.0, gt=0, le=30)  # to connect, and for each read of the answer
    # The whole of one attempt (resolve, connect, send, read the answer): a receiver that sends a byte
    # now and then resets the per-read timeout above, never this.
    webhook_attempt_s: float = Field(15.0, gt=0, le=300)
    # Attempts in flight to one receiver origin (scheme, host, port), across delivery processes; 0: no limit.
    webhook_per_origin: int = Field(2, ge=0)
    webhook_progress_interval_s: float = Field(5.0, ge=0)  # at most one progress (and one output) event per job per this
    webhook_concurrency: int = Field(8, ge=1)  # deliveries in flight per delivery process

    # Tokens and sessions (web/auth.py).  Admin tokens see and cancel every job; others only their own.
    admin_tokens: Annotated[list[str], NoDecode] = []
    login_max_failures: int = Field(10, ge=1)  # failed logins per address per window, then 429
    login_window_s: int = Field(300, ge=1)

    @field_validator("models", "plugins", "api_tokens", "admin_tokens", "allowed_hosts", mode="before")
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

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _webhook_secret(cls, v):
        # Checked at start, so that a typo fails the process, not every delivery; never echoed.
        # Empty (compose's `${DREAMQ_WEBHOOK_SECRET:-}`) means none.
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        from .webhooks import check_secret

        check_secret(v)
        return v

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
