"""The handlers of the job kinds: what a worker runs for each kind declared in shared/kinds.

A handler is ``run(ctx: Context) -> dict`` (fields for the finished record: result_url,
dream_s...); it gets the warm engine, the job's files and the callbacks in ``ctx``.
Adding a kind: its declaration in shared/kinds/ and its line in ``shared.kinds.KINDS``, and its
handler here, a module named as the kind (``worker/kinds/<name>.py`` with ``run``): the worker
finds it by the name, so no second registry to keep in step.
"""
from __future__ import annotations

import importlib
from typing import Callable

from shared.kinds import KINDS

from .context import Context, Files, JobFailed

__all__ = ["HANDLERS", "Context", "Files", "JobFailed"]

HANDLERS: dict[str, Callable[[Context], dict]] = {
    name: importlib.import_module(f"{__name__}.{name}").run for name in KINDS}
