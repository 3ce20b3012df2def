"""/metrics on the real app, a real Redis and the real Celery messages the web sends.

Workers' state changes go through Jobs (what a worker calls) and their
heartbeats are written as the workers write them; every scrape is read back with
prometheus_client's own text parser.
"""
from __future__ import annotations

import json
import math
import re

import yaml
from prometheus_client.parser import text_string_to_metric_families

from shared import keys
from shared.jobs import Jobs
from shared.models import MODELS
from shared.queue import QUEUE, TASK

from ..conftest import ROOT
from ..webutil import heartbeat, make_app, post_job

IV3, HED = "inception_v3", "vgg16_hed"




def scrape(client) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items -> value}, parsed as Prometheus parses it."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def submit(client, jpeg, **fields) -> str:
    r = post_job(client, jpeg, "photo.jpg", **fields)
    assert r.status_code == 202, r.get_json()
    return r.get_json()["id"]


def state_of(app) -> Jobs:
    return app.extensions["dreamq"].state


def messages(r) -> list[str]:
    """Job ids of the Celery messages waiting in the dreamq list, oldest first (kombu LPUSHes)."""
    ids = []
    for raw in reversed(r.lrange(QUEUE, 0, -1)):
        headers = json.loads(raw)["headers"]
        ids.append(re.match(r"\['([0-9a-f-]{36})'", headers["argsrepr"]).group(1))
    return ids


def take_message(r) -> str:
    """Take the oldest message off the list, as a worker's consumer does before it starts the job."""
    return json.loads(r.rpop(QUEUE))["headers"]["argsrepr"][2:38]


def run(app, r, job_id: str, worker: str, status: str = "succeeded") -> None:
    """A worker's part: take the message, start the job, finish it."""
    state = state_of(app)
    assert take_message(r) == job_id
    assert state.start(job_id, r.hget(keys.job(job_id), "dispatch").decode(), worker) == "ok"
    assert state.finish(job_id, worker, status) == "ok"


def test_queue_depth_equals_the_jobs_that_will_run_and_the_broker_agrees(app, client, clean_redis, jpeg):
    r = clean_redis
    jobs = [submit(client, jpeg), submit(client, jpeg, model=HED), submit(client, jpeg)]
    m = scrape(client)
    assert value(m, "dreamq_queue_depth") == 3 == value(m, "dreamq_broker_messages")
    assert messages(r) == jobs

    # Canceled while queued: the record leaves the queue and its message leaves the list.
    assert client.post(f"/api/v1/jobs/{jobs[1]}/cancel").status_code == 202
    m = scrape(client)
    assert value(m, "dreamq_queue_depth") == 2 == value(m, "dreamq_broker_messages")
    assert messages(r) == [jobs[0], jobs[2]]
    # Canceling again changes nothing; the HTML form's cancel does the same as the API's.
    assert client.post(f"/api/v1/jobs/{jobs[1]}/cancel").status_code == 202
    assert client.post(f"/jobs/{jobs[2]}/cancel").status_code == 303
    m = scrape(client)
    assert value(m, "dreamq_queue_depth") == 1 == value(m, "dreamq_broker_messages")
    assert messages(r) == [jobs[0]]

    # A worker takes the last one: nothing waits, one runs; then it is done.
    state = state_of(app)
    assert take_message(r) == jobs[0]
    assert state.start(jobs[0], r.hget(keys.job(jobs[0]), "dispatch").decode(), "host:7") == "ok"
    m = scrape(client)
    assert value(m, "dreamq_queue_depth") == 0 == value(m, "dreamq_broker_messages")
    assert value(m, "dreamq_jobs_running") == 1
    assert state.finish(jobs[0], "host:7", "succeeded") == "ok"
    m = scrape(client)
    assert value(m, "dreamq_jobs_running") == 0 and value(m, "dreamq_queue_depth") == 0
    assert value(m, "dreamq_jobs_finished_total", status="succeeded", model=IV3) == 1
    assert value(m, "dreamq_jobs_finished_total", status="canceled", model=IV3) == 1
    assert value(m, "dreamq_jobs_finished_total", status="canceled", model=HED) == 1


def test_a_cancel_removes_only_that_jobs_dreamq_messages(app, client, clean_redis, jpeg):
    r = clean_redis
    keep, cancel = submit(client, jpeg), submit(client, jpeg)
    celery = app.extensions["dreamq"].celery
    # Other things in the list that mention the job must stay: another task's message
    # with the same arguments, and something that is not a kombu message at all.
    celery.send_task("other.task", args=[cancel, "x"], queue=QUEUE)
    r.lpush(QUEUE, f"not json {cancel}")
    # A second message for the same job (a re-dispatch with a new token) goes too.
    celery.send_task(TASK, args=[cancel, "new-token"], queue=QUEUE)
    assert r.llen(QUEUE) == 5
    assert state_of(app).cancel(cancel) == "canceled"
    left = [json.loads(raw) if raw.startswith(b"{") else raw.decode() for raw in r.lrange(QUEUE, 0, -1)]
    assert len(left) == 3 and f"not json {cancel}" in left
    tasks = sorted((m["headers"]["task"], m["headers"]["argsrepr"][2:38]) for m in left if isinstance(m, dict))
    assert tasks == sorted([(TASK, keep), ("other.task", cancel)])
    # A job whose message a worker already took is canceled all the same.
    r.delete(QUEUE)
    third = submit(client, jpeg)
    assert take_message(r) == third
    assert state_of(app).cancel(third) == "canceled" and r.llen(QUEUE) == 0


