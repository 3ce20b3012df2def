"""Same-shape batching in the engine: each image of a batch dreams as it would alone."""
import numpy as np
import pytest
from PIL import Image

from shared.kinds.image import batch_key
from shared.params import parse_params
from worker.dream import Dreamer
from worker.models import load_model


@pytest.fixture(scope="module")
def vgg():
    return Dreamer(load_model("vgg16_hed"))


@pytest.fixture(scope="module")
def three(photo):
    """Three different pictures of one shape."""
    im = Image.fromarray(photo)
    return [np.asarray(x.resize((96, 96), Image.LANCZOS))
            for x in (im, im.rotate(90), im.transpose(Image.FLIP_LEFT_RIGHT).crop((0, 0, 300, 300)))]


def _max_diff(a, b) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_batched_results_equal_single_results(vgg, three):
    base = {"model": "vgg16_hed", "iterations": 5, "octaves": 2}
    # max_loss between two of the first picture's steps in octave 0: it stops early there, alone
    # and in the batch, while another picture may go on (each sample has its own max_loss test).
    seen = []
    vgg.dream(three[0], parse_params(base), on_progress=seen.append)
    losses = [p.loss for p in seen if p.octave == 0]
    for extra in ({}, {"max_loss": (losses[1] + losses[2]) / 2}):
        params = parse_params({**base, **extra})
        alone_progress, alone_previews = [[] for _ in three], [[] for _ in three]
        singles = [vgg.dream(img, params, on_progress=alone_progress[i].append,
                             on_preview=lambda o, img, i=i: alone_previews[i].append((o, img.shape)))
                   for i, img in enumerate(three)]
        batch_progress = [[] for _ in three]
        previews = [[] for _ in three]
        batched = vgg.dream_batch(three, params, on_progress=[p.append for p in batch_progress],
                                  on_preview=[lambda o, img, i=i: previews[i].append((o, img.shape)) for i in range(3)])
        for i in range(3):
            assert batched[i].shape == three[i].shape and batched[i].dtype == np.uint8
            assert _max_diff(batched[i], singles[i]) <= 1, f"image {i} {extra}"
            assert [(p.octave, p.step) for p in batch_progress[i]] == [(p.octave, p.step) for p in alone_progress[i]]
            np.testing.assert_allclose([p.loss for p in batch_progress[i]], [p.loss for p in alone_progress[i]],
                                       rtol=1e-3)
            assert previews[i] == alone_previews[i] and previews[i]
        if extra:  # the first picture did stop early, the batch did not stop with it
            assert len([p for p in batch_progress[0] if p.octave == 0]) == 3
            assert max(len(p) for p in batch_progress) > len(batch_progress[0])


def test_a_canceled_image_leaves_the_batch_and_the_others_go_on(vgg, three):
    params = parse_params({"model": "vgg16_hed", "iterations": 6, "octaves": 2})
    singles = [vgg.dream(img, params) for img in three]
    steps = [[] for _ in three]
    cancel_middle = lambda: len(steps[1]) >= 3  # noqa: E731 — canceled before its 4th step
    result = vgg.dream_batch(three, params, on_progress=[s.append for s in steps],
                             should_cancel=[None, cancel_middle, lambda: False])
    assert result[1] is None and len(steps[1]) == 3
    for i in (0, 2):
        assert len(steps[i]) == len(steps[0]) >= 6 and _max_diff(result[i], singles[i]) <= 1


def test_the_step_is_compiled_once_for_any_batch_size(vgg, three):
    params = parse_params({"model": "vgg16_hed", "iterations": 1, "octaves": 1})
    vgg.dream_batch(three[:2], params)
    vgg.dream_batch(three, params)
    vgg.dream_batch([three[0][:80, :90]], params)
    assert vgg.batch_step(tuple(params.layers)).experimental_get_tracing_count() == 1


def test_random_inception_batched_equals_single(photo):
    engine = Dreamer(load_model("inception_v3", "random"))
    params = parse_params({"model": "inception_v3", "iterations": 3, "octaves": 2, "step": 0.01})
    im = Image.fromarray(photo)
    images = [np.asarray(x.resize((160, 160), Image.LANCZOS)) for x in (im, im.rotate(180))]
    singles = [engine.dream(img, params) for img in images]
    for single, batched in zip(singles, engine.dream_batch(images, params)):
        assert _max_diff(single, batched) <= 1


def test_batch_key_is_the_plain_steps_of_one_model_and_shape():
    a = parse_params({"model": "vgg16_hed", "seed": 1})
    key = batch_key(a, 96, 128, False)
    assert key and len(key) == 16
    assert batch_key(a.model_copy(update={"seed": 7}), 96, 128, False) == key  # the plain step draws nothing
    assert batch_key(a, 128, 96, False) != key
    assert batch_key(a.model_copy(update={"iterations": 3}), 96, 128, False) != key
    assert batch_key(a.model_copy(update={"jitter": 4}), 96, 128, False) is None
    assert batch_key(a.model_copy(update={"tile_size": 512}), 96, 128, False) is None
    assert batch_key(a, 96, 128, True) is None
