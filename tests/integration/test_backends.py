"""TensorFlow (the default) and JAX (the GPU test machines) compute the same dream.

Compared where the arithmetic is defined: one gradient, one ascent step, and a
dream of two steps; never a long ascent, which amplifies rounding step after
step at a rate that depends on the CPU's kernels (AVX-512 or AVX2).

What rounding does, measured here with TensorFlow against JAX (two different
sets of kernels) and with inputs perturbed by 1e-7..1e-5 relative: the loss
moves by a few 1e-6 relative at most, and so does the gradient almost everywhere; but
the gradient is only piecewise smooth (ReLUs, and max-pool ties in the photo's
flat black sky), so a last-bit change can reroute it in a few small patches: up
to 5 % of its L2 norm, cosine 1 - 1.4e-3, a few pixels of the two-step dream up
to 7 levels apart.  So the bounds are on the loss and on the typical element,
which rounding cannot move, not on a maximum or an L2 norm, which one patch can.
The bugs they must catch (the border crop, the loss or step normalisation, the
layer weights, the preprocessing, the sign) move the loss by >= 0.8 %, or the
typical element of the gradient or of the step by >= 8 % of its scale.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow  # a minute or more: scheduled first (tests/conftest.py)

pytest.importorskip("jax")

# The seed's layers and step size; two octaves of one step: the resize and
# lost-detail paths run too, and two steps cannot amplify rounding much.
PARAMS = {"model": "inception_v3", "octaves": 2, "iterations": 1}
LOSS_RTOL = 1e-4  # rounding: < 5e-7 (2e-6 TF against JAX here); bugs: > 8e-3


def _run(backend, image, weights, tmp_path) -> dict:
    src, dst = tmp_path / "in.npy", tmp_path / f"{backend}.npz"
    np.save(src, image)
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.dream_once", str(src), PARAMS["model"], str(weights), json.dumps(PARAMS),
         str(dst)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["backend"] == backend
    with np.load(dst) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def runs(small_photo, inception_weights_file, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backends")
    return {b: _run(b, small_photo, inception_weights_file, tmp) for b in ("tensorflow", "jax")}


def agreement(got: np.ndarray, want: np.ndarray) -> dict:
    """The typical element's difference on the scale of ``want``, and the cosine of the two."""
    a, b = got.ravel().astype(np.float64), want.ravel().astype(np.float64)
    return {"median_diff": float(np.median(np.abs(a - b)) / np.abs(b).mean()),
            "cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))}


def test_one_gradient_agrees(runs):
    tf, jax = runs["tensorflow"], runs["jax"]
    assert tf["grads"].shape == jax["grads"].shape == (1, 216, 288, 3)
    assert tf["loss"] > 0 and np.abs(tf["grads"]).mean() > 0  # a real gradient, not two zeros
    np.testing.assert_allclose(jax["loss"], tf["loss"], rtol=LOSS_RTOL)
    stats = agreement(jax["grads"], tf["grads"])
    # Rounding: 1e-6 (TF against JAX here), < 1e-3 even at 1e-5 input noise; bugs: > 8e-2.
    assert stats["median_diff"] < 1e-2, stats
    # Rounding: 1 - 1.4e-3 at worst; a lost border crop: 1 - 2.4e-2, other preprocessing: 0.23.
    assert stats["cosine"] > 0.99, stats


def test_one_fused_step_agrees(runs):
    """The seed's step: the same loss, and the image moved by the same normalised gradient."""
    tf, jax = runs["tensorflow"], runs["jax"]
    np.testing.assert_allclose(jax["step_loss"], tf["step_loss"], rtol=LOSS_RTOL)
    np.testing.assert_array_equal(jax["step_input"], tf["step_input"])  # the same preprocessing
    stats = agreement(jax["stepped"] - jax["step_input"], tf["stepped"] - tf["step_input"])
    # The step divides by mean |gradient|, which a rerouted patch moves by up to 1e-3,
    # and every element with it.  Another normalisation or the wrong sign: > 0.2.
    assert stats["median_diff"] < 1e-2, stats
    assert stats["cosine"] > 0.99, stats


def test_a_two_step_dream_agrees_within_one_level(runs, small_photo):
    tf, jax = runs["tensorflow"], runs["jax"]
    # The first loss is at the input; the second after a step (rounding: < 2e-5).
    np.testing.assert_allclose(jax["dream_losses"], tf["dream_losses"], rtol=1e-3)
    moved = np.abs(tf["dream"].astype(int) - small_photo.astype(int))
    diff = np.abs(tf["dream"].astype(int) - jax["dream"].astype(int))
    stats = {"moved": moved.mean(), "mean_diff": diff.mean(), "over_1": (diff > 1).mean(), "max": diff.max()}
    # The dream did move the picture (1.6 levels on average: the step size sets that), so agreeing means something...
    assert moved.mean() > 0.5, stats
    # ...and the two agree to the truncation to uint8 (a 1e-6 difference puts a
    # value on either side of an integer, one level), but for the few pixels of a
    # rerouted patch.  Rounding: <= 0.25 % of values over one level, mean <= 0.06;
    # the bugs above that change the image: over one level 5-45 %, mean 0.4-3 levels.
    assert stats["over_1"] < 0.01 and stats["mean_diff"] < 0.15, stats