def test_finished_jobs_and_run_times_are_labelled_by_model(app, client, clean_redis, jpeg):
    r = clean_redis
    m = scrape(client)
    # Every catalog model and end state is there from the start, at 0.
    for model in MODELS:
        assert value(m, "dreamq_jobs_submitted_total", model=model) == 0
        assert value(m, "dreamq_job_run_seconds_count", model=model) == 0
        for status in ("succeeded", "failed", "canceled"):
            assert value(m, "dreamq_jobs_finished_total", status=status, model=model) == 0

    a, b, c = submit(client, jpeg), submit(client, jpeg, model=HED), submit(client, jpeg, model=HED)
    run(app, r, a, "host:1")
    run(app, r, b, "host:2")
    run(app, r, c, "host:2", status="failed")
    text = client.get("/metrics").get_data(as_text=True)
    for job_id in (a, b, c):
        assert job_id not in text
    for scraped in (scrape(client), scrape(client)):  # a second scrape counts nothing twice
        assert value(scraped, "dreamq_jobs_submitted_total", model=IV3) == 1
        assert value(scraped, "dreamq_jobs_submitted_total", model=HED) == 2
        assert value(scraped, "dreamq_jobs_finished_total", status="succeeded", model=IV3) == 1
        assert value(scraped, "dreamq_jobs_finished_total", status="succeeded", model=HED) == 1
        assert value(scraped, "dreamq_jobs_finished_total", status="failed", model=HED) == 1
        assert value(scraped, "dreamq_jobs_finished_total", status="failed", model=IV3) == 0
        assert value(scraped, "dreamq_job_run_seconds_count", model=IV3) == 1
        assert value(scraped, "dreamq_job_run_seconds_count", model=HED) == 2
        assert value(scraped, "dreamq_job_run_seconds_bucket", model=HED, le="+Inf") == 2
        assert value(scraped, "dreamq_job_run_seconds_sum", model=HED) >= 0
        # The queue-time histogram has no model label: all models wait in one queue.
        assert value(scraped, "dreamq_job_queue_seconds_count") == 3


def test_counts_from_before_the_model_label_are_kept_as_model_unknown(app, client, clean_redis):
    """A Redis upgraded in place still holds the old fields: status -> n, and le -> n for run times."""
    from web.metrics import FINISHED_COUNT, HIST

    clean_redis.hset(FINISHED_COUNT, mapping={"succeeded": 4, "failed": 1})
    clean_redis.hset(HIST["run"], mapping={"0.5": 1, "10": 2, "sum": 12.5, "count": 3})
    m = scrape(client)
    assert value(m, "dreamq_jobs_finished_total", status="succeeded", model="unknown") == 4
    assert value(m, "dreamq_jobs_finished_total", status="failed", model="unknown") == 1
    assert value(m, "dreamq_job_run_seconds_bucket", model="unknown", le="0.5") == 1
    assert value(m, "dreamq_job_run_seconds_bucket", model="unknown", le="10") == 3
    assert value(m, "dreamq_job_run_seconds_count", model="unknown") == 3
    assert value(m, "dreamq_job_run_seconds_sum", model="unknown") == 12.5


def busy_heartbeat(r, worker_id: str, job_id: str | None, **kw) -> None:
    """A heartbeat as a worker writes it while running ``job_id`` (its ``job`` field)."""
    heartbeat(r, worker_id, **kw)
    key = f"dreamq:worker:{worker_id}"
    beat = json.loads(r.get(key))
    r.set(key, json.dumps({**beat, "job": job_id}), keepttl=True)


def test_busy_workers_come_from_live_heartbeats(app, client, clean_redis, jpeg):
    r = clean_redis
    m = scrape(client)
    assert value(m, "dreamq_workers_busy") == 0 and value(m, "dreamq_workers", ready="true") == 0
    job = submit(client, jpeg)
    busy_heartbeat(r, "a:1", job)
    busy_heartbeat(r, "b:2", None)
    busy_heartbeat(r, "c:3", None, ready=False)  # still loading its models
    m = scrape(client)
    assert value(m, "dreamq_workers_busy") == 1
    assert value(m, "dreamq_workers", ready="true") == 2 and value(m, "dreamq_workers", ready="false") == 1
    # A worker whose heartbeat expired (killed mid-job) is not busy, though its id is still listed.
    r.delete("dreamq:worker:a:1")
    assert r.sismember("dreamq:workers", "a:1")
    m = scrape(client)
    assert value(m, "dreamq_workers_busy") == 0 and value(m, "dreamq_workers", ready="true") == 1


