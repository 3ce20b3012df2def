"""Errors in plain words for the person at the form (issue 21): a file that is not an image, a
model no running worker has, and a failed job, each said in one short sentence; the operator's
detail (exception text, paths, URLs) stays in the worker's log and with admin tokens.
"""
from __future__ import annotations

import json
import re

import pytest
import redis

from shared import keys
from shared.images import UNREADABLE, encode_png
from web.availability import NO_LIVE_WORKER, check_model

from ..webutil import heartbeat, make_app, post_job, sse_events
from .test_pages import form_post

USER, ADMIN = "u" * 40, "a" * 40


def assert_plain(text: str) -> None:
    """No Python repr, address, URL or errno: nothing a person at the form cannot read."""
    for needle in ("<_io.", "0x", "http", "Errno", "Traceback"):
        assert needle not in text, (needle, text[:2000])


# -- a file that is not an image ----------------------------------------------------------------

def test_a_file_that_is_not_an_image_is_said_once_in_plain_words(client):
    r = form_post(client, b"hello, I am a text file" * 10)
    html = r.get_data(as_text=True)
    assert r.status_code == 415 and "Turn a photo" in html
    assert html.count(UNREADABLE) == 1, html
    assert_plain(html)
    # The field's own slot stays empty: the sentence above already says it.
    assert re.search(r'data-for="image">\s*<', html)


def test_the_api_says_the_same_sentence(client):
    error = post_job(client, b"<svg xmlns='http://www.w3.org/2000/svg'/>", "a.png").get_json()["error"]
    assert error["code"] == "unsupported_image" and error["message"] == UNREADABLE
    assert error["fields"] == {"image": UNREADABLE}


# -- a model no running worker has --------------------------------------------------------------

def test_a_model_every_live_worker_reports_unavailable_is_refused_naming_model(client, clean_redis, jpeg):
    heartbeat(clean_redis, "a:1")  # vgg16_hed ready, inception_v3 unavailable
    heartbeat(clean_redis, "b:2", models={"vgg16_hed": "ready"})  # does not load inception_v3 at all
    r = post_job(client, jpeg, model="inception_v3")
    assert r.status_code == 422, r.get_json()
    error = r.get_json()["error"]
    assert error["code"] == "invalid_params" and "vgg16_hed" in error["fields"]["model"]
    assert "inception_v3" in error["fields"]["model"] and "no weights" not in json.dumps(error)
    assert clean_redis.llen("dreamq") == 0 and not clean_redis.exists(keys.JOBS)  # nothing kept
    # The form shows it next to the model.
    html = form_post(client, jpeg, model="inception_v3").get_data(as_text=True)
    assert f'data-for="model">{error["fields"]["model"]}<' in html
    assert_plain(html)


def test_a_worker_still_loading_or_holding_the_model_lets_it_through(client, clean_redis, jpeg):
    heartbeat(clean_redis, "a:1")
    heartbeat(clean_redis, "b:2", ready=False, models={"vgg16_hed": "ready"})  # may still load it
    r = post_job(client, jpeg, model="inception_v3")
    assert r.status_code == 202 and r.get_json()["warnings"] == []
    heartbeat(clean_redis, "b:2", models={"inception_v3": "ready"})
    assert post_job(client, jpeg, model="inception_v3").status_code == 202


def test_with_no_live_worker_the_job_is_accepted_with_a_warning(client, clean_redis, jpeg):
    clean_redis.sadd(keys.WORKERS, "gone:3")  # a worker whose heartbeat expired
    r = post_job(client, jpeg, model="inception_v3")
    assert r.status_code == 202 and r.get_json()["warnings"] == [NO_LIVE_WORKER]
    page = client.get(f"/jobs/{r.get_json()['id']}").get_data(as_text=True)
    assert NO_LIVE_WORKER.split(":")[0] in page


def test_the_check_is_one_redis_call(clean_redis, redis_url):
    heartbeat(clean_redis, "a:1")
    calls: list[str] = []

    class Counting(redis.Redis):
        def execute_command(self, *args, **kwargs):
            calls.append(args[0])
            return super().execute_command(*args, **kwargs)

    client = Counting.from_url(redis_url)
    check_model(client, "vgg16_hed")  # loads the script
    calls.clear()
    assert check_model(client, "vgg16_hed") == []
    assert calls == ["EVALSHA"]


# -- a failed job: a sentence for the user, the detail for operators -----------------------------

@pytest.fixture
def token_client(redis_url, clean_redis, tmp_path):
    """The web with a user token and an admin token."""
    return make_app(redis_url, tmp_path, api_tokens=[USER], admin_tokens=[ADMIN]).test_client()


@pytest.mark.slow  # a real worker loads its model
def test_a_failed_job_shows_a_sentence_and_keeps_the_detail_for_operators(token_client, live_worker, tiny_photo):
    from web.auth import token_hash

    # Queued while no worker could tell the web (e.g. scaled to zero): it reaches one without the model.
    job = live_worker.state.submit({"model": "inception_v3", "iterations": 1}, encode_png(tiny_photo),
                                   owner=token_hash(USER))
    assert live_worker.wait(job.id).status == "failed"
    client, user = token_client, {"Authorization": f"Bearer {USER}"}
    r = client.get(f"/api/v1/jobs/{job.id}", headers=user)
    error = r.get_json()["error"]
    assert error == {"code": "model_unavailable", "message": "the model inception_v3 is not available on this server"}
    assert_plain(r.get_data(as_text=True))
    assert "no-such-weights" not in r.get_data(as_text=True)  # the weights path the worker was given
    # The event stream (and webhook bodies: the same job_json) carry no detail either.
    end = sse_events(client.get(f"/api/v1/jobs/{job.id}/events", headers=user).get_data(as_text=True))[-1]
    assert end[0] == "end" and "detail" not in end[1]["error"]
    # The page shows the sentence.
    page = client.get(f"/jobs/{job.id}", headers=user).get_data(as_text=True)
    assert error["message"] in page and "no-such-weights" not in page
    # The operator's detail: in the worker's log and on the record.
    assert "no-such-weights" in live_worker.read_logs()
    assert "no-such-weights" in live_worker.state.get(job.id).error["detail"]


def test_an_admin_token_sees_the_detail(token_client, clean_redis):
    from shared.jobs import Jobs

    state = Jobs(clean_redis)
    job = state.new({"model": "inception_v3"})
    job.status, job.error = "failed", {"code": "model_unavailable", "message": "m", "detail": "no file at /x"}
    state.save_finished(job)
    admin = token_client.get(f"/api/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {ADMIN}"}).get_json()
    assert admin["error"]["detail"] == "no file at /x"


def test_job_json_shows_the_detail_only_when_asked():
    from shared.job import Job, job_json

    job = Job(id="0" * 36, status="failed", params={}, created_at=1.0,
              error={"code": "internal_error", "message": "m", "detail": "ValueError: x"})
    assert job_json(job)["error"] == {"code": "internal_error", "message": "m"}
    assert job_json(job, detail=True)["error"]["detail"] == "ValueError: x"
    assert "detail" not in job.public()["error"]
