"""Fair share between owners (shared/jobs.py, "Fair share"): which queued job a free worker starts.

The lifecycle's pick on a real Redis first (exact orders), then one real worker: owner A's 30 short
jobs, then owner B's one, which must start within 2 job-times."""
import time

import pytest

from shared import keys
from shared.jobs import Jobs

from ..conftest import QUICK

A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture
def jobs(clean_redis):
    return Jobs(clean_redis)


def queue(jobs: Jobs, owner: str | None, n: int = 1, client: str | None = None, priority="interactive"):
    ids = []
    for _ in range(n):
        job = jobs.new({"model": "vgg16_hed"}, owner=owner, client=client, priority=priority)
        assert jobs.try_save_new(job, client=client) == "ok"
        ids.append(job.id)
        time.sleep(0.001)  # created_at orders an owner's jobs
    return ids


def picks(jobs: Jobs, n: int) -> list[str]:
    out = []
    for _ in range(n):
        picked = jobs.pick("w:1")
        assert picked is not None
        out.append(picked)
    return out


def test_one_job_of_another_owner_starts_next_and_each_owner_keeps_its_order(jobs):
    a = queue(jobs, A, 50)
    assert picks(jobs, 1) == a[:1]
    b = queue(jobs, B, 1)
    assert picks(jobs, 4) == [b[0], *a[1:4]]  # B goes next, A goes on in its own order
    c = queue(jobs, C, 2)
    # C joins at the clock: it alternates with A from now on (C has had no service).
    assert picks(jobs, 4) == [c[0], a[4], c[1], a[5]]
    assert picks(jobs, 44) == a[6:]
    assert jobs.pick("w:1") is None  # a message left over finds nothing
    assert jobs.r.zcard(keys.FAIR_OWNERS) == 0 and jobs.queue_depth() == 0


def test_weights_set_by_an_admin_give_shares(jobs):
    a, b = queue(jobs, A, 40), queue(jobs, B, 40)
    jobs.set_weight(A, 3)
    first = picks(jobs, 20)
    assert (sum(i in a for i in first), sum(i in b for i in first)) in {(15, 5), (14, 6), (16, 4)}
    assert [i for i in first if i in a] == a[:len([i for i in first if i in a])]  # A's own order
    jobs.set_weight(A, None)
    assert jobs.weights() == {}


def test_interactive_jobs_run_before_the_same_owners_batch_jobs_not_before_other_owners(jobs):
    batch = queue(jobs, A, 2, priority="batch")
    interactive = queue(jobs, A, 1)
    other = queue(jobs, B, 1, priority="batch")
    order = picks(jobs, 4)
    assert [i for i in order if i in batch + interactive] == interactive + batch
    assert order.index(other[0]) <= 1  # B's batch job is B's share: it does not wait for A's interactive one


def test_open_mode_shares_by_client_address(jobs):
    x = queue(jobs, None, 10, client="10.0.0.1")
    y = queue(jobs, None, 1, client="10.0.0.2")
    assert set(picks(jobs, 2)) == {x[0], y[0]}
    assert jobs.get(y[0]).share == "10.0.0.2" and jobs.get(y[0]).share_key == "10.0.0.2"


def test_a_job_canceled_while_queued_leaves_its_owners_queue(jobs):
    a = queue(jobs, A, 3)
    b = queue(jobs, B, 1)
    assert jobs.cancel(b[0]) == "canceled"
    assert jobs.cancel(a[1]) == "canceled"
    assert jobs.r.zscore(keys.FAIR_OWNERS, B) is None  # no job left: not an owner in the rotation
    assert picks(jobs, 2) == [a[0], a[2]]
    assert jobs.pick("w:1") is None


def test_a_lost_workers_job_goes_back_to_its_place_in_its_owners_queue(jobs):
    a = queue(jobs, A, 3)
    assert picks(jobs, 1) == [a[0]]
    outcome, token = jobs.requeue_lost(a[0], "w:1", max_attempts=3)
    assert outcome == "queued"
    assert picks(jobs, 3) == a  # first again, before A's later jobs
    assert jobs.get(a[0]).attempts == 2


def test_a_job_started_by_its_own_token_leaves_the_rotation(jobs):
    a = queue(jobs, A, 2)
    assert jobs.start(a[1], jobs.get(a[1]).dispatch, "w:1") == "ok"
    assert picks(jobs, 1) == [a[0]]
    assert jobs.pick("w:1") is None


