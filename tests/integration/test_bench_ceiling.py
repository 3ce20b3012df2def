"""bench/ceiling.py, small: the no-op kind runs through the real lifecycle (in this process and in
a real worker process), and a job's Redis traffic stays a handful of round trips per stage."""
from __future__ import annotations

import json
import subprocess
import sys

from bench.cluster import ROOT


def test_ceiling_bench_runs_noop_jobs_end_to_end(tmp_path):
    out = tmp_path / "ceiling.json"
    proc = subprocess.run([sys.executable, "-m", "bench.ceiling", "--workers", "1", "--jobs", "40",
                           "--submitters", "2", "--stage-jobs", "20", "--h200-jobs", "0", "--idle-s", "0.5", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    stages = {s["name"].split(" (")[0]: s for s in figures["stages"]}
    assert stages["run"]["outcomes"] == {"succeeded": 20}
    assert stages["web submit"]["statuses"] == {"202": 20}
    assert set(stages["submit"]) >= {"round_trips_per_job", "commands_per_job", "bytes_per_job"}
    # A job's Redis traffic is a few round trips a stage, whatever the queue holds (O(1) per job).
    assert 0 < stages["submit"]["round_trips_per_job"] <= 8, stages["submit"]
    assert 0 < stages["run"]["round_trips_per_job"] <= 20, stages["run"]
    assert stages["progress write"]["round_trips_per_job"] <= 3, stages["progress write"]
    assert stages["cancel check"]["round_trips_per_job"] == 1
    (row,) = figures["ceiling"]
    assert row["workers"] == 1
    for part in ("end_to_end", "drain_only"):
        assert row[part]["statuses"] == {"succeeded": 40}, row[part]
        assert row[part]["jobs_per_s"] > 0 and row[part]["commands_per_job"] > 0
    assert row["submit_only"]["queued"] >= 40  # the paused consumers took none of them
