"""The handlers of the job kinds: what a worker runs for each kind declared in shared/kinds.

A handler is ``run(ctx: Context) -> dict`` (fields for the finished record: result_url,
dream_s...); it gets the warm engine, the job's files and the callbacks in ``ctx``.
Adding a kind: its declaration in shared/kinds/, its handler module here, one line in HANDLERS.
"""
from __future__ import annotations

from typing import Callable

from . import image, zoom
from .context import Context, Files, JobFailed

__all__ = ["HANDLERS", "Context", "Files", "JobFailed"]

HANDLERS: dict[str, Callable[[Context], dict]] = {"image": image.run, "zoom": zoom.run}
