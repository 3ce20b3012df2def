"""What a kind declares (shared/kinds/__init__.py says what a kind is; image.py and zoom.py are two)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pydantic import BaseModel

DEFAULT_KIND = "image"


def file_name(names: Mapping[str, str], role: str, n: int | None = None) -> str:
    """The store name of ``role`` (the ``n``-th of a numbered series like ``frames/{n:05d}.png``)."""
    name = names[role]  # KeyError: a role the kind does not declare
    numbered = "{n" in name
    if numbered != (n is not None):
        raise ValueError(f"file {role!r} ({name}) " + ("needs a number n" if numbered else "is not numbered"))
    return name.format(n=int(n)) if numbered else name


@dataclass(frozen=True)
class Kind:
    name: str
    title: str  # what the form's kind menu shows
    summary: str  # one line for OpenAPI and the CLI's help: what a job of this kind makes
    params: type[BaseModel]  # a Field's title labels the form's input, its description documents it
    parse: Callable[[dict], BaseModel]  # raw form or JSON values -> params; ParamsError names the fields
    files: Mapping[str, str]  # role -> name in the job's store folder ("frames/{n:05d}.png": a series)
    media_type: str  # of the result (with ``result``: of the result with default parameters)
    # Every media type the result can have -> its file extension (for OpenAPI and the CLI's file names).
    result_types: Mapping[str, str]
    progress: Callable[[dict], dict]  # params -> the progress a client sees before the first update
    # (params, height, width, settings) -> None, or ParamsError: limits that need the decoded
    # picture's size (kind=zoom: frames x pixels), checked by the web and again by the handler.
    check_work: Callable[[Any, int, int, Any], None] | None = None
    # params -> (the result's name, its media type), for a result that depends on them;
    # None: files["result"] and media_type.
    result: Callable[[dict], tuple[str, str]] | None = None
    # (params, height, width, has_guide) -> the job's batch key (jobs with equal keys may run as one
    # batch: shared/jobs.py, "Batching"), or None for a job that never batches; None: the kind never does.
    batch_key: Callable[[Any, int, int, bool], str | None] | None = None

    @property
    def has_frames(self) -> bool:
        """Whether the kind keeps a numbered series of frames (``/jobs/{id}/frames/{n}``)."""
        return "frame" in self.files

    @property
    def takes_guide(self) -> bool:
        return "guide" in self.files

    def batch_key_of(self, params: Any, height: int, width: int, has_guide: bool) -> str | None:
        """The job's batch key (``batch_key``), None when it never batches."""
        return self.batch_key(params, height, width, has_guide) if self.batch_key else None

    def file(self, role: str, n: int | None = None) -> str:
        return file_name(self.files, role, n)

    def result_name(self, params: Mapping[str, Any]) -> str:
        """The result's name in the job's store folder, for the job's (stored) parameters."""
        return self.result(dict(params))[0] if self.result else self.files["result"]

    def result_media_type(self, params: Mapping[str, Any]) -> str:
        return self.result(dict(params))[1] if self.result else self.media_type
