"""Hooks are installed by one call in every process (shared/hooks.py): a plugin hears the web's
transitions too, not only a worker's; nothing subscribes by being imported."""
import json
import os
import subprocess
import sys

from bench import probe_plugin
from ..conftest import QUICK, ROOT
from ..webutil import make_app, post_job


def seen(r) -> list[dict]:
    return [json.loads(x) for x in r.lrange(probe_plugin.SEEN, 0, -1)]


def test_a_plugin_hears_a_job_canceled_from_the_web_while_queued(clean_redis, redis_url, tmp_path, jpeg):
    client = make_app(redis_url, tmp_path, plugins=["bench.probe_plugin"]).test_client()
    r = post_job(client, jpeg, **QUICK, cache="false")
    assert r.status_code == 202, r.get_json()
    job = r.get_json()["id"]
    assert client.post(f"/api/v1/jobs/{job}/cancel").status_code == 202
    here = [(s["event"], s.get("status")) for s in seen(clean_redis) if s["job"] == job and s["pid"] == os.getpid()]
    assert here == [("submitted", None), ("finished", "canceled")], seen(clean_redis)


def test_importing_subscribes_nothing_and_install_subscribes_each_once():
    code = ("from shared import cache, stats, webhooks, hooks\n"
            "from shared.jobs import job_finished\n"
            "from shared.settings import Settings\n"
            "count = lambda: len(list(job_finished.receivers_for(object())))\n"
            "before = count(); hooks.install(Settings()); hooks.install(Settings())\n"
            "print(before, count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.stdout.split() == ["0", "3"], out.stderr  # stats, cache, webhooks: once each
