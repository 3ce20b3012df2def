"""The Deep Dream algorithm of the Keras example, as a warm, reusable object.

Reads top to bottom like the example: loss, one gradient ascent step, the
loop over steps, the loop over octaves with lost-detail reinjection.  What it
adds: the network and the compiled step are built once and serve every image
size, and the caller can watch (progress, preview) and stop (cancel) a job.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from shared.models import dream_octave_shapes
from shared.params import DreamParams

from .models import DreamModel

__all__ = ["Canceled", "Dreamer", "Progress"]


class Canceled(Exception):
    """Raised by ``Dreamer.dream`` when its ``should_cancel()`` returns True (checked before every step)."""


@dataclass
class Progress:
    octave: int  # 0-based
    octaves: int
    step: int  # 0-based step within the octave
    steps: int  # steps per octave
    loss: float
    elapsed_s: float

    @property
    def fraction(self) -> float:
        return min(1.0, (self.octave * self.steps + self.step + 1) / max(1, self.octaves * self.steps))


def dream_loss(features, coeffs):
    """Σ coeff · Σ(activation², border of 2 cropped) / activation size, as in the seed."""
    if not isinstance(features, (list, tuple)):
        features = [features]  # a one-layer extractor returns a bare tensor
    loss = ops.zeros(())
    for i, activation in enumerate(features):
        activation = ops.cast(activation, "float32")  # bf16 networks: sum in float32
        scaling = ops.cast(ops.size(activation), "float32")
        loss = loss + coeffs[i] * ops.sum(ops.square(activation[:, 2:-2, 2:-2, :])) / scaling
    return loss


def _normalize(grads):
    return grads / ops.maximum(ops.mean(ops.abs(grads)), 1e-6)


def make_gradient_fns(extractor):
    """Compile, once for any image size, the two functions the engine needs:

    ``step(img, coeffs, learning_rate) -> (loss, img)``: the seed's fused step;
    ``gradient(img, coeffs) -> (loss, grads)``: raw gradients, for tiled steps.
    The only backend-specific code in the engine: how to take a gradient and compile.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        image_spec = tf.TensorSpec([1, None, None, 3], tf.float32)
        coeff_spec = tf.TensorSpec([None], tf.float32)

        def loss_and_grads(img, coeffs):
            with tf.GradientTape() as tape:
                tape.watch(img)
                loss = dream_loss(extractor(img), coeffs)
            return loss, tape.gradient(loss, img)

        gradient = tf.function(loss_and_grads, input_signature=[image_spec, coeff_spec])

        # One graph for loss, gradient, normalisation and update, as the seed's step.
        @tf.function(input_signature=[image_spec, coeff_spec, tf.TensorSpec([], tf.float32)])
        def step(img, coeffs, learning_rate):
            loss, grads = loss_and_grads(img, coeffs)
            return loss, img + learning_rate * _normalize(grads)

        return step, gradient
    if backend == "jax":
        import jax

        trainable = [v.value for v in extractor.trainable_variables]
        frozen = [v.value for v in extractor.non_trainable_variables]

        def loss_fn(img, coeffs):
            features, _ = extractor.stateless_call(trainable, frozen, img, training=False)
            return dream_loss(features, coeffs)

        loss_and_grads = jax.value_and_grad(loss_fn)
        jax_gradient = jax.jit(loss_and_grads)  # traced once per shape: no shape-polymorphic jit

        @jax.jit
        def jax_step(img, coeffs, learning_rate):
            loss, grads = loss_and_grads(img, coeffs)
            return loss, img + learning_rate * _normalize(grads)

        return jax_step, jax_gradient
    raise RuntimeError(f"dreamq supports the tensorflow and jax Keras backends, not {backend!r}")


def resize(img, shape):
    # Bilinear without antialiasing: tf.image.resize's default, which the seed uses.
    return ops.image.resize(img, shape, interpolation="bilinear", antialias=False)


