"""Status polling throughput of one web process while a worker dreams.

    .venv/bin/python -m bench.polling [--seconds 10] [--connections 32]

One gunicorn process (gthread, 16 threads) pinned to CPU 0, one worker
pinned to CPU 1 with one TensorFlow thread, running a long job; `wrk`
(Debian package) hammers GET /api/v1/jobs/<id> on 127.0.0.1 for a bounded
time.  Baseline in the same run: /healthz (the same server doing no Redis work).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from bench.machine import print_header


def wrk(url: str, seconds: int, connections: int, pin: bool) -> dict:
    out = subprocess.run([*(["taskset", "-c", "1"] if pin else []), "wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s",
                          "--latency", url], capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+\w+)", out).group(1)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else "none"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--worker-threads", type=int, default=1,
                    help="DREAMQ_INTRA/INTER_OP_THREADS of the worker; 0: TensorFlow's default (all cores)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores (a shared host)")
    args = ap.parse_args()
    print_header()
    if not shutil.which("wrk"):
        sys.exit("needs wrk: apt-get install wrk")

    from PIL import Image

    from bench.cluster import ROOT, SAMPLE, Service
    from dreamq.redis_server import EmbeddedRedis, free_port

    tmp = Path(tempfile.mkdtemp())
    server = EmbeddedRedis(tmp / "redis").start()
    svc = Service(server.url, tmp, {"DREAMQ_MODELS": "vgg16_hed"})
    port = free_port()
    web = None
    try:
        threads = str(args.worker_threads)
        worker = svc.start_worker(DREAMQ_INTRA_OP_THREADS=threads, DREAMQ_INTER_OP_THREADS=threads)
        if not args.no_pin:
            os.sched_setaffinity(worker.pid, {1})
        env = {**svc.env}
        pin = [] if args.no_pin else ["taskset", "-c", "0"]
        web = subprocess.Popen([*pin, sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                                "--workers", "1", "--threads", "16", "--worker-class", "gthread",
                                "web:create_app()"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                requests.get(base + "/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((256, 256)))
        job_id = svc.submit(image, model="vgg16_hed", iterations=500)
        svc.wait(job_id, statuses=("running",))
        health = wrk(base + "/healthz", args.seconds, args.connections, not args.no_pin)
        status = wrk(f"{base}/api/v1/jobs/{job_id}", args.seconds, args.connections, not args.no_pin)
        still = svc.state.get(job_id).status
        where = "unpinned" if args.no_pin else "web on CPU 0, worker and wrk on CPU 1"
        print(f"one gunicorn process (gthread x16); worker threads {args.worker_threads or 'default'}; {where}; "
              f"job {still} throughout; wrk -c {args.connections} -d {args.seconds}s")
        print(f"GET /healthz (baseline)      {health}")
        print(f"GET /api/v1/jobs/<id>        {status}   ratio to baseline {status['rps'] / health['rps']:.2f}")
        svc.state.cancel(job_id)
    finally:
        if web is not None:
            web.terminate()
            web.wait(10)
        svc.stop()
        server.stop()


if __name__ == "__main__":
    main()
