"""Job kinds: what a job does, declared in one place per kind.

A kind names its parameter schema, the files it keeps in the store, the media type
of its result, the progress fields a client sees before the first update, and the
handler a worker runs.  The web and the CLI read the declaration; only a worker
calls ``run``, handing it the warm engine (so nothing here imports Keras).

Adding a kind: one module beside ``image.py`` and one line in ``KINDS``.

File names may hold a numbered series: ``"frames/{n:05d}.png"`` is ``frames/00000.png``,
``frames/00001.png``... (``Files.put("frame", data, n=1)``).  A kind whose result's name
and media type depend on its parameters (kind=zoom: mp4, webm, gif...) gives ``result``;
everyone else reads them with ``Kind.result_name(params)`` and ``Kind.result_media_type(params)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pydantic import BaseModel

DEFAULT_KIND = "image"


class JobFailed(Exception):
    """A handler's verdict that the job cannot succeed: ``code`` and ``message`` go to the
    client, ``detail`` (paths, exception text) only to the worker's log."""

    def __init__(self, code: str, message: str, detail: object = None):
        self.code, self.message, self.detail = code, message, detail
        super().__init__(f"{code}: {message}")


def file_name(names: Mapping[str, str], role: str, n: int | None = None) -> str:
    """The store name of ``role`` (the ``n``-th of a numbered series like ``frames/{n:05d}.png``)."""
    name = names[role]  # KeyError: a role the kind does not declare
    numbered = "{n" in name
    if numbered != (n is not None):
        raise ValueError(f"file {role!r} ({name}) " + ("needs a number n" if numbered else "is not numbered"))
    return name.format(n=int(n)) if numbered else name


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


@dataclass(frozen=True)
class Kind:
    name: str
    params: type[BaseModel]
    parse: Callable[[dict], BaseModel]  # raw form or JSON values -> params; ParamsError names the fields
    files: Mapping[str, str]  # role -> name in the job's store folder ("frames/{n:05d}.png": a series)
    media_type: str  # of the result (with ``result``: of the result with default parameters)
    progress: Callable[[dict], dict]  # params -> the progress a client sees before the first update
    run: Callable[[Context], dict]  # -> fields for the finished record (result_url, dream_s...)
    # params -> (the result's name, its media type), for a result that depends on them;
    # None: files["result"] and media_type.
    result: Callable[[dict], tuple[str, str]] | None = None

    def file(self, role: str, n: int | None = None) -> str:
        return file_name(self.files, role, n)

    def result_name(self, params: Mapping[str, Any]) -> str:
        """The result's name in the job's store folder, for the job's (stored) parameters."""
        return self.result(dict(params))[0] if self.result else self.files["result"]

    def result_media_type(self, params: Mapping[str, Any]) -> str:
        return self.result(dict(params))[1] if self.result else self.media_type


def _registry() -> dict[str, Kind]:
    from . import image, zoom

    return {k.name: k for k in (image.KIND, zoom.KIND)}


KINDS: dict[str, Kind] = _registry()


def get_kind(name: str | None) -> Kind | None:
    return KINDS.get(name or DEFAULT_KIND)
