"""What a handler gets (``Context``), its files by role (``Files``) and its verdict of failure (``JobFailed``)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pydantic import BaseModel

from shared.kinds import file_name


class JobFailed(Exception):
    """A handler's verdict that the job cannot succeed: ``code`` and ``message`` go to the
    client, ``detail`` (paths, exception text) only to the worker's log."""

    def __init__(self, code: str, message: str, detail: object = None):
        self.code, self.message, self.detail = code, message, detail
        super().__init__(f"{code}: {message}")


class Files:
    """One job's files in the store, by role (``input``, ``preview``, ``result``, ``frame``...);
    ``n`` numbers the files of a series (``frame``)."""

    def __init__(self, store, job_id: str, names: Mapping[str, str]):
        self.store, self.job_id, self.names = store, job_id, names

    def name(self, role: str, n: int | None = None) -> str:
        return file_name(self.names, role, n)

    def get(self, role: str, n: int | None = None) -> bytes | None:
        return self.store.get(self.job_id, self.name(role, n))

    def put(self, role: str, data: bytes, n: int | None = None) -> str:
        return self.store.put(self.job_id, self.name(role, n), data)

    def put_file(self, role: str, local_path: str, n: int | None = None) -> str:
        """Store a local file without reading it into memory (a video)."""
        return self.store.put_file(self.job_id, self.name(role, n), local_path)

    def exists(self, role: str, n: int | None = None) -> bool:
        return self.store.exists(self.job_id, self.name(role, n))


@contextmanager
def timed(timings: dict[str, float], part: str):
    """Add the seconds of the ``with`` block to ``timings[part]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[part] = timings.get(part, 0.0) + time.perf_counter() - t0


@dataclass
class Context:
    """What a handler gets for one job."""

    job: Any  # shared.job.Job
    params: BaseModel  # the kind's parameters, validated, precision already resolved
    engine: Any  # the warm engine of params.model (worker/dream.py's Dreamer)
    files: Files
    progress: Callable[..., None]  # progress(fields: dict, final=False): throttled writes to the record
    preview: Callable[[Any], None]  # preview(uint8 RGB array): the picture a client watches
    should_stop: Callable[[], bool]  # polled between steps: True means stop now (the engine raises)
    record: Callable[..., None] = lambda **fields: None  # record(**fields): write fields of the running job
    weights: str | None = None  # the fingerprint of the engine's weights, which the result PNG carries
    # Where the run's time goes (metrics.timings): the handler adds load_s, encode_s and store_s, the
    # engine steps_s and preview_s (worker/dream.py ``timings``).
    timings: dict[str, float] = field(default_factory=dict)
