"""The models' defaults and presets: inception_v3 keeps the Keras example's (the fidelity contract);
vgg16_hed's were chosen by looking (docs/make_contact_sheet.py) and its presets are distinct styles."""
import itertools

import pytest

from shared.kinds.zoom import ZOOM_DEFAULTS, parse_zoom
from shared.models import INCEPTION_V3, VGG16_HED
from shared.params import parse_params

DREAM_FIELDS = ("layers", "step", "octaves", "octave_scale", "iterations", "max_loss", "jitter")


def test_inception_v3_defaults_are_the_keras_examples():
    # keras-io examples/generative/deep_dream.py: layer_settings, step, num_octave, octave_scale,
    # iterations, max_loss.
    assert INCEPTION_V3.default_layers == {"mixed4": 1.0, "mixed5": 1.5, "mixed6": 2.0, "mixed7": 2.5}
    assert (INCEPTION_V3.step, INCEPTION_V3.max_loss) == (0.01, 15.0)
    p = parse_params({"model": "inception_v3"})
    assert p.layers == INCEPTION_V3.default_layers
    assert (p.step, p.octaves, p.octave_scale, p.iterations, p.max_loss) == (0.01, 3, 1.4, 20, 15.0)
    assert parse_params({"model": "inception_v3", "preset": "seed"}) == p.model_copy(update={"preset": "seed"})


@pytest.mark.parametrize("a,b", itertools.combinations(VGG16_HED.presets, 2))
def test_vgg16_hed_presets_differ_in_a_dream_parameter(a, b):
    pa, pb = (parse_params({"model": "vgg16_hed", "preset": name}) for name in (a, b))
    assert any(getattr(pa, f) != getattr(pb, f) for f in DREAM_FIELDS), f"presets {a} and {b} dream the same"


def test_vgg16_hed_presets_are_valid_and_named_for_a_style():
    assert len(VGG16_HED.presets) >= 3
    for name in VGG16_HED.presets:
        p = parse_params({"model": "vgg16_hed", "preset": name})
        assert set(p.layers) <= set(VGG16_HED.layers)


def test_zoom_defaults_make_a_clip_worth_watching():
    # At least 4 seconds of video by default (bench/zoom_sharpness.py measures that it stays sharp).
    assert ZOOM_DEFAULTS["frames"] / ZOOM_DEFAULTS["fps"] >= 4
    for spec in (INCEPTION_V3, VGG16_HED):
        p = parse_zoom({"model": spec.name})
        expected = {**ZOOM_DEFAULTS, **spec.kind_defaults.get("zoom", {})}
        assert (p.frames, p.fps, p.iterations, p.octaves) == tuple(
            expected[k] for k in ("frames", "fps", "iterations", "octaves"))


def test_a_models_zoom_defaults_sit_under_the_preset_and_the_request():
    step = VGG16_HED.kind_defaults["zoom"].get("step", VGG16_HED.step)
    assert parse_zoom({"model": "vgg16_hed"}).step == step
    assert parse_zoom({"model": "vgg16_hed", "step": ""}).step == step  # an empty form field
    assert parse_zoom({"model": "vgg16_hed", "step": "0.7"}).step == 0.7
    assert parse_zoom({"model": "vgg16_hed", "preset": "intense"}).step == VGG16_HED.presets["intense"]["step"]
    assert parse_params({"model": "vgg16_hed"}).step == VGG16_HED.step  # stills keep their own
    assert parse_zoom({"model": "inception_v3"}).step == INCEPTION_V3.step == 0.01