def test_a_job_queued_before_fair_share_runs_on_its_own_message(jobs):
    (old,) = queue(jobs, A, 1)
    jobs.r.delete(keys.fair_queue(A), keys.FAIR_OWNERS)  # as an older version wrote it: no owner queue
    assert jobs.pick("w:1", old, "not-its-token") is None
    assert jobs.pick("w:1", old, jobs.get(old).dispatch) == old
    assert jobs.get(old).status == "running"


def test_the_queue_position_counts_the_other_owners_turns(jobs):
    a = queue(jobs, A, 5)
    assert [jobs.queue_position(jobs.get(i)) for i in a] == [1, 2, 3, 4, 5]
    b = queue(jobs, B, 1)
    # B joined at the clock (0), A is at 0 too: ties go by name, so A's turn comes first.
    assert jobs.queue_position(jobs.get(b[0])) == 2
    assert jobs.queue_position(jobs.get(a[2])) == 5  # two of A's ahead, each with B's turn beside it


@pytest.mark.slow
def test_one_worker_starts_another_owners_job_within_two_job_times(service, tiny_photo):
    service.start_worker()
    quick = {**QUICK, "octaves": 1, "iterations": 2}  # the lifecycle has no result cache: every job runs
    a = [service.submit(tiny_photo, owner=A, **quick) for _ in range(30)]
    service.wait(a[0], statuses=("running", "succeeded"))
    time.sleep(1.0)  # A's jobs are running, one after the other
    b = service.submit(tiny_photo, owner=B, **quick)
    done_b = service.wait(b, timeout=120)
    done_a = [service.wait(i, timeout=180) for i in a]
    assert done_b.status == "succeeded" and all(j.status == "succeeded" for j in done_a)
    everything = done_a + [done_b]
    # A job-time: one job's share of the worker's whole run, its overhead between jobs included.
    job_time = (max(j.finished_at for j in everything) - min(j.started_at for j in everything)) / len(everything)
    waited = done_b.started_at - done_b.created_at
    print(f"fair share: B waited {waited:.2f} s, one job-time {job_time:.2f} s")
    assert waited <= 2 * job_time, (waited, job_time)
    started = [j.started_at for j in done_a]
    assert started == sorted(started)  # A's jobs ran in A's order
    assert all(j.attempts == 1 for j in done_a + [done_b])  # none ran twice
    assert sum(a_job.started_at < done_b.started_at for a_job in done_a) <= 1 + sum(
        j.started_at < done_b.created_at for j in done_a)  # at most one of A's started after B was queued


def test_an_admin_sets_a_tokens_weight_with_the_cli(jobs, redis_url, tmp_path):
    import os
    import subprocess
    import sys

    from web.auth import token_hash

    env = {**os.environ, "DREAMQ_REDIS_URL": redis_url, "DREAMQ_DATA_DIR": str(tmp_path)}

    def cli(*args):
        done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dreamq"), "share", *args], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert cli("secret-token", "3") == f"{token_hash('secret-token')}\t3\n"
    assert jobs.weights() == {token_hash("secret-token"): 3.0}
    assert cli("--address", "10.0.0.9", "0.5") == "10.0.0.9\t0.5\n"
    assert cli() == "".join(sorted([f"{token_hash('secret-token')}\t3\n", "10.0.0.9\t0.5\n"]))
    assert cli("secret-token", "1") == f"{token_hash('secret-token')}\t1\n"  # back to the default
    assert jobs.weights() == {"10.0.0.9": 0.5}


def test_many_records_written_in_one_round_trip_are_those_of_one_at_a_time(jobs):
    many = [jobs.new({"model": "vgg16_hed"}, owner=A) for _ in range(5)]
    assert jobs.save_new_many(many, max_queued=3) == ["ok"] * 3 + ["queue_full"] * 2  # the cap holds
    one = jobs.new({"model": "vgg16_hed"}, owner=B)
    assert jobs.try_save_new(one) == "ok"
    assert jobs.r.hgetall(keys.job(many[0].id)).keys() == jobs.r.hgetall(keys.job(one.id)).keys()
    assert picks(jobs, 4) == [many[0].id, one.id, many[1].id, many[2].id]
    done = [jobs.new({"model": "vgg16_hed"}, owner=A) for _ in range(3)]
    for job in done:
        job.status, job.finished_at = "succeeded", job.created_at + 1
    jobs.save_finished_many(done)
    assert [j.id for j in jobs.list(owner=A)][:3] == [j.id for j in reversed(done)]
    assert jobs.get(done[0].id).status == "succeeded"