def tile_bounds(length: int, tile: int) -> list[tuple[int, int]]:
    """Split ``length`` into near-equal spans of at most ``tile`` (no sliver at the end)."""
    n = max(1, -(-length // tile))
    edges = np.linspace(0, length, n + 1).round().astype(int)
    return list(itertools.pairwise(edges))


def bf16_clone(network):
    """The same network computing in bfloat16 (weights stay float32, loss is summed in float32)."""
    def clone_layer(layer):
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = "mixed_bfloat16"
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(network, clone_function=clone_layer)
    clone.set_weights(network.get_weights())
    return clone


class Dreamer:
    """Holds one warm model; ``dream()`` runs the seed's octave loop on one image.

    ``auto_tile_pixels``: images above this many pixels are dreamed tile by
    tile (``auto_tile_size``), which bounds memory for big pictures.
    """

    def __init__(self, model: DreamModel, auto_tile_pixels: int | None = None, auto_tile_size: int = 512):
        self.model = model
        self.auto_tile_pixels = auto_tile_pixels
        self.auto_tile_size = auto_tile_size
        self._networks = {"fp32": model.network}
        self._fns: dict[tuple, tuple[Callable, Callable]] = {}

    def network(self, precision: str):
        if precision not in self._networks:
            self._networks[precision] = bf16_clone(self.model.network)
        return self._networks[precision]

    def gradient_fns(self, layers: tuple[str, ...], precision: str = "fp32"):
        """The compiled (step, gradient) for these layers and precision, built on first use."""
        key = (layers, precision)
        if key not in self._fns:
            net = self.network(precision)
            extractor = keras.Model(net.inputs, [net.get_layer(name).output for name in layers])
            self._fns[key] = make_gradient_fns(extractor)
        return self._fns[key]

    def gradient_step(self, layers: tuple[str, ...], precision: str = "fp32"):
        return self.gradient_fns(layers, precision)[0]

    def warm_up(self, layers: tuple[str, ...] | None = None, side: int = 128, precisions=("fp32",)) -> None:
        """Build and run the step once so that the first job pays no compile time."""
        layers = layers or tuple(self.model.spec.default_layers)
        side = max(side, self.model.spec.min_side_for(layers))
        for precision in precisions:
            step, gradient = self.gradient_fns(layers, precision)
            img, coeffs = ops.zeros((1, side, side, 3)), ops.ones((len(layers),))
            step(img, coeffs, ops.convert_to_tensor(0.0))
            gradient(img, coeffs)

    def tiled_step(self, img, coeffs, learning_rate, gradient, tile: int, rng: np.random.Generator):
        """One ascent step computed tile by tile, the image rolled by a random shift
        first (as the TensorFlow DeepDream tutorial does) so tile borders move every
        step and leave no seams.  Loss and gradient are the area-weighted sums of the
        tiles': on an image that fits one tile, exactly the untiled step."""
        x = ops.convert_to_numpy(img)
        h, w = x.shape[1:3]
        dy, dx = (int(rng.integers(0, tile)) if h > tile else 0), (int(rng.integers(0, tile)) if w > tile else 0)
        rolled = np.roll(x, (dy, dx), axis=(1, 2))
        grads = np.zeros_like(rolled)
        loss = 0.0
        for y0, y1 in tile_bounds(h, tile):
            for x0, x1 in tile_bounds(w, tile):
                weight = (y1 - y0) * (x1 - x0) / (h * w)
                tile_loss, tile_grads = gradient(ops.convert_to_tensor(rolled[:, y0:y1, x0:x1]), coeffs)
                loss += weight * float(tile_loss)
                grads[:, y0:y1, x0:x1] = weight * ops.convert_to_numpy(tile_grads)
        grads = np.roll(grads, (-dy, -dx), axis=(1, 2))
        grads /= max(float(np.abs(grads).mean()), 1e-6)
        return loss, ops.convert_to_tensor(x + float(learning_rate) * grads)

    def ascent_step(self, params: DreamParams, tile: int | None, rng: np.random.Generator):
        """This job's gradient ascent step, ``img -> (loss, img)``: chosen once, called every step.

        ``rng`` is drawn from only here, step by step (tile rolls, jitter), so a
        seed gives the same dream.
        """
        layers = tuple(params.layers)
        step, gradient = self.gradient_fns(layers, params.precision)
        coeffs = ops.convert_to_tensor(np.array([params.layers[n] for n in layers], np.float32))
        learning_rate = ops.convert_to_tensor(np.float32(params.step))

        def tiled(img):
            # Tile by tile: memory bounded by the tile, not by the picture.
            return self.tiled_step(img, coeffs, learning_rate, gradient, tile, rng)

        def jittered(img):
            # Shift the image a little each step, so features don't lock to the pixel grid.
            dy, dx = (int(v) for v in rng.integers(-params.jitter, params.jitter + 1, size=2))
            loss, img = step(ops.roll(img, (dy, dx), axis=(1, 2)), coeffs, learning_rate)
            return loss, ops.roll(img, (-dy, -dx), axis=(1, 2))

        def plain(img):
            # The seed's step, exactly: one compiled call.
            return step(img, coeffs, learning_rate)

        if tile is not None:
            return tiled
        return jittered if params.jitter else plain

    def dream(
        self,
        image: np.ndarray,
        params: DreamParams,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_preview: Callable[[int, np.ndarray], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Dream on an ``(H, W, 3)`` uint8 RGB image; return the result, same size and type.

        on_progress(Progress): after every step.  on_preview(octave, uint8 image):
        after every octave.  should_cancel() returns a bool and is polled before
        every step, the first included; when it returns True the engine raises
        Canceled there.  An exception raised by any of these callbacks propagates
        unchanged: the engine neither catches nor wraps it.
        """
        layers = tuple(params.layers)
        if params.precision not in ("fp32", "bf16"):  # "auto" is the caller's to resolve (worker.device)
            raise ValueError(f"precision must be fp32 or bf16 here, not {params.precision!r}")
        tile = params.tile_size
        if tile is None and self.auto_tile_pixels and image.shape[0] * image.shape[1] > self.auto_tile_pixels:
            tile = self.auto_tile_size
        rng = np.random.default_rng(params.seed)  # rolls are random but repeatable
        ascend = self.ascent_step(params, tile, rng)
        started = time.perf_counter()

        original = ops.convert_to_tensor(self.model.preprocess(image.astype(np.float32)[None]))
        # The seed's octaves; a small image skips those below the network's minimum.
        min_side = self.model.spec.min_side_for(layers)
        shapes = dream_octave_shapes(image.shape[0], image.shape[1], params.octaves, params.octave_scale, min_side)
        if not shapes:
            raise ValueError(f"the image is {image.shape[1]}x{image.shape[0]}, below the {min_side} px minimum")
        shrunk_original = resize(original, shapes[0])

        def gradient_ascent_loop(img, octave: int):
            for i in range(params.iterations):
                if should_cancel is not None and should_cancel():
                    raise Canceled()
                loss, img = ascend(img)
                loss = float(loss)
                if on_progress is not None:
                    on_progress(Progress(octave, len(shapes), i, params.iterations, loss, time.perf_counter() - started))
                if params.max_loss is not None and loss > params.max_loss:
                    break
            return img

        img = original
        for octave, shape in enumerate(shapes):
            img = resize(img, shape)
            img = gradient_ascent_loop(img, octave)
            # Put back the detail that shrinking and re-enlarging the original lost.
            upscaled_shrunk_original = resize(shrunk_original, shape)
            same_size_original = resize(original, shape)
            img = img + (same_size_original - upscaled_shrunk_original)
            shrunk_original = resize(original, shape)
            if on_preview is not None:
                on_preview(octave, self.model.deprocess(ops.convert_to_numpy(img)))
        return self.model.deprocess(ops.convert_to_numpy(img))
