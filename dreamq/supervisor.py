"""Keeps dreamq's processes running: `dreamq up` and `dreamq worker --gpus` both use it.

A child that dies, whatever the cause (an exit code, SIGKILL from the OOM killer),
is started again after a delay that doubles with each death: 1 s, 2 s, 4 s ... 60 s.
Once a child has run for 5 minutes its next death waits 1 s again.  So a rare crash
costs a second, and a crash loop costs one start a minute, not a busy CPU and a
flooded log.  Every death is logged with its cause:

    worker 2 (pid 123) killed by SIGKILL; restarting in 1 s (it ran 42.0 s)

Only SIGINT (Ctrl-C), SIGTERM or SIGHUP to the supervisor stops everything.  The
children then get SIGTERM group by group, in reverse order of start, each group
waited for before the next: with Redis started first and stopped last, a worker
can still put its running job back in the queue when it is told to stop.

The children run in their own process group, so a Ctrl-C in the terminal reaches
the supervisor alone and that order holds; on Linux each child is also sent
SIGTERM if the supervisor itself dies (SIGKILL), so none is left behind.
"""
from __future__ import annotations

import collections
import os
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("dreamq.supervisor")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def configure_logging(level: str = "INFO") -> None:
    """The supervisor's lines look like the workers' (same format), on stderr."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def exit_cause(returncode: int) -> str:
    """`killed by SIGKILL` or `exited with code 1`, from Popen's returncode."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _libc_prctl():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Resolved here, in the parent: the child, between fork and exec, must not import or dlopen
# (another thread of the parent may have held the import or loader lock at the fork).
_PRCTL = _libc_prctl() if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    # The kernel sends SIGTERM to the child when the supervisor dies, even by SIGKILL,
    # so no worker or Redis is left orphaned.
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


@dataclass
class Child:
    """One supervised process: what to run and, while it runs, its state."""

    name: str  # in the log: "worker 2", "web", "redis"
    argv: list[str]
    env: dict[str, str] | None = None
    group: str = ""  # children of a group are stopped together; "" means the name
    # At the first start, the supervisor waits until this answers True before starting the
    # next child (Redis accepts connections; the web answers), for at most ready_timeout_s.
    ready: Callable[[], bool] | None = None
    ready_timeout_s: float = 60.0

    process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    started_at: float = field(default=0.0, init=False, repr=False)
    delay_s: float = field(default=0.0, init=False, repr=False)  # the wait before the next restart
    restart_at: float | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


@dataclass
class Death:
    """One death and the restart it caused, for the log and for tests."""

    name: str
    pid: int | None
    cause: str
    ran_s: float
    delay_s: float
    died_at: float  # time.monotonic()
    restarted_at: float | None = None
    new_pid: int | None = None


