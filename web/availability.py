"""Can a live worker run the model asked for?  Checked at submit, so that a job no worker can run
is a 422 naming `model` now, not a failed job later.

Workers say which models they hold in their heartbeats (worker/worker.py ``heartbeat_record``):
``"ready"``, or ``"unavailable: <why>"``; a worker still loading lists only what it has loaded or
given up on.  With no live worker at all (workers scaled to zero) the job is accepted: a worker
that starts later may hold the model, and the job says that none is live now.
"""
from __future__ import annotations

from shared.workers import live_workers

from .errors import ApiError

NO_LIVE_WORKER = "no worker is running now: the job waits in the queue until one starts"


def could_run(beat: dict, model: str) -> bool:
    """Whether this worker runs ``model`` now, or may once it has loaded its models."""
    state = (beat.get("models") or {}).get(model)
    if state is None:
        return not beat.get("ready")  # ready without it: it does not load that model at all
    return not str(state).startswith("unavailable")


def check_model(client, model: str) -> list[str]:
    """The warnings the job carries (none is live); ApiError 422 naming `model` when every live
    worker reports it unavailable."""
    beats = live_workers(client)
    if not beats:
        return [NO_LIVE_WORKER]
    if any(could_run(b, model) for b in beats):
        return []
    available = sorted({name for b in beats if b.get("ready")
                        for name, state in (b.get("models") or {}).items() if state == "ready"})
    choice = f"available now: {', '.join(available)}" if available else "no model is available now"
    why = f"{model} is not available on any running worker ({choice})"
    raise ApiError(422, "invalid_params", f"invalid request: model: {why}", {"model": why})  # as ParamsError words it
