"""Parameters: the seed's defaults, the model's defaults, and errors that name the field."""
import math

import pytest

from shared.params import ParamsError, parse_params


def test_defaults_are_the_seeds():
    p = parse_params({})
    assert p.model == "inception_v3"
    assert p.layers == {"mixed4": 1.0, "mixed5": 1.5, "mixed6": 2.0, "mixed7": 2.5}
    assert (p.step, p.octaves, p.octave_scale, p.iterations, p.max_loss) == (0.01, 3, 1.4, 20, 15.0)


def test_form_strings_are_parsed():
    p = parse_params({"layers": "mixed3=0.5, mixed4", "step": "0.02", "octaves": "2", "max_loss": "none"})
    assert p.layers == {"mixed3": 0.5, "mixed4": 1.0} and p.step == 0.02 and p.octaves == 2 and p.max_loss is None


def test_model_and_preset_defaults():
    p = parse_params({"model": "vgg16_hed", "preset": "intense", "iterations": 5})
    assert p.step == 3.0 and p.iterations == 5 and p.layers == {"block3_conv3": 1.0, "block4_conv3": 1.5, "block5_conv3": 2.0}


@pytest.mark.parametrize(
    "data,field",
    [({"step": "nan"}, "step"), ({"step": math.inf}, "step"), ({"step": -1}, "step"), ({"octaves": 0}, "octaves"),
     ({"octaves": "three"}, "octaves"), ({"iterations": 10_000}, "iterations"), ({"octave_scale": 0.5}, "octave_scale"),
     ({"layers": "mixed99=1"}, "layers"), ({"layers": "mixed4=x"}, "layers"), ({"layers": ","}, "layers"),
     ({"model": "resnet"}, "model"), ({"preset": "nope"}, "preset"), ({"max_side": 3}, "max_side"),
     ({"max_loss": -2}, "max_loss"), ({"colour": "blue"}, "colour"), ({"model": ["a"]}, "model")],
)
def test_bad_values_name_their_field(data, field):
    with pytest.raises(ParamsError) as err:
        parse_params(data)
    assert list(err.value.fields) == [field], err.value.fields
