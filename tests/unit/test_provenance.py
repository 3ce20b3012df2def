"""The parameters travel with the picture (shared/provenance.py): written by Pillow, read back by Pillow."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from dreamq.client import params_from
from shared.images import encode_png
from shared.kinds import KINDS
from shared.params import parse_params
from shared.provenance import KEYWORD, VERSION, png_info, read

FINGERPRINT = "0123456789abcdef" * 4


@pytest.fixture
def dreamed(tmp_path) -> bytes:
    params = parse_params({"model": "vgg16_hed", "layers": "block4_conv3=1.5,block3_conv3=1", "iterations": "3",
                           "seed": "7", "max_loss": "none"})
    return encode_png(np.full((16, 24, 3), 90, np.uint8), png_info("image", params, FINGERPRINT))


def test_a_png_carries_kind_params_model_weights_and_version(dreamed):
    found = read(dreamed)
    assert found["kind"] == "image" and found["model"] == "vgg16_hed" and found["version"] == VERSION
    assert found["weights"] == FINGERPRINT[:16]  # short: enough to tell weights apart
    assert found["params"]["seed"] == 7 and found["params"]["max_loss"] is None
    assert list(found["params"]["layers"]) == ["block4_conv3", "block3_conv3"]  # in the order given
    with Image.open(io.BytesIO(dreamed)) as im:
        assert im.size == (24, 16) and im.text["Software"] == f"dreamq {VERSION}"
        assert json.loads(im.text[KEYWORD]) == found
    assert b"iTXt" + KEYWORD.encode() + b"\0" in dreamed  # an iTXt chunk: UTF-8, any tool reads it


def test_pictures_without_the_chunk_carry_nothing(tmp_path, dreamed):
    plain = encode_png(np.zeros((8, 8, 3), np.uint8))
    assert read(plain) is None
    assert read(b"<html>not a png</html>") is None
    path = tmp_path / "dream.png"
    path.write_bytes(dreamed)
    assert read(path) == read(dreamed)


def test_params_from_gives_the_form_fields_that_parse_back_to_the_same_params(tmp_path, dreamed):
    path = tmp_path / "dream.png"
    path.write_bytes(dreamed)
    kind, fields = params_from(path, None, {}, guide=False)
    assert kind == "image" and fields["max_loss"] == "none"
    assert KINDS[kind].parse(fields).model_dump() == read(dreamed)["params"]


def test_params_from_leaves_out_what_does_not_apply(tmp_path):
    zoom = KINDS["zoom"].parse({"model": "vgg16_hed", "frames": "12", "guide_layer": "block4_conv3"})
    path = tmp_path / "frame.png"
    path.write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8), png_info("zoom", zoom, FINGERPRINT)))
    kind, fields = params_from(path, None, {}, guide=True)
    assert kind == "zoom" and fields["frames"] == "12" and fields["guide_layer"] == "block4_conv3"
    kind, fields = params_from(path, "image", {}, guide=False)  # another kind: only its own parameters
    assert kind == "image" and "frames" not in fields and "guide_layer" not in fields
    _, fields = params_from(path, None, {"model": "inception_v3"}, guide=False)  # another model: not its layers
    assert "layers" not in fields and "step" not in fields and fields["frames"] == "12"


def test_the_weights_fingerprint_is_computed_once_per_loaded_model():
    from shared.cache import weights_fingerprint as sha256_of
    from worker.models import DreamModel, weights_fingerprint

    class Network:
        reads = 0

        def get_weights(self):
            self.reads += 1
            return [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]

    model = DreamModel(spec=None, network=Network(), preprocess=None, deprocess=None, weights="random")
    assert weights_fingerprint(model) == weights_fingerprint(model) == sha256_of(Network().get_weights())
    assert model.network.reads == 1
