"""bench/gpu_check.py stays ready for a GPU machine: run it here on the CPU JAX backend."""
import os
import subprocess
import sys

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow  # a minute or more: scheduled first (tests/conftest.py)

pytest.importorskip("jax")


def test_gpu_check_runs_on_cpu_jax():
    # Buckets off: the check's own mechanics at the seed's shapes (tests/integration/test_buckets.py has buckets).
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "DREAMQ_SHAPE_BUCKETS": "0"}
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--size", "216x288", "--iterations", "2", "--e2e",
                           "--modes", "fp32,bf16", "--precisions", "auto"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "backend jax" in out and "fp32: job" in out and "bf16: job" in out and "TFLOP/s" in out
    assert "bf16 detection: native=" in out and "one step, against fp32" in out
    assert "end to end through the queue (warm worker), precision=auto:" in out and "succeeded" in out


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_check.sh")]).returncode == 0
