"""Webhooks: SSRF refusals at submit, Standard Webhooks signatures that the `standardwebhooks`
library verifies, and real deliveries: a `dreamq webhooks` process POSTing to a real HTTP receiver
on 127.0.0.1, with retries, the record of each attempt on the job, and /metrics; and slow
receivers (answering a byte at a time) beside a normal one, with a delivery process of their own.

One delivery process and one receiver serve the whole module (Redis is flushed once, at its
start: the delivery process's queue binding lives there).  Jobs are moved through their
lifecycle with Jobs, as a worker moves them, except in the test with a real worker.
"""
from __future__ import annotations

import json
import socket
import time

import pytest
import redis
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from bench.cluster import Service
from bench.receiver import Answer, DripReceiver, Receiver
from shared import keys
from shared.images import encode_png
from shared.settings import Settings
from shared.signing import check_secret, new_secret, signed_headers

from ..webutil import post_job, wait_for

pytestmark = pytest.mark.slow  # a minute or more: scheduled first (tests/conftest.py)

SECRET = new_secret()
ATTEMPTS = 4  # DREAMQ_WEBHOOK_MAX_ATTEMPTS here: after the first, waits of 0.05, 0.2 and 0.8 s
DELIVERY_ENV = {"DREAMQ_WEBHOOK_SECRET": SECRET, "DREAMQ_WEBHOOK_ALLOW_PRIVATE": "1",
                "DREAMQ_WEBHOOK_RETRY_BASE_S": "0.05", "DREAMQ_WEBHOOK_MAX_ATTEMPTS": str(ATTEMPTS),
                "DREAMQ_WEBHOOK_TIMEOUT_S": "1", "DREAMQ_WEBHOOK_PROGRESS_INTERVAL_S": "1"}


def make_web(redis_url: str, tmp_path, resolver=None, **overrides):
    from web import create_app

    settings = Settings(redis_url=redis_url, data_dir=tmp_path / "data", **overrides)
    return create_app(settings, resolver=resolver)


# -- signatures: what a receiver's library checks ------------------------------------------

def test_deliveries_are_signed_as_the_standardwebhooks_library_verifies():
    body = json.dumps({"id": "x", "status": "succeeded"})
    headers = signed_headers(SECRET, "msg_1", body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, headers) == {"id": "x", "status": "succeeded"}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("succeeded", "failed"), headers)  # a changed body
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)  # another key
    with pytest.raises(WebhookVerificationError):  # an old signature replayed: past the 5 minutes receivers allow
        Webhook(SECRET).verify(body, signed_headers(SECRET, "msg_1", body, timestamp=1_000_000_000))


@pytest.mark.parametrize("secret", ["", "whsec_", "secret", "whsec_not base64!", "whsec_" + "QUJD" * 2])
def test_a_malformed_secret_is_refused_without_showing_it(secret):
    with pytest.raises(ValueError) as caught:
        check_secret(secret)
    assert "whsec_" in str(caught.value) and (not secret[6:] or secret[6:] not in str(caught.value))
    if secret:
        with pytest.raises(ValueError) as caught:
            Settings(webhook_secret=secret)
        assert secret[6:] not in str(caught.value) or not secret[6:]


# -- SSRF: refused at submit --------------------------------------------------------------

PRIVATE_URLS = {
    "http://169.254.169.254/latest/meta-data/": "link-local",  # cloud metadata
    "http://[::ffff:127.0.0.1]/": "loopback",  # IPv4-mapped IPv6
    "http://2130706433/": "loopback",  # 127.0.0.1 as one decimal number
    "http://0x7f.1/": "loopback",  # hex and a short form
    "http://0177.0.0.1/": "loopback",  # octal
    "http://[::1]:8080/": "loopback",
    "http://10.1.2.3/": "private",
    "http://0.0.0.0/": "unspecified",
    "http://224.0.0.1/": "multicast",
    "http://[fe80::1]/": "link-local",
    "http://[2002:7f00:1::]/": "loopback",  # 6to4 carrying 127.0.0.1
    "http://hooks.internal.example/": "private",  # the test resolver: 10.0.0.1
}


