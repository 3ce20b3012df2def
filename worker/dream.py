"""The Deep Dream algorithm of the Keras example, as a warm, reusable object.

Reads top to bottom like the example: loss, one gradient ascent step, the
loop over steps, the loop over octaves with lost-detail reinjection.  What it
adds: the network and the compiled step are built once and serve every image
size, and the caller can watch (progress, preview) and stop (cancel) a job.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
from keras import ops

from shared.models import octave_shapes
from shared.params import DreamParams

from .models import DreamModel

__all__ = ["Dreamer", "Canceled", "Progress"]


class Canceled(Exception):
    """The cancel check said stop; raised between two steps."""


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
        scaling = ops.cast(ops.size(activation), "float32")
        loss = loss + coeffs[i] * ops.sum(ops.square(activation[:, 2:-2, 2:-2, :])) / scaling
    return loss


def _normalize(grads):
    return grads / ops.maximum(ops.mean(ops.abs(grads)), 1e-6)


def make_gradient_step(extractor):
    """Compile ``step(img, coeffs, learning_rate) -> (loss, img)`` once for any image size.

    The only backend-specific code in the engine: how to take a gradient and compile.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(
            input_signature=[
                tf.TensorSpec([1, None, None, 3], tf.float32),
                tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([], tf.float32),
            ]
        )
        def step(img, coeffs, learning_rate):
            with tf.GradientTape() as tape:
                tape.watch(img)
                loss = dream_loss(extractor(img), coeffs)
            grads = _normalize(tape.gradient(loss, img))
            return loss, img + learning_rate * grads

        return step
    if backend == "jax":
        import jax

        trainable = [v.value for v in extractor.trainable_variables]
        frozen = [v.value for v in extractor.non_trainable_variables]

        def loss_fn(img, coeffs):
            features, _ = extractor.stateless_call(trainable, frozen, img, training=False)
            return dream_loss(features, coeffs)

        @jax.jit  # traced once per image shape: JAX has no shape-polymorphic jit
        def jax_step(img, coeffs, learning_rate):
            loss, grads = jax.value_and_grad(loss_fn)(img, coeffs)
            return loss, img + learning_rate * _normalize(grads)

        return jax_step
    raise RuntimeError(f"dreamq supports the tensorflow and jax Keras backends, not {backend!r}")


def resize(img, shape):
    # Bilinear without antialiasing: tf.image.resize's default, which the seed uses.
    return ops.image.resize(img, shape, interpolation="bilinear", antialias=False)


class Dreamer:
    """Holds one warm model; ``dream()`` runs the seed's octave loop on one image."""

    def __init__(self, model: DreamModel):
        self.model = model
        self._steps: dict[tuple[str, ...], Callable] = {}

    def gradient_step(self, layers: tuple[str, ...]):
        """The compiled step for this set of layers, built on first use."""
        if layers not in self._steps:
            net = self.model.network
            extractor = keras.Model(net.inputs, [net.get_layer(name).output for name in layers])
            self._steps[layers] = make_gradient_step(extractor)
        return self._steps[layers]

    def warm_up(self, layers: tuple[str, ...] | None = None, side: int = 96) -> None:
        """Build and run the step once so that the first job pays no compile time."""
        layers = layers or tuple(self.model.spec.default_layers)
        side = max(side, self.model.spec.min_side)
        step = self.gradient_step(layers)
        step(ops.zeros((1, side, side, 3)), ops.ones((len(layers),)), ops.convert_to_tensor(0.0))

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

        on_progress: after every step.  on_preview(octave, uint8 image): after
        every octave.  should_cancel: polled before every step; if it returns
        True the job stops there with Canceled.
        """
        layers = tuple(params.layers)
        step = self.gradient_step(layers)
        coeffs = ops.convert_to_tensor(np.array([params.layers[n] for n in layers], np.float32))
        learning_rate = ops.convert_to_tensor(np.float32(params.step))
        started = time.perf_counter()

        original = ops.convert_to_tensor(self.model.preprocess(image.astype(np.float32)[None]))
        shapes = octave_shapes(image.shape[0], image.shape[1], params.octaves, params.octave_scale)
        shrunk_original = resize(original, shapes[0])

        img = original
        for octave, shape in enumerate(shapes):
            img = resize(img, shape)
            for i in range(params.iterations):
                if should_cancel is not None and should_cancel():
                    raise Canceled()
                loss, img = step(img, coeffs, learning_rate)
                loss = float(loss)
                if on_progress is not None:
                    on_progress(Progress(octave, len(shapes), i, params.iterations, loss, time.perf_counter() - started))
                if params.max_loss is not None and loss > params.max_loss:
                    break
            # Put back the detail that shrinking and re-enlarging the original lost.
            upscaled_shrunk_original = resize(shrunk_original, shape)
            same_size_original = resize(original, shape)
            img = img + (same_size_original - upscaled_shrunk_original)
            shrunk_original = resize(original, shape)
            if on_preview is not None:
                on_preview(octave, self.model.deprocess(ops.convert_to_numpy(img)))
        return self.model.deprocess(ops.convert_to_numpy(img))
