"""Every Redis key dreamq writes, named once (as rq's own ``keys`` module does).

The Celery broker's keys (the ``dreamq`` list, ``unacked``...) are kombu's; the
rate-limit counters are Flask-Limiter's, under ``LIMITS``.
"""
from __future__ import annotations

PREFIX = "dreamq"

# Job indexes: sorted sets of job ids.
JOBS = f"{PREFIX}:jobs"  # id -> created_at (listing, expiry)
QUEUED_JOBS = f"{PREFIX}:queued"  # id -> when its current message was sent (position, depth, stranded jobs)
RUNNING_JOBS = f"{PREFIX}:running"  # id -> started_at (lost-worker detection)
# Result-cache hits share the store folder of the job that ran (shared/cache.py): folder (job id) ->
# the latest expiry of a hit reading it.
SHARED_FILES = f"{PREFIX}:files:shared"

# Fair share between owners (shared/jobs.py, "Fair share"): who has queued jobs, each scored with its
# virtual time (jobs started, divided by its weight); the clock (the virtual time of the last pick);
# the weights an admin set (owner -> weight, 1 when unset); and each owner's own queue (``fair_queue``).
FAIR_OWNERS = f"{PREFIX}:fair:owners"
FAIR_CLOCK = f"{PREFIX}:fair:clock"
FAIR_WEIGHTS = f"{PREFIX}:fair:weights"
FAIR_QUEUE_PREFIX = f"{PREFIX}:fair:queue:"

# Worker heartbeats: the set of ids, and one expiring JSON record per worker.
WORKERS = f"{PREFIX}:workers"
RECOVERY_LEASE = f"{PREFIX}:recovery"  # held for one heartbeat period by the worker that looks for lost jobs

# Metrics counters (web/metrics.py reads them; see there).
STATS = f"{PREFIX}:stats"
SUBMITTED = f"{STATS}:submitted"  # hash model -> count
FINISHED_COUNT = f"{STATS}:finished"  # hash "status|model" -> count
PENDING = f"{STATS}:pending"  # ids submitted and not yet counted as finished
FOLD_CURSOR = f"{STATS}:fold_cursor"  # where the scrape's walk over PENDING goes on from (SSCAN cursor)
HIST = {"queue": f"{STATS}:hist:queue", "run": f"{STATS}:hist:run"}

# Flask-Limiter's counters (web/limits.py).
LIMITS = f"{PREFIX}:limits"


def job(job_id: str) -> str:
    """The job record: a hash (shared/job.py)."""
    return f"{PREFIX}:job:{job_id}"


def owner_jobs(owner: str) -> str:
    """One owner's jobs: id -> created_at, so that an owner's listing costs O(page), not O(all jobs).
    Entries of expired records are pruned as they are met, and by age at each new job."""
    return f"{PREFIX}:owner:{owner}:jobs"


def fair_queue(share: str) -> str:
    """One owner's queued jobs, in the order they run: id -> priority offset + created_at."""
    return FAIR_QUEUE_PREFIX + share


def worker(worker_id: str) -> str:
    """A worker's heartbeat record (JSON, expires after DREAMQ_HEARTBEAT_TTL_S)."""
    return f"{PREFIX}:worker:{worker_id}"


def client_queued(client: str) -> str:
    """The ids of one client's queued jobs (the per-client cap)."""
    return f"{PREFIX}:client:{client}:queued"


def idempotency(digest: str, part: str = "job") -> str:
    """An Idempotency-Key of POST /api/v1/jobs (web/integrations.py), ``digest`` being SHA-256 of the
    caller's scope and key: ``job`` (JSON: job id and request fingerprint, 24 h) or ``lock`` (while
    the first request with it is processed, a short TTL)."""
    return f"{PREFIX}:idempotency:{digest}:{part}"


def result_cache(digest: str) -> str:
    """A result-cache entry (shared/cache.py): the id of a succeeded job whose result answers every job
    with this cache key (``digest``: SHA-256 of kind, parameters, input files and the engine's identity).
    Expires with the job TTL."""
    return f"{PREFIX}:cache:{digest}"


def job_cache_key(job_id: str) -> str:
    """The cache key of a queued job, written at submit (JSON: key and engine identity), so that a worker
    that finishes it can record the cache entry.  Expires with the job TTL."""
    return f"{PREFIX}:cachekey:{job_id}"


# Webhooks (shared/webhooks.py, dreamq/delivery.py).
WEBHOOK_ATTEMPTS = f"{STATS}:webhook:attempts"  # hash outcome -> count (every attempt)
WEBHOOK_DELIVERIES = f"{STATS}:webhook:deliveries"  # hash result -> count (delivered | failed: each event once)


def webhook_throttle(job_id: str, event: str) -> str:
    """Set while a throttled event (progress, output) of the job was queued lately."""
    return f"{PREFIX}:webhook:throttle:{job_id}:{event}"


def webhook_origin(origin: str) -> str:
    """The delivery attempts in flight to one receiver origin: a sorted set of leases (dreamq/delivery.py)."""
    return f"{PREFIX}:webhook:origin:{origin}"