def resolver(host: str, port: int) -> list[str]:
    """A test resolver: two names of our own, every IP literal (in any spelling) as the system reads it."""
    names = {"hooks.internal.example": ["10.0.0.1"], "hooks.public.example": ["93.184.215.14"],
             "mixed.example": ["93.184.215.14", "127.0.0.1"]}
    if host in names:
        return names[host]
    return list(dict.fromkeys(i[4][0] for i in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                   flags=socket.AI_NUMERICHOST)))


@pytest.fixture
def web(clean_redis, redis_url, tmp_path):
    return make_web(redis_url, tmp_path, resolver, webhook_secret=SECRET)


@pytest.mark.parametrize("url", [*PRIVATE_URLS, "file:///etc/passwd", "ftp://hooks.public.example/",
                                 "http://mixed.example/", "http:///no-host", "http://hooks.public.example/#frag",
                                 "http://nowhere.invalid/", "http://hooks.public.example/a b"])
def test_a_webhook_that_reaches_a_private_address_or_is_no_http_url_is_a_422(web, clean_redis, jpeg, url):
    r = post_job(web.test_client(), jpeg, webhook=url)
    assert r.status_code == 422, r.get_data(as_text=True)
    error = r.get_json()["error"]
    assert set(error["fields"]) == {"webhook"}, error
    if url in PRIVATE_URLS:
        assert f"{PRIVATE_URLS[url]} address" in error["fields"]["webhook"], error
    assert clean_redis.zcard(keys.JOBS) == 0 and clean_redis.llen("dreamq") == 0  # nothing kept


def test_a_public_webhook_is_kept_on_the_job_and_shown(web, jpeg):
    client = web.test_client()
    r = post_job(client, jpeg, webhook="https://hooks.public.example/dreams?token=abc",
                 webhook_events_filter="completed, start")
    assert r.status_code == 202, r.get_json()
    hook = client.get(r.headers["Location"]).get_json()["webhook"]
    assert hook["url"] == "https://hooks.public.example/dreams?token=abc"
    assert hook["events_filter"] == ["start", "completed"]  # in lifecycle order
    assert (hook["status"], hook["attempts"], hook["last_status"], hook["history"]) == ("pending", 0, None, [])
    # No webhook: null.
    plain = post_job(client, jpeg, iterations="3").get_json()
    assert plain["webhook"] is None


@pytest.mark.parametrize("fields, field", [
    ({"webhook": "https://hooks.public.example/", "webhook_events_filter": "finished"}, "webhook_events_filter"),
    ({"webhook": "https://hooks.public.example/", "webhook_events_filter": ","}, "webhook_events_filter"),
    ({"webhook_events_filter": "completed"}, "webhook_events_filter"),
])
def test_a_bad_events_filter_is_a_422_naming_it(web, jpeg, fields, field):
    r = post_job(web.test_client(), jpeg, **fields)
    assert r.status_code == 422 and field in r.get_json()["error"]["fields"], r.get_json()


def test_without_a_secret_a_webhook_is_refused_saying_why(clean_redis, redis_url, tmp_path, jpeg):
    r = post_job(make_web(redis_url, tmp_path, resolver).test_client(), jpeg, webhook="https://hooks.public.example/")
    assert r.status_code == 422
    assert "DREAMQ_WEBHOOK_SECRET" in r.get_json()["error"]["fields"]["webhook"]


# -- real deliveries --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def delivery(redis_url, tmp_path_factory):
    """A `dreamq webhooks` process and a receiver, for the module."""
    redis.Redis.from_url(redis_url).flushdb()
    service = Service(redis_url, tmp_path_factory.mktemp("webhooks"), DELIVERY_ENV)
    with Receiver() as rx:
        service.start_webhooks()
        service.receiver = rx
        yield service
        service.stop()


@pytest.fixture
def app(delivery):
    from web import create_app

    return create_app(delivery.settings)


