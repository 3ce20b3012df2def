"""An owner's listing against the number of other owners' jobs in Redis.

    python -m bench.listing [--others 0,1000,10000] [--runs 20]

Token mode, the web's request path (Flask test client) on an embedded Redis.  Bob has 30 jobs;
Alice gets more and more (written as submit writes them: the lifecycle's own record and indexes,
no HTTP per job).  Prints Bob's first and second page (limit 20), median of ``--runs``, and the
ratio to the run with no other jobs: O(page) reads stay near 1.0.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.machine import print_header

ALICE, BOB = "alice-" + "a" * 32, "bob-" + "b" * 32


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--others", default="0,1000,10000", help="Alice's job counts, comma-separated, rising")
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args(argv)
    import redis

    from shared.jobs import Jobs
    from dreamq.redis_server import EmbeddedRedis
    from shared.settings import Settings
    from web import create_app
    from web.auth import token_hash

    print_header()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis").start()
        try:
            r = redis.Redis.from_url(server.url)
            app = create_app(Settings(redis_url=server.url, data_dir=Path(tmp) / "data", api_tokens=[ALICE, BOB]))
            client, jobs = app.test_client(), Jobs(r)
            for _ in range(30):
                jobs.try_save_new(jobs.new({"model": "vgg16_hed"}, owner=token_hash(BOB)))
            headers = {"Authorization": f"Bearer {BOB}"}

            def timed(url: str) -> float:
                times = []
                client.get(url, headers=headers)  # warm: the first request of a path pays for imports
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    assert client.get(url, headers=headers).status_code == 200
                    times.append(time.perf_counter() - t0)
                return statistics.median(times) * 1000

            alice, have, base = token_hash(ALICE), 0, None
            print(f"{'Alice jobs':>10} {'page 1 ms':>10} {'page 2 ms':>10} {'ratio p1':>9} {'ratio p2':>9}")
            for n in (int(x) for x in args.others.split(",")):
                for _ in range(n - have):
                    jobs.try_save_new(jobs.new({"model": "vgg16_hed"}, owner=alice))
                have = n
                cursor = client.get("/api/v1/jobs?limit=20", headers=headers).get_json()["next_cursor"]
                first, second = timed("/api/v1/jobs?limit=20"), timed(f"/api/v1/jobs?limit=20&cursor={cursor}")
                base = base or (first, second)
                print(f"{n:>10} {first:>10.1f} {second:>10.1f} {first / base[0]:>9.2f} {second / base[1]:>9.2f}",
                      flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