def test_the_exposition_parses_with_the_types_prometheus_expects(app, client, clean_redis, jpeg):
    run(app, clean_redis, submit(client, jpeg), "host:1")
    r = client.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(r.get_data(as_text=True))}
    types = {name: f.type for name, f in families.items()}
    assert types == {
        "dreamq_redis_up": "gauge", "dreamq_jobs_submitted": "counter", "dreamq_jobs_finished": "counter",
        "dreamq_job_queue_seconds": "histogram", "dreamq_job_run_seconds": "histogram",
        "dreamq_queue_depth": "gauge", "dreamq_broker_messages": "gauge", "dreamq_jobs_running": "gauge",
        "dreamq_workers": "gauge", "dreamq_workers_busy": "gauge",
        "dreamq_webhook_attempts": "counter", "dreamq_webhook_deliveries": "counter"}
    assert all(f.documentation for f in families.values())
    # Histogram buckets are cumulative and end in +Inf == _count, per label set.
    for name in ("dreamq_job_queue_seconds", "dreamq_job_run_seconds"):
        series: dict[tuple, list] = {}
        counts = {}
        for s in families[name].samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name.endswith("_bucket"):
                series.setdefault(labels, []).append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                counts[labels] = s.value
        for labels, buckets in series.items():
            assert [le for le, _ in buckets] == sorted(le for le, _ in buckets) and buckets[-1][0] == math.inf
            assert [n for _, n in buckets] == sorted(n for _, n in buckets) and buckets[-1][1] == counts[labels]


def test_redis_down_still_answers_a_parsable_scrape(tmp_path):
    from dreamq.redis_server import free_port

    client = make_app(f"redis://127.0.0.1:{free_port()}/0", tmp_path).test_client()
    assert scrape(client) == {"dreamq_redis_up": {(): 0.0}}


def autoscaling_docs() -> list[dict]:
    text = (ROOT / "docs" / "AUTOSCALING.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert blocks, "docs/AUTOSCALING.md has no yaml example"
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


def test_the_autoscaling_examples_parse_and_query_metrics_that_exist(app, client, clean_redis):
    """No cluster runs here: the examples are parsed, and their queries name only metrics we export."""
    docs = autoscaling_docs()
    scaled = [d for d in docs if d.get("kind") == "ScaledObject"]
    assert scaled and scaled[0]["apiVersion"] == "keda.sh/v1alpha1"
    (trigger,) = scaled[0]["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    rules = [rule for d in docs for group in d.get("groups", []) for rule in group["rules"]]
    assert any(rule.get("alert") for rule in rules)
    queries = [trigger["metadata"]["query"]] + [rule["expr"] for rule in rules]
    exported = set(scrape(client))
    for query in queries:
        named = set(re.findall(r"\bdreamq_\w+", query))
        assert named and named <= exported, (query, named - exported)
    assert {"dreamq_queue_depth", "dreamq_workers_busy"} <= set(re.findall(r"\bdreamq_\w+", queries[0]))


def test_a_scrape_costs_the_same_with_thousands_of_jobs_pending_and_still_counts_each(app, client, clean_redis):
    """The scrape folds one batch of the not-yet-counted set (SSCAN, from where the last one stopped),
    never the whole set: its Redis commands do not grow with the queue, and a job whose finish no
    process counted (it died right after) is counted within pending / batch scrapes."""
    from shared.stats import FOLD_BATCH, PENDING

    jobs = Jobs(clean_redis)

    def commands() -> int:
        return int(clean_redis.info("stats")["total_commands_processed"])

    def scrape_cost() -> int:
        before = commands()
        scrape(client)
        return commands() - before - 1  # less the INFO that read the count

    def pend(n: int, finished: int = 0) -> list[str]:
        # Queued records as the lifecycle writes them, each one counted as submitted.
        made = []
        with clean_redis.pipeline(transaction=False) as p:
            for i in range(n):
                job = jobs.new({"model": HED})
                if i < finished:  # finished, by a process that died before it counted it
                    job.status, job.finished_at = "succeeded", job.created_at
                    made.append(job.id)
                p.hset(keys.job(job.id), mapping=job.to_redis(sparse=True))
                p.sadd(PENDING, job.id)
            p.execute()
        return made  # the finished ones

    pend(1000)
    small = max(scrape_cost() for _ in range(3))
    done = pend(5000, finished=5)
    large = max(scrape_cost() for _ in range(3))
    # Flat: 6x the pending jobs, the same batch (SSCAN's count is a hint: a few more may come).
    assert large <= 1.5 * small and large < 3 * FOLD_BATCH, (small, large)
    counted = lambda: sum(v for labels, v in scrape(client).get("dreamq_jobs_finished_total", {}).items())  # noqa: E731
    for _ in range(6000 // FOLD_BATCH + 2):
        if counted() >= len(done):
            break
    assert counted() == len(done) and not any(clean_redis.sismember(PENDING, i) for i in done)
