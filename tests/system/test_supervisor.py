"""The supervisor of `dreamq up` and `dreamq worker --gpus`, on trivial real child processes.

Small timings (0.1 s first delay instead of 1 s) so the whole backoff sequence runs in seconds;
the `dreamq up` tests (tests/system/test_up.py) run it with the real defaults.
"""
from __future__ import annotations

import logging
import signal
import threading

import psutil
import pytest

from dreamq.supervisor import Child, Supervisor, exit_cause

from ..webutil import wait_for

pytestmark = pytest.mark.slow  # a minute or more: scheduled first (tests/conftest.py)


class Running:
    """A supervisor's run() in a thread (signal handlers are for the main thread: stop() here)."""

    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor
        self.thread = threading.Thread(target=supervisor.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.supervisor

    def __exit__(self, *exc):
        self.supervisor.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def test_exit_causes_name_the_signal_or_the_code():
    assert exit_cause(-9) == "killed by SIGKILL"
    assert exit_cause(-15) == "killed by SIGTERM"
    assert exit_cause(1) == "exited with code 1"
    assert exit_cause(0) == "exited with code 0"


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_long_run(tmp_path):
    # Runs 1-4 and 6 exit at once; run 5 lasts longer than reset_after_s; from run 7 on it stays up.
    count = tmp_path / "count"
    script = (f'n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}; '
              'case $n in 5) sleep 2.5; exit 1;; [1-6]) exit 1;; *) exec sleep 1000;; esac')
    supervisor = Supervisor([Child("flaky", sh(script))], first_delay_s=0.1, max_delay_s=0.4, reset_after_s=2.0,
                            poll_s=0.02)
    with Running(supervisor):
        wait_for(lambda: count.exists() and count.read_text().strip() == "7", 30, "7th start")
        child = supervisor.children[0]
        assert child.process.poll() is None
    deaths = list(supervisor.deaths)
    assert [d.delay_s for d in deaths] == [0.1, 0.2, 0.4, 0.4, 0.1, 0.2], deaths
    assert all(d.cause == "exited with code 1" for d in deaths)
    assert deaths[4].ran_s >= 2.0 > max(d.ran_s for d in deaths[:4] + deaths[5:])
    for death in deaths:
        # Never sooner than the delay (later by at most a few polls, on a busy machine more).
        assert death.restarted_at - death.died_at >= death.delay_s - 0.01, death
        assert death.new_pid and death.new_pid != death.pid


def test_a_killed_child_is_restarted_with_its_cause_logged_and_stop_goes_in_reverse_order(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dreamq.supervisor")
    order = tmp_path / "stopped"

    def stops_on_term(name: str, takes_s: float = 0) -> list[str]:
        # On SIGTERM: (take a while, then) write the name to `order` and exit.
        return sh(f"trap 'sleep {takes_s}; echo {name} >> {order}; kill $! 2>/dev/null; exit 0' TERM; "
                  "sleep 1000 & wait")

    children = [Child("first", stops_on_term("first")),
                Child("worker 1", ["sleep", "1000"], group="workers"),
                Child("worker 2", stops_on_term("worker 2"), group="workers"),
                Child("last", stops_on_term("last", takes_s=0.5)),
                Child("missing", [str(tmp_path / "no-such-program")])]
    supervisor = Supervisor(children, first_delay_s=0.1, max_delay_s=0.2, poll_s=0.02)
    with Running(supervisor):
        victim = wait_for(lambda: children[1].pid, 10, "worker 1 started")
        wait_for(lambda: all(c.pid for c in children[:4]), 10, "all started")
        psutil.Process(victim).send_signal(signal.SIGKILL)
        wait_for(lambda: children[1].pid not in (None, victim), 10, "worker 1 replaced")
        wait_for(lambda: sum(d.name == "missing" for d in supervisor.deaths) >= 2, 10, "two failed starts")
        pids = [c.pid for c in children[:4]]
    assert f"worker 1 (pid {victim}) killed by SIGKILL; restarting in 0.1 s" in caplog.text
    assert "missing could not start: [Errno 2]" in caplog.text
    # Nothing left running; the last started stopped first, and waited for before the next group.
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    assert order.read_text().split("\n")[:3] == ["last", "worker 2", "first"]
    stopping = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopping ")]
    assert [m.split(" (pid")[0] for m in stopping] == ["stopping last", "stopping worker 1", "stopping first"]
    assert "worker 2" in stopping[1]


def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dreamq.supervisor")
    trapped = tmp_path / "trapped"
    child = Child("stubborn", sh(f"trap '' TERM; touch {trapped}; while :; do sleep 0.05; done"))
    supervisor = Supervisor([child], stop_timeout_s=0.5, poll_s=0.02)
    with Running(supervisor):
        wait_for(trapped.exists, 10, "the trap installed")
    assert child.process.returncode == -signal.SIGKILL
    assert "still running after 0.5 s: SIGKILL" in caplog.text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_only_a_stop_signal_stops_the_supervisor_process(tmp_path, signum):
    """In its own process (signal handlers need the main thread): children stop, it exits 0."""
    import subprocess
    import sys

    from ..conftest import ROOT

    code = ("import sys; from dreamq.supervisor import Child, Supervisor, configure_logging; configure_logging(); "
            "sys.exit(Supervisor([Child('a', ['sleep', '1000']), Child('b', ['sleep', '1000'])],"
            " first_delay_s=0.1).run())")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        kids = wait_for(lambda: len(psutil.Process(proc.pid).children()) == 2 and psutil.Process(proc.pid).children(),
                        20, "two children")
        kids[0].send_signal(signal.SIGKILL)  # a child's death does not stop it ...
        wait_for(lambda: len(psutil.Process(proc.pid).children()) == 2
                 and kids[0].pid not in [c.pid for c in psutil.Process(proc.pid).children()], 20, "a replacement")
        assert proc.poll() is None
        kids = psutil.Process(proc.pid).children()
        proc.send_signal(signum)  # ... a stop signal does
        assert proc.wait(20) == 0
        gone, alive = psutil.wait_procs(kids, timeout=10)
        assert not alive
        assert f"{signal.Signals(signum).name} received: stopping" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_children_get_sigterm_when_the_supervisor_itself_is_killed():
    """SIGKILL leaves no handler to run: the kernel signals the children (PR_SET_PDEATHSIG)."""
    import subprocess
    import sys

    from ..conftest import ROOT

    code = ("from dreamq.supervisor import Child, Supervisor; "
            "Supervisor([Child('a', ['sleep', '1000']), Child('b', ['sleep', '1000'])]).run()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        kids = wait_for(lambda: len(psutil.Process(proc.pid).children()) == 2 and psutil.Process(proc.pid).children(),
                        20, "two children")
        proc.kill()
        proc.wait(10)
        gone, alive = psutil.wait_procs(kids, timeout=10)
        assert not alive, [p.pid for p in alive]  # (`sleep 1000` would have outlived the test)
    finally:
        if proc.poll() is None:
            proc.kill()
