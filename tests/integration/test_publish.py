"""The messages shared/queue.py writes itself (not through ``send_task``: issue 22, submit throughput):
what a Celery worker makes of them, their task-sent event as Flower hears it, their order, their size,
and a canceled job's message still found and dropped.  Real Redis, Celery's own request parser."""
from __future__ import annotations

import json
import uuid

from shared.queue import QUEUE, TASK, enqueue, enqueue_many, make_celery, task_id
from shared.settings import Settings

from .test_operator_tools import listening, task_state


def _app(redis_url, tmp_path):
    return make_celery(Settings(_env_file=None, redis_url=redis_url, data_dir=tmp_path / "data"))


def _pair() -> tuple[str, str]:
    return str(uuid.uuid4()), uuid.uuid4().hex


def test_a_worker_reads_the_job_and_token_of_the_message(clean_redis, redis_url, tmp_path):
    from celery.worker.request import Request

    app = _app(redis_url, tmp_path)

    @app.task(name=TASK)
    def dream(job_id, dispatch):  # the worker's task's signature (worker/tasks.py)
        return None

    job_id, dispatch = _pair()
    enqueue(app, job_id, dispatch)
    with app.connection_for_read() as conn:
        message = conn.SimpleQueue(QUEUE).get(timeout=5)  # kombu's own consumer, as the worker's
        request = Request(message, app=app, task=app.tasks[TASK])
        assert request.id == task_id(dispatch) and request.name == TASK
        assert request.args == [job_id, dispatch] and request.kwargs == {}
        assert request.argsrepr == repr([job_id, dispatch]) and request.root_id == task_id(dispatch)
        assert request.delivery_info["routing_key"] == QUEUE and message.delivery_tag
        message.ack()
    assert clean_redis.llen(QUEUE) == 0


def test_the_task_sent_event_names_the_task_as_send_task_did(clean_redis, redis_url, tmp_path):
    app = _app(redis_url, tmp_path)
    with listening(app) as events:
        job_id, dispatch = _pair()
        enqueue(app, job_id, dispatch)
        task = task_state(events, dispatch, "PENDING", timeout=30)
        assert task.name == TASK and job_id in task.args and task.routing_key == QUEUE


def test_messages_keep_their_order_are_small_and_a_canceled_jobs_is_found(clean_redis, redis_url, tmp_path):
    from shared.jobs import Jobs

    app = _app(redis_url, tmp_path)
    pairs = [_pair() for _ in range(5)]
    enqueue_many(app, pairs[:4], batch=3)  # two round trips
    enqueue(app, *pairs[4])
    raw = [clean_redis.rpop(QUEUE) for _ in range(5)]  # a worker takes from this end
    assert [json.loads(m)["headers"]["argsrepr"][2:38] for m in raw] == [job_id for job_id, _ in pairs]
    assert all(len(m) < 650 for m in raw), [len(m) for m in raw]  # send_task's were ~1,100 bytes

    job_id, dispatch = _pair()
    enqueue(app, job_id, dispatch)
    enqueue(app, *_pair())
    assert Jobs(clean_redis).drop_messages(job_id, QUEUE, TASK) == 1  # the cancel's way to its message
    assert clean_redis.llen(QUEUE) == 1


def test_a_stand_in_app_gets_send_task(redis_url):
    sent = []

    class StandIn:  # what a test gives the web instead of a Celery app
        def send_task(self, name, args=None, **options):
            sent.append((name, args, options["queue"]))

    job_id, dispatch = _pair()
    enqueue(StandIn(), job_id, dispatch)
    assert sent == [(TASK, [job_id, dispatch], QUEUE)]
