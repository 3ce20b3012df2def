"""The engine computes what the Keras example computes."""
import numpy as np

from shared.params import parse_params
from worker.dream import Dreamer
from worker.models import load_model

from bench.seed_reference import run_seed


def test_engine_matches_seed_reference(small_photo, inception_weights_file):
    # Warm-up: on this CPU the first run of the example in a process differs
    # from later ones in the last bit of a few sums, and 60 ascent steps blow
    # that up to whole pixel values; every later run agrees bit for bit.
    run_seed(small_photo, str(inception_weights_file))
    seed_losses: list[float] = []
    expected = run_seed(small_photo, str(inception_weights_file), losses=seed_losses)

    engine_losses: list[float] = []
    dreamer = Dreamer(load_model("inception_v3", str(inception_weights_file)))
    params = parse_params({})
    assert (params.octaves, params.iterations, params.step, params.max_loss) == (3, 20, 0.01, 15.0)
    result = dreamer.dream(small_photo, params, on_progress=lambda p: engine_losses.append(p.loss))

    assert result.shape == expected.shape == small_photo.shape
    # The dream really moved the picture: equality of two no-ops would prove nothing.
    assert np.abs(expected.astype(int) - small_photo.astype(int)).mean() > 3
    diff = np.abs(result.astype(int) - expected.astype(int))
    assert diff.max() <= 1, f"max per-pixel difference {diff.max()} (mean {diff.mean():.4f})"
    # The engine reports the step that crossed max_loss; the example does not print it.
    reported = [loss for loss in engine_losses if loss <= 15.0]
    np.testing.assert_allclose(reported, seed_losses, rtol=1e-5)
    assert max(engine_losses) > 15.0, "max_loss should have cut at least one octave short here"