def submit(app, jpeg, url: str, events: str = "completed", **fields) -> dict:
    r = post_job(app.test_client(), jpeg, webhook=url, webhook_events_filter=events, **fields)
    assert r.status_code == 202, r.get_json()
    return r.get_json()


def run_job(service, job_id: str, status: str = "succeeded") -> None:
    """Start and end the job as a worker does (the signals fire in this process)."""
    dispatch = service.redis.hget(keys.job(job_id), "dispatch").decode()
    assert service.state.start(job_id, dispatch, "host:7") == "ok"
    assert service.state.finish(job_id, "host:7", status) == "ok"


def webhook_state(service, job_id: str) -> dict:
    return service.state.get(job_id).webhook_json()


def verified(received) -> dict:
    """The body of one delivery, verified exactly as a receiver would."""
    return Webhook(SECRET).verify(received.body, received.headers)


def test_a_receiver_answering_500_twice_gets_three_attempts_and_the_job_records_them(delivery, app, jpeg):
    rx = delivery.receiver
    rx.script("/flaky", 500, 500, 200)
    job = submit(app, jpeg, rx.url("/flaky"))
    run_job(delivery, job["id"])
    got = rx.wait(3, "/flaky")
    assert len({r.headers["webhook-id"] for r in got}) == 1  # one event: the same id on every attempt
    bodies = [verified(r) for r in got]  # each attempt is signed (and re-timestamped)
    assert all(b["id"] == job["id"] and b["status"] == "succeeded" for b in bodies)
    state = wait_for(lambda: (s := webhook_state(delivery, job["id"]))["status"] == "delivered" and s, 10,
                     "the third attempt to be recorded")
    assert (state["attempts"], state["delivered"], state["last_status"], state["last_error"]) == (3, 1, 200, None)
    assert [(h["event"], h["attempt"], h["status"]) for h in state["history"]] == [
        ("completed", 1, 500), ("completed", 2, 500), ("completed", 3, 200)]
    assert state["history"][0]["error"] == "HTTP 500"
    # Spaced by the backoff: after 0.05 s (+-20 %), then 0.2 s.
    assert got[1].at - got[0].at >= 0.04 and got[2].at - got[1].at >= 0.16
    assert got[0].headers["Content-Type"] == "application/json"
    assert got[0].headers["Host"] == f"127.0.0.1:{rx.port}"

    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert metric(text, 'dreamq_webhook_attempts_total{outcome="http_error"}') >= 2
    assert metric(text, 'dreamq_webhook_attempts_total{outcome="success"}') >= 1
    assert metric(text, 'dreamq_webhook_deliveries_total{result="delivered"}') >= 1


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def test_a_receiver_that_keeps_failing_is_given_up_on_after_the_last_attempt(delivery, app, jpeg):
    rx = delivery.receiver
    rx.script("/down", 503)
    job = submit(app, jpeg, rx.url("/down"))
    run_job(delivery, job["id"], "failed")
    rx.wait(ATTEMPTS, "/down")
    state = wait_for(lambda: (s := webhook_state(delivery, job["id"]))["status"] == "failed" and s, 10,
                     "the job to record that its webhook was given up on")
    assert state["attempts"] == ATTEMPTS and state["last_status"] == 503 and state["delivered"] == 0
    assert verified(rx.requests_to("/down")[0])["status"] == "failed"
    with pytest.raises(TimeoutError):  # no fifth attempt
        rx.wait(ATTEMPTS + 1, "/down", timeout=2)


def test_a_redirect_is_not_followed_and_a_4xx_is_not_tried_again(delivery, app, jpeg):
    rx = delivery.receiver
    rx.script("/moved", Answer(302, location=rx.url("/elsewhere")))
    rx.script("/gone", 410)
    moved, gone = submit(app, jpeg, rx.url("/moved")), submit(app, jpeg, rx.url("/gone"), iterations="3")
    run_job(delivery, moved["id"])
    run_job(delivery, gone["id"])
    for job, status in ((moved, 302), (gone, 410)):
        state = wait_for(lambda: (s := webhook_state(delivery, job["id"]))["status"] == "failed" and s, 10,
                         "the answer to be recorded")
        assert (state["attempts"], state["last_status"]) == (1, status)
    assert rx.requests_to("/elsewhere") == []
    assert len(rx.requests_to("/moved")) == 1 and len(rx.requests_to("/gone")) == 1


