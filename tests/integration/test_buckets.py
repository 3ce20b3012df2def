"""Shape buckets and the persistent compilation cache on the JAX backend (issue 23), counted with
JAX's own statistics in processes of their own (tests/jax_buckets.py)."""
import json
import os
import subprocess
import sys

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow

pytest.importorskip("jax")


def dream_sizes(cache_dir, bucket: int, *sizes: str) -> list[dict]:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "tests.jax_buckets", str(cache_dir), str(bucket), *sizes],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_a_new_size_inside_a_bucket_compiles_nothing_and_a_restart_reuses_the_disk_cache(tmp_path):
    first = dream_sizes(tmp_path, 64, "100x120", "110x125", "128x100")
    assert [r["shape"] for r in first] == [[100, 120, 3], [110, 125, 3], [128, 100, 3]]  # cropped back
    assert first[0]["bucket_programs"] == 1 and first[0]["compiled"] > 0
    # 110x125 and 128x100 pad to the 128x128 bucket of 100x120: the step is not compiled again (the
    # small eager ops of a new size may be: pad, crop, convert).
    assert [r["bucket_programs"] for r in first] == [1, 1, 1]
    assert all(r["plain_programs"] == 0 for r in first)  # never the unbucketed step, which compiles per size
    # (bench/buckets.py measures that: without buckets, each new size's shapes compile again)
    # A restarted worker, the same cache directory: every program comes from disk, none compiles.
    again = dream_sizes(tmp_path, 64, "100x120")
    assert first[0]["cache_misses"] > 0  # an empty cache: compiled, then written
    assert again[0]["cache_misses"] == 0 and again[0]["cache_hits"] == again[0]["compiled"] > 0, again