class Supervisor:
    def __init__(self, children: list[Child], *, first_delay_s: float = 1.0, max_delay_s: float = 60.0,
                 reset_after_s: float = 300.0, stop_timeout_s: float = 60.0, poll_s: float = 0.1):
        self.children = list(children)
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.reset_after_s = reset_after_s
        self.stop_timeout_s = stop_timeout_s
        self.poll_s = poll_s
        self.deaths: collections.deque[Death] = collections.deque(maxlen=1000)
        # A plain flag, not an Event: the signal handler runs in the thread that may be
        # inside Event.wait(), and Event.set() there can deadlock on the Event's own lock.
        self._stop_requested = False
        self.stop_signal: int | None = None
        for child in self.children:
            child.delay_s = first_delay_s

    # -- control -----------------------------------------------------------------

    def stop(self, signum: int | None = None, _frame=None) -> None:
        """Ask run() to stop everything (a signal handler, or any thread)."""
        if not self._stop_requested:
            self.stop_signal = signum
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def run(self, on_started: Callable[[], None] | None = None) -> int:
        """Start every child, keep them running until a stop signal, then stop them; returns 0."""
        self._install_signal_handlers()
        self.start_all()
        if on_started is not None and not self.stopping:
            on_started()
        while not self.stopping:
            self.check()
            time.sleep(self.poll_s)
        if self.stop_signal is not None:
            log.info("%s received: stopping", signal.Signals(self.stop_signal).name)
        self.stop_all()
        return 0

    def _install_signal_handlers(self) -> None:
        # Python allows handlers in the main thread only; tests run a supervisor in another
        # thread and call stop() instead.
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, self.stop)

    # -- starting ----------------------------------------------------------------

    def start_all(self) -> None:
        """Start the children in order, each after the previous one is ready (if it says how)."""
        for child in self.children:
            if self.stopping:
                return
            self._start(child)
            if child.ready is not None and child.process is not None:
                self._wait_ready(child)

    def _start(self, child: Child) -> None:
        child.restart_at = None
        try:
            child.process = subprocess.Popen(child.argv, env=child.env, process_group=0,
                                             preexec_fn=_die_with_parent if _PRCTL else None)
        except OSError as exc:  # no such program, too many processes: as if it had died at once
            child.process = None
            self._schedule_restart(child, f"could not start: {exc}", pid=None, ran_s=0.0)
            return
        child.started_at = time.monotonic()
        log.info("%s started (pid %d)", child.name, child.process.pid)

    def _wait_ready(self, child: Child) -> None:
        deadline = time.monotonic() + child.ready_timeout_s
        while not self.stopping and child.process.poll() is None:
            try:
                if child.ready():
                    return
            except Exception as exc:  # a probe that fails is "not yet", never fatal
                log.debug("%s not ready: %s", child.name, exc)
            if time.monotonic() > deadline:
                log.warning("%s not ready after %g s; going on", child.name, child.ready_timeout_s)
                return
            time.sleep(self.poll_s)

    # -- watching ----------------------------------------------------------------

    def check(self) -> None:
        """Notice the children that died, and start again those whose delay has passed."""
        now = time.monotonic()
        for child in self.children:
            if self.stopping:
                return
            if child.process is not None and child.process.poll() is not None:
                ran_s = now - child.started_at
                pid = child.process.pid
                cause = exit_cause(child.process.returncode)
                child.process = None
                self._schedule_restart(child, cause, pid, ran_s)
            elif child.process is None and child.restart_at is not None and now >= child.restart_at:
                self._start(child)
                if child.process is not None:
                    self._note_restart(child)

    def _schedule_restart(self, child: Child, cause: str, pid: int | None, ran_s: float) -> None:
        if ran_s >= self.reset_after_s:
            child.delay_s = self.first_delay_s  # it had been running fine: a fresh fault
        delay = child.delay_s
        child.delay_s = min(delay * 2, self.max_delay_s)
        child.restart_at = time.monotonic() + delay
        who = f"{child.name} (pid {pid})" if pid else child.name
        log.warning("%s %s; restarting in %g s (it ran %.1f s)", who, cause, delay, ran_s)
        self.deaths.append(Death(child.name, pid, cause, ran_s, delay, time.monotonic()))

    def _note_restart(self, child: Child) -> None:
        for death in reversed(self.deaths):
            if death.name == child.name:
                death.restarted_at = time.monotonic()
                death.new_pid = child.pid
                return

    # -- stopping ----------------------------------------------------------------

    def groups_in_stop_order(self) -> list[list[Child]]:
        """Groups in reverse order of their first child's start."""
        groups: dict[str, list[Child]] = {}
        for child in self.children:
            groups.setdefault(child.group or child.name, []).append(child)
        return list(reversed(groups.values()))

    def stop_all(self) -> None:
        for group in self.groups_in_stop_order():
            running = [c for c in group if c.process is not None and c.process.poll() is None]
            for child in group:
                child.restart_at = None  # a pending restart is dropped
            if not running:
                continue
            log.info("stopping %s", ", ".join(f"{c.name} (pid {c.pid})" for c in running))
            for child in running:
                child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout_s
            for child in running:
                try:
                    child.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s (pid %d) still running after %g s: SIGKILL", child.name, child.pid,
                                self.stop_timeout_s)
                    child.process.kill()
                    child.process.wait()


# -- `dreamq worker --gpus`: one worker process per GPU -------------------------------------------

def gpu_children(gpus: list[str], extra_env: dict[str, str] | None = None) -> list:
    """One `dreamq worker` process per GPU, each seeing only its own device."""
    return [Child(f"worker gpu:{gpu}", [sys.executable, "-m", "dreamq.cli", "worker"], group="workers",
                  env={**os.environ, **(extra_env or {}), "CUDA_VISIBLE_DEVICES": gpu, "DREAMQ_DEVICE": f"gpu:{gpu}"})
            for gpu in gpus]


def supervise_gpus(gpus: list[str]) -> int:
    """`dreamq worker --gpus 0,1`: the workers under the supervisor of `dreamq up` (restarted when
    they die, with backoff; Ctrl-C or SIGTERM stops them, each giving its running job back)."""
    configure_logging()
    return Supervisor(gpu_children(gpus)).run()