def test_network_errors_and_timeouts_are_tried_again_and_recorded(delivery, app, jpeg):
    rx = delivery.receiver
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    refused = submit(app, jpeg, f"http://127.0.0.1:{closed}/hook")
    rx.script("/slow", Answer(200, delay_s=1.6))  # past DREAMQ_WEBHOOK_TIMEOUT_S=1 to read the answer
    slow = submit(app, jpeg, rx.url("/slow"), iterations="3")
    run_job(delivery, refused["id"])
    run_job(delivery, slow["id"])
    for job, words in ((refused, "refused"), (slow, "timed out")):
        state = wait_for(lambda: (s := webhook_state(delivery, job["id"]))["status"] == "failed" and s, 30,
                         "every attempt to be recorded")
        assert state["attempts"] == ATTEMPTS and state["last_status"] is None
        assert words in state["last_error"].lower(), state
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert metric(text, 'dreamq_webhook_attempts_total{outcome="network_error"}') >= 2 * ATTEMPTS


def test_the_delivery_connects_to_the_address_it_checked_with_the_name_as_host(delivery):
    """A host is resolved once per attempt, checked, and that address is connected to: no second
    lookup a DNS rebinding could answer.  A name resolving to a private address is refused there too."""
    from dreamq.delivery import post

    rx = delivery.receiver
    body = json.dumps({"id": "pinned"})
    settings = Settings(webhook_allow_private=True, webhook_timeout_s=2)
    outcome = post(f"http://hooks.test:{rx.port}/pinned", body, signed_headers(SECRET, "msg_p", body), settings,
                   resolve=lambda host, port: ["127.0.0.1"] if host == "hooks.test" else [])
    assert outcome.ok, outcome.error
    (got,) = rx.requests_to("/pinned")
    assert got.headers["Host"] == f"hooks.test:{rx.port}" and verified(got) == {"id": "pinned"}

    strict = Settings(webhook_allow_private=False)
    refused = post(f"http://hooks.test:{rx.port}/pinned", body, {}, strict,
                   resolve=lambda host, port: ["10.0.0.1"])  # rebinding after the submit's check
    assert refused.refused and not refused.retryable and "private address" in refused.error
    assert len(rx.requests_to("/pinned")) == 1  # nothing was sent


def test_https_goes_to_the_checked_address_and_verifies_the_certificate_of_the_name(tmp_path, monkeypatch):
    """TLS to the pinned address: SNI and the certificate check use the URL's name, so a receiver
    must hold a certificate for that name that the system trusts; a self-signed one is refused."""
    import subprocess

    from dreamq.delivery import post

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=hooks.test", "-addext", "subjectAltName=DNS:hooks.test", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    settings = Settings(webhook_allow_private=True, webhook_timeout_s=2)
    body = json.dumps({"id": "tls"})
    pinned = lambda host, port: ["127.0.0.1"] if host == "hooks.test" else []  # noqa: E731
    with Receiver(tls=(str(cert), str(key))) as rx:
        url = f"https://hooks.test:{rx.port}/tls"
        refused = post(url, body, signed_headers(SECRET, "msg_t", body), settings, resolve=pinned)
        assert refused.status is None and "certificate verify failed" in refused.error.lower(), refused.error
        assert refused.retryable  # as any network error (the receiver may fix its certificate)
        assert rx.requests_to("/tls") == []

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now the system trusts it (OpenSSL reads this)
        outcome = post(url, body, signed_headers(SECRET, "msg_t", body), settings, resolve=pinned)
        assert outcome.ok, outcome.error
        (got,) = rx.requests_to("/tls")
        assert got.headers["Host"] == f"hooks.test:{rx.port}" and verified(got) == {"id": "tls"}


