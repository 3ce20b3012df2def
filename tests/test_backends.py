"""TensorFlow (default) and JAX (the GPU test machines) dream the same picture."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from .conftest import ROOT

pytest.importorskip("jax")


def _dream(backend, image, tmp_path, weights, params):
    src, dst = tmp_path / "in.npy", tmp_path / f"out_{backend}.npy"
    np.save(src, image)
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.dream_once", str(src), str(dst), "inception_v3", weights, json.dumps(params)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["backend"] == backend
    return np.load(dst), info["losses"]


def test_tensorflow_and_jax_agree(small_photo, inception_weights_file, tmp_path):
    # A short horizon: both are right to the last bits, and gradient ascent
    # amplifies last-bit differences over many steps (see test_fidelity).
    params = {"octaves": 2, "iterations": 4}
    tf_img, tf_losses = _dream("tensorflow", small_photo, tmp_path, str(inception_weights_file), params)
    jax_img, jax_losses = _dream("jax", small_photo, tmp_path, str(inception_weights_file), params)
    moved = np.abs(tf_img.astype(int) - small_photo.astype(int))
    np.testing.assert_allclose(jax_losses, tf_losses, rtol=5e-3)
    diff = np.abs(tf_img.astype(int) - jax_img.astype(int))
    stats = dict(moved=moved.mean(), diff=diff.mean(), p99=np.percentile(diff, 99), p50=np.median(diff))
    # The two differ by a fraction of what the dream changed, in a few pixels.
    assert moved.mean() > 3 and diff.mean() < 0.25 * moved.mean(), stats
    assert np.median(diff) == 0 and np.percentile(diff, 99) <= 12, stats