def test_a_canceled_job_sends_completed(delivery, app, jpeg):
    rx = delivery.receiver
    job = submit(app, jpeg, rx.url("/canceled"), events="start,completed")
    assert app.test_client().post(job["links"]["cancel"]).status_code == 202
    (got,) = rx.wait(1, "/canceled")
    body = verified(got)
    assert body["status"] == "canceled" and body["error"]["code"] == "canceled"


def test_the_compose_healthcheck_of_the_delivery_process_passes_while_it_runs(delivery):
    """The healthcheck compose runs in the webhooks container, run here against this delivery process."""
    import os
    import subprocess

    import yaml

    from bench.cluster import ROOT

    check = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["webhooks"]["healthcheck"]
    assert check["test"][0] == "CMD-SHELL"
    command = check["test"][1].replace("$$", "$")  # compose's escape for a literal $
    import sys

    env = {**os.environ, "DREAMQ_REDIS_URL": delivery.settings.redis_url, "HOSTNAME": socket.gethostname(),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}  # the image's celery
    done = subprocess.run(["sh", "-c", command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # And it fails for a node that does not answer.
    env["HOSTNAME"] = "no-such-host"
    assert subprocess.run(["sh", "-c", command], env=env, cwd=ROOT, capture_output=True, timeout=60).returncode != 0


@pytest.mark.slow
def test_a_real_worker_sends_start_progress_output_and_completed(delivery, tiny_photo):
    """A job on a real worker: each event arrives once and signed, and the completed body is the job
    as GET /api/v1/jobs/{id} shows it."""
    from web import create_app

    rx = delivery.receiver
    delivery.start_worker(DREAMQ_WEBHOOK_PROGRESS_INTERVAL_S="1")
    client = create_app(delivery.settings).test_client()
    r = post_job(client, encode_png(tiny_photo), webhook=rx.url("/real"),
                 webhook_events_filter="start,progress,output,completed",
                 model="vgg16_hed", layers="block3_conv3=1", octaves="2", iterations="10", cache="false")
    assert r.status_code == 202, r.get_json()
    job_id = r.get_json()["id"]
    delivery.wait(job_id, timeout=180)
    wait_for(lambda: any(verified(x)["status"] == "succeeded" for x in rx.requests_to("/real")), 30,
             "the completed event")
    events = [(x, verified(x)) for x in sorted(rx.requests_to("/real"), key=lambda x: x.at)]
    # Each event once (progress and output at least once); arrival order is not promised (docs/INTEGRATIONS.md).
    names = [x.headers["Dreamq-Event"] for x, _ in events]
    assert names.count("completed") == 1 and names.count("start") == 1, names
    assert "progress" in names and "output" in names, names
    # Throttled: progress came at most once per second (DREAMQ_WEBHOOK_PROGRESS_INTERVAL_S=1).
    sent = [int(x.headers["webhook-timestamp"]) for x, _ in events if x.headers["Dreamq-Event"] == "progress"]
    run_s = next(body for x, body in events if x.headers["Dreamq-Event"] == "completed")["metrics"]["run_s"]
    assert len(sent) <= run_s + 2, (sent, run_s)
    for (x, body) in events:
        assert body["status"] == ("succeeded" if x.headers["Dreamq-Event"] == "completed" else "running"), names
    assert len({x.headers["webhook-id"] for x, _ in events}) == len(events)  # one id per event
    assert any(body["links"]["preview"] for x, body in events if x.headers["Dreamq-Event"] == "output")
    final = next(body for x, body in events if x.headers["Dreamq-Event"] == "completed")
    shown = client.get(f"/api/v1/jobs/{job_id}").get_json()
    # The job as the API shows it, except the delivery record, which the delivery itself moved on.
    assert {k: v for k, v in final.items() if k != "webhook"} == {k: v for k, v in shown.items() if k != "webhook"}
    assert final["links"]["result"] == f"/api/v1/jobs/{job_id}/result"
    state = wait_for(lambda: (s := shown_state(client, job_id))["delivered"] == len(events) and s, 10,
                     "every delivery to be recorded")
    assert state["status"] == "delivered" and state["attempts"] == len(events)


def shown_state(client, job_id: str) -> dict:
    return client.get(f"/api/v1/jobs/{job_id}").get_json()["webhook"]


# -- slow receivers: the attempt deadline and each origin's share ------------------------------

SLOW_ATTEMPT_S = 3.0  # DREAMQ_WEBHOOK_ATTEMPT_S of the delivery process below
SLOW_THREADS, SLOW_PER_ORIGIN = 4, 2
DRIP_S = 0.5  # a dripping receiver's byte interval: under DREAMQ_WEBHOOK_TIMEOUT_S=1, so no read times out
SLACK_S = 1.0  # for the processes to be scheduled, on a busy machine
SLOW_ENV = {"DREAMQ_WEBHOOK_SECRET": SECRET, "DREAMQ_WEBHOOK_ALLOW_PRIVATE": "1", "DREAMQ_WEBHOOK_TIMEOUT_S": "1",
            "DREAMQ_WEBHOOK_ATTEMPT_S": str(SLOW_ATTEMPT_S), "DREAMQ_WEBHOOK_CONCURRENCY": str(SLOW_THREADS),
            "DREAMQ_WEBHOOK_PER_ORIGIN": str(SLOW_PER_ORIGIN), "DREAMQ_WEBHOOK_MAX_ATTEMPTS": "1"}


@pytest.fixture(scope="module")
def slow_delivery(tmp_path_factory):
    """A `dreamq webhooks` process of 4 threads with a Redis of its own (the module's delivery process
    consumes the same queue name), one attempt per event, each of at most SLOW_ATTEMPT_S."""
    from dreamq.redis_server import EmbeddedRedis
    from web import create_app

    tmp = tmp_path_factory.mktemp("slow-webhooks")
    server = EmbeddedRedis(tmp / "redis").start()
    service = Service(server.url, tmp, SLOW_ENV)
    try:
        service.start_webhooks()
        service.app = create_app(service.settings)
        yield service
    finally:
        service.stop()
        server.stop()


def events_beside(service, jpeg, slow_urls: list[str], rx) -> tuple[float, list[str]]:
    """The `completed` event of a job for each slow URL, then of one for ``rx``'s /normal: its latency
    (from the job's finish to the receiver reading it; TimeoutError past 3 attempt deadlines), and
    the slow jobs."""
    jobs = [submit(service.app, jpeg, url, cache="false")["id"] for url in slow_urls]
    for job_id in jobs:
        run_job(service, job_id)
    time.sleep(0.3)  # their attempts have started
    job = submit(service.app, jpeg, rx.url("/normal"), cache="false")
    run_job(service, job["id"])
    finished = service.state.get(job["id"]).finished_at
    (got,) = rx.wait(1, "/normal", timeout=3 * SLOW_ATTEMPT_S)
    return got.at - finished, jobs


def cut_at_the_deadline(service, jobs: list[str], slow: list[DripReceiver]) -> None:
    """Every slow attempt was cut at the deadline, no sooner (no read timed out), no later, and recorded."""
    for job_id in jobs:
        state = wait_for(lambda: (s := webhook_state(service, job_id))["status"] == "failed" and s, 10 * SLOW_ATTEMPT_S,
                         "the slow attempt to be recorded")
        assert state["attempts"] == 1 and state["last_status"] is None, state  # waiting for a slot is no attempt
        assert state["last_error"] == f"attempt deadline of {SLOW_ATTEMPT_S:g} s passed", state
    held = [h for s in slow for h in s.wait(len(s.held), closed=True, timeout=SLOW_ATTEMPT_S + SLACK_S)]
    assert len(held) == len(jobs)
    for h in held:
        assert SLOW_ATTEMPT_S - 0.5 <= h.held_s <= SLOW_ATTEMPT_S + SLACK_S, (h, SLOW_ATTEMPT_S)


def test_dripping_receivers_beside_a_normal_one(slow_delivery, jpeg):
    """Issue 19: six events to one receiver that answers a byte every 0.5 s (more events than the 4
    threads), then one to a normal receiver.  The dripping origin gets its share (2 threads), the
    other events for it wait off the threads, and the normal one goes at once: well within one
    attempt deadline, where without the share it would wait for a thread to come free."""
    with DripReceiver(every_s=DRIP_S) as slow, Receiver() as rx:
        urls = [slow.url(f"/drip/{i}") for i in range(6)]
        latency, jobs = events_beside(slow_delivery, jpeg, urls, rx)
        assert latency < SLOW_ATTEMPT_S, latency
        cut_at_the_deadline(slow_delivery, jobs, [slow])
        assert slow.max_open <= SLOW_PER_ORIGIN  # never more than its share at once


def test_dripping_receivers_on_more_origins_than_threads_delay_another_by_one_deadline_at_most(slow_delivery, jpeg):
    """Five dripping receivers, each its own origin, hold all 4 threads: the normal one waits for the
    first to be cut at the attempt deadline, no longer."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        slow = [stack.enter_context(DripReceiver(every_s=DRIP_S)) for _ in range(SLOW_THREADS + 1)]
        rx = stack.enter_context(Receiver())
        urls = [s.url("/drip") for s in slow]
        latency, jobs = events_beside(slow_delivery, jpeg, urls, rx)
        assert latency <= SLOW_ATTEMPT_S + SLACK_S, latency
        cut_at_the_deadline(slow_delivery, jobs, slow)


@pytest.mark.parametrize("drip", ["answer", "body"])
def test_one_attempt_ends_at_its_deadline_whichever_part_of_the_answer_drips(drip):
    """A receiver that drips its status line and headers is cut at the deadline (a retryable network
    error); one that sent its status and headers and drips the body keeps its status."""
    from dreamq.delivery import post

    settings = Settings(webhook_allow_private=True, webhook_timeout_s=1, webhook_attempt_s=1.5)
    body = json.dumps({"id": "drip"})
    with DripReceiver(every_s=0.3, hold_s=10, drip=drip) as slow:  # the whole answer after 10 s
        started = time.monotonic()
        outcome = post(slow.url("/drip"), body, signed_headers(SECRET, "msg_d", body), settings)
        took = time.monotonic() - started
        (held,) = slow.wait(1, closed=True, timeout=SLACK_S)
    assert 1.5 - 0.1 <= took <= 1.5 + SLACK_S and held.held_s <= 1.5 + SLACK_S and not held.finished, (took, held)
    if drip == "answer":
        assert outcome.status is None and outcome.error == "attempt deadline of 1.5 s passed"
        assert outcome.retryable and outcome.kind == "network_error"
    else:
        assert outcome.ok, outcome.error


def test_an_origins_slots_are_leases_that_a_crashed_attempt_cannot_keep(redis_url, monkeypatch):
    from dreamq import delivery

    r = redis.Redis.from_url(redis_url)
    settings = Settings(webhook_per_origin=2, webhook_attempt_s=0.2)
    url = "https://Hooks.Example:443/a?b"
    assert delivery.origin(url) == delivery.origin("https://hooks.example/other") == "https://hooks.example:443"
    assert delivery.origin("http://[::1]:8080/") == "http://[::1]:8080"
    r.delete(keys.webhook_origin(delivery.origin(url)))
    first, second, third = (delivery.take_slot(r, url, settings) for _ in range(3))
    assert first[0] and second[0] and third == (False, None)
    assert delivery.take_slot(r, "https://hooks.example:8443/", settings)[0]  # another port: another origin
    delivery.give_slot(r, first[1])
    assert delivery.take_slot(r, url, settings)[0]
    # Two slots held by attempts that never give them back: free once their lease ends.
    monkeypatch.setattr(delivery, "LEASE_MARGIN_S", 0.0)
    r.delete(keys.webhook_origin(delivery.origin(url)))
    assert delivery.take_slot(r, url, settings)[0] and delivery.take_slot(r, url, settings)[0]
    assert not delivery.take_slot(r, url, settings)[0]
    time.sleep(0.3)
    assert delivery.take_slot(r, url, settings)[0]
    assert delivery.take_slot(r, url, Settings(webhook_per_origin=0)) == (True, None)  # 0: no share
