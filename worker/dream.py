"""The Deep Dream algorithm of the Keras example, as a warm, reusable object.

Reads top to bottom like the example: loss, one gradient ascent step, the
loop over steps, the loop over octaves with lost-detail reinjection.  What it
adds: the network and the compiled step are built once and serve every image
size, and the caller can watch (progress, preview) and stop (cancel) a job.
A guide image (the google/deepdream notebook's "controlling dreams") swaps the
loss for the guide objective and leaves everything else as it is.
"""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops
from PIL import Image

from shared.models import dream_octave_shapes
from shared.params import DreamParams

from .models import DreamModel

__all__ = ["Canceled", "Dreamer", "Progress"]


class Canceled(Exception):
    """Raised by ``Dreamer.dream`` when its ``should_cancel()`` returns True (checked before every step)."""


class LossNotFinite(ArithmeticError):
    """Raised by ``Dreamer.dream`` when a step's loss is inf or NaN: float32 overflowed (weights or
    step too large for these activations), and every later step would only spread NaN."""

    def __init__(self, loss: float, octave: int, step: int):
        self.loss, self.octave, self.step = loss, octave, step
        super().__init__(f"the loss became {loss} at octave {octave + 1}, step {step + 1}")


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


def guide_loss(features, guide_features):
    """The notebook's guide objective: Σ_i max_j <x_i, y_j> / activation size.

    x_i: the image's feature vector at position i of the guide layer; y_j: the
    guide's, ``guide_features`` being ``(positions, channels)``.  Its gradient
    with respect to x_i is the best-matching y_j (the notebook's objective_guide
    sets exactly that): each position is pulled toward the guide feature it is
    already most like.  Divided by the activation size as dream_loss is, so the
    loss reads on the same scale (an image guided by itself scores its mean
    square activation) and max_loss keeps its meaning; the normalised step does
    not see the constant.  No border crop: the notebook has none, and a small
    octave keeps every position.
    """
    x = ops.cast(features, "float32")  # bf16 networks: match in float32
    x = ops.reshape(x, (-1, x.shape[-1]))
    best = ops.max(ops.matmul(x, ops.transpose(guide_features)), axis=1)
    return ops.sum(best) / ops.cast(ops.size(x), "float32")


def _normalize(grads):
    return grads / ops.maximum(ops.mean(ops.abs(grads)), 1e-6)


# -- shape buckets ---------------------------------------------------------------------
# The image is padded (edge pixels repeated) to a bucket's shape, its real pixels at the top left;
# ``limits`` says where they end: one (rows, columns) per layer, the activation's size for the
# unpadded image, then the image's own.  Inside them the loss reads what the unpadded image's
# would (the border crop and the scaling included); only the layers' few rows and columns nearest
# the padding see it.  The gradient outside the image is dropped, and normalised by the real
# pixels' mean.

def _inside(rows: int, cols: int, limit, margin: int = 0):
    """A (rows, cols, 1) float mask: 1 from ``margin`` up to ``limit`` minus ``margin``."""
    r = ops.expand_dims(ops.arange(rows), 1)
    c = ops.expand_dims(ops.arange(cols), 0)
    inside = (r >= margin) & (r < limit[0] - margin) & (c >= margin) & (c < limit[1] - margin)
    return ops.expand_dims(ops.cast(inside, "float32"), -1)


def masked_dream_loss(features, coeffs, limits):
    """dream_loss of the unpadded image, read inside ``limits`` of the padded one's activations."""
    if not isinstance(features, (list, tuple)):
        features = [features]
    loss = ops.zeros(())
    for i, activation in enumerate(features):
        activation = ops.cast(activation, "float32")
        rows, cols, channels = activation.shape[1:]
        scaling = ops.cast(limits[i][0] * limits[i][1] * channels, "float32")
        inside = _inside(rows, cols, limits[i], margin=2)
        loss = loss + coeffs[i] * ops.sum(ops.square(activation[0]) * inside) / scaling
    return loss


def _normalize_inside(grads, limit):
    """_normalize over the image's real pixels; zero outside them."""
    grads = grads * _inside(grads.shape[1], grads.shape[2], limit)
    count = ops.cast(limit[0] * limit[1] * grads.shape[-1], "float32")
    return grads / ops.maximum(ops.sum(ops.abs(grads)) / count, 1e-6)


def bucket_shape(shape: tuple[int, int], bucket: int) -> tuple[int, int]:
    """The next multiple of ``bucket`` on each side (``bucket`` 0: the shape itself)."""
    if not bucket:
        return shape
    return tuple(-(-side // bucket) * bucket for side in shape)


def dream_losses(features, coeffs):
    """dream_loss of each sample of a batch, ``(N,)``: each scaled by its own activation size, as
    its single run's loss is (the samples never mix: the networks have no batch statistics)."""
    if not isinstance(features, (list, tuple)):
        features = [features]
    loss = None
    for i, activation in enumerate(features):
        activation = ops.cast(activation, "float32")
        per_sample = ops.cast(ops.size(activation[0]), "float32")
        term = coeffs[i] * ops.sum(ops.square(activation[:, 2:-2, 2:-2, :]), axis=(1, 2, 3)) / per_sample
        loss = term if loss is None else loss + term
    return loss


def make_batch_step(extractor):
    """Compile the batched plain step, ``(imgs, coeffs, learning_rate, active) -> (losses, imgs)``:
    the seed's step on each sample of ``imgs`` ``(N, H, W, 3)`` at once, for any N and size, each
    sample's gradient normalised by its own mean absolute value; the update of a sample whose
    ``active`` is 0 is dropped (its octave ended at max_loss)."""
    backend = keras.backend.backend()

    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                      tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.float32),
                                      tf.TensorSpec([None], tf.float32)])
        def step(imgs, coeffs, learning_rate, active):
            with tf.GradientTape() as tape:
                tape.watch(imgs)
                losses = dream_losses(extractor(imgs), coeffs)
                total = tf.reduce_sum(losses)  # samples are independent: each one's gradient is its own loss's
            grads = tape.gradient(total, imgs)
            # Each sample's _normalize exactly as its single step computes it (the same reduction over
            # a (1, H, W, 3) tensor): a mean over axes 1-3 of the batch rounds differently in the last
            # bit, which the steps amplify into visible differences.
            normalized = tf.map_fn(lambda g: _normalize(g[None])[0], grads)
            update = learning_rate * normalized * tf.reshape(active, [-1, 1, 1, 1])
            return losses, imgs + update

        return step
    if backend == "jax":
        import jax

        trainable = [v.value for v in extractor.trainable_variables]
        frozen = [v.value for v in extractor.non_trainable_variables]

        def total_loss(imgs, coeffs):
            features, _ = extractor.stateless_call(trainable, frozen, imgs, training=False)
            losses = dream_losses(features, coeffs)
            return ops.sum(losses), losses

        grad_fn = jax.value_and_grad(total_loss, has_aux=True)

        @jax.jit  # traced once per batch shape
        def jax_step(imgs, coeffs, learning_rate, active):
            (_, losses), grads = grad_fn(imgs, coeffs)
            # Each sample's _normalize as its single step computes it (see the TensorFlow step).
            normalized = ops.concatenate([_normalize(grads[i:i + 1]) for i in range(grads.shape[0])], axis=0)
            update = learning_rate * normalized * ops.reshape(active, (-1, 1, 1, 1))
            return losses, imgs + update

        return jax_step
    raise RuntimeError(f"dreamq supports the tensorflow and jax Keras backends, not {backend!r}")


def make_gradient_fns(extractor, objective=dream_loss, target_shape=(None,)):
    """Compile, once for any image size, the two functions the engine needs:

    ``step(img, target, learning_rate) -> (loss, img)``: the seed's fused step;
    ``gradient(img, target) -> (loss, grads)``: raw gradients, for tiled steps.
    ``objective(features, target)`` is the loss: dream_loss, whose target is the
    layer weights (the seed), or guide_loss, whose target is the guide's features
    (``target_shape`` ``(None, channels)``: any guide size reuses the graph).
    The only backend-specific code in the engine: how to take a gradient and compile.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        image_spec = tf.TensorSpec([1, None, None, 3], tf.float32)
        target_spec = tf.TensorSpec(list(target_shape), tf.float32)

        def loss_and_grads(img, target):
            with tf.GradientTape() as tape:
                tape.watch(img)
                loss = objective(extractor(img), target)
            return loss, tape.gradient(loss, img)

        gradient = tf.function(loss_and_grads, input_signature=[image_spec, target_spec])

        # One graph for loss, gradient, normalisation and update, as the seed's step.
        @tf.function(input_signature=[image_spec, target_spec, tf.TensorSpec([], tf.float32)])
        def step(img, target, learning_rate):
            loss, grads = loss_and_grads(img, target)
            return loss, img + learning_rate * _normalize(grads)

        return step, gradient
    if backend == "jax":
        import jax

        trainable = [v.value for v in extractor.trainable_variables]
        frozen = [v.value for v in extractor.non_trainable_variables]

        def loss_fn(img, target):
            features, _ = extractor.stateless_call(trainable, frozen, img, training=False)
            return objective(features, target)

        loss_and_grads = jax.value_and_grad(loss_fn)
        # Traced once per shape (image and guide): no shape-polymorphic jit.
        jax_gradient = jax.jit(loss_and_grads)

        @jax.jit
        def jax_step(img, target, learning_rate):
            loss, grads = loss_and_grads(img, target)
            return loss, img + learning_rate * _normalize(grads)

        if objective is dream_loss:
            def masked_loss(img, target, limits):
                features, _ = extractor.stateless_call(trainable, frozen, img, training=False)
                return masked_dream_loss(features, target, limits)

            masked_loss_and_grads = jax.value_and_grad(masked_loss)

            # One compile per bucket shape: the real size inside it is data (``limits``), not shape.
            @jax.jit
            def bucket_step(img, target, learning_rate, limits):
                loss, grads = masked_loss_and_grads(img, target, limits)
                return loss, img + learning_rate * _normalize_inside(grads, limits[-1])

            jax_step.bucket_step = bucket_step
        return jax_step, jax_gradient
    raise RuntimeError(f"dreamq supports the tensorflow and jax Keras backends, not {backend!r}")


def resize(img, shape):
    # Bilinear without antialiasing: tf.image.resize's default, which the seed uses.
    return ops.image.resize(img, shape, interpolation="bilinear", antialias=False)


def fit_guide(guide: np.ndarray, max_side: int, min_side: int) -> np.ndarray:
    """The guide at the size its features are taken at: longer side at most ``max_side``
    (as shared.images.decode_image(max_side=...) resizes, so a guide it already fitted
    is left alone), each side at least ``min_side`` (a tiny guide still gives features)."""
    h, w = guide.shape[:2]
    ratio = min(1.0, max_side / max(h, w))
    size = (max(min_side, round(w * ratio)), max(min_side, round(h * ratio)))
    if size == (w, h):
        return guide
    return np.asarray(Image.fromarray(guide).resize(size, Image.LANCZOS))


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

    def __init__(self, model: DreamModel, auto_tile_pixels: int | None = None, auto_tile_size: int = 512,
                 shape_buckets: int | None = None):
        self.model = model
        self.auto_tile_pixels = auto_tile_pixels
        self.auto_tile_size = auto_tile_size
        # Shape buckets (see bucket_shape): where a new shape compiles (JAX), 64 px unless set.
        if shape_buckets is None:
            shape_buckets = 64 if keras.backend.backend() == "jax" else 0
        self.shape_buckets = shape_buckets
        self._limits: dict[tuple, np.ndarray] = {}
        self._networks = {"fp32": model.network}
        self._fns: dict[tuple, tuple[Callable, Callable]] = {}
        self._guided: dict[tuple, tuple[Callable, Callable, keras.Model]] = {}
        self._batch_steps: dict[tuple, Callable] = {}

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

    def batch_step(self, layers: tuple[str, ...], precision: str = "fp32"):
        """The compiled batched plain step (make_batch_step) for these layers and precision."""
        key = (layers, precision)
        if key not in self._batch_steps:
            net = self.network(precision)
            extractor = keras.Model(net.inputs, [net.get_layer(name).output for name in layers])
            self._batch_steps[key] = make_batch_step(extractor)
        return self._batch_steps[key]

    def can_batch(self, shape: tuple[int, int], params: DreamParams) -> bool:
        """Whether ``dream_batch`` runs images of this shape with these parameters as ``dream`` would:
        only the plain step (no tiles, auto or asked, no jitter; a guide is the caller's to leave out),
        and no shape buckets: ``dream`` would pad to a bucket (JAX's default), which changes the result
        by a few levels, so a batch would not equal the jobs run one by one (DREAMQ_SHAPE_BUCKETS=0 batches)."""
        if params.tile_size is not None or params.jitter:
            return False
        if self.auto_tile_pixels and shape[0] * shape[1] > self.auto_tile_pixels:
            return False
        precision = params.precision if params.precision in ("fp32", "bf16") else "fp32"
        bucketed = self.shape_buckets and getattr(self.gradient_step(tuple(params.layers), precision),
                                                  "bucket_step", None)
        return not bucketed

    def guide_layer(self, params: DreamParams) -> str:
        return params.guide_layer or self.model.spec.guide_layer

    def guided_fns(self, layer: str, precision: str = "fp32"):
        """The compiled (step, gradient) of the guide objective at ``layer``, and that
        layer's extractor (which also takes the guide's features), built on first use."""
        key = (layer, precision)
        if key not in self._guided:
            net = self.network(precision)
            # One input, not the list net.inputs: the guide's features are taken by calling it.
            extractor = keras.Model(net.input, net.get_layer(layer).output)
            step, gradient = make_gradient_fns(extractor, guide_loss, (None, extractor.output.shape[-1]))
            self._guided[key] = (step, gradient, extractor)
        return self._guided[key]

    def guide_features(self, guide: np.ndarray, layer: str, precision: str = "fp32"):
        """The guide's feature vectors at ``layer``, ``(positions, channels)`` float32.

        Taken at the guide's own size, as the notebook does, but with the longer side
        at most the model's guide_side (see shared/models.py): about the scale the
        network was trained at, and the match matrix (image positions x guide
        positions) stays small whatever was uploaded.
        """
        if guide.ndim != 3 or guide.shape[-1] != 3 or guide.dtype != np.uint8:
            raise ValueError(f"the guide must be a uint8 (H, W, 3) RGB array, not {guide.dtype} {guide.shape}")
        spec = self.model.spec
        guide = fit_guide(guide, spec.guide_side, spec.min_side_for((layer,)))
        extractor = self.guided_fns(layer, precision)[2]
        features = extractor(ops.convert_to_tensor(self.model.preprocess(guide.astype(np.float32)[None])))
        features = ops.cast(features, "float32")
        return ops.reshape(features, (-1, features.shape[-1]))

    def gradient_step(self, layers: tuple[str, ...], precision: str = "fp32"):
        return self.gradient_fns(layers, precision)[0]

    def limits(self, layers: tuple[str, ...], shape: tuple[int, int], precision: str = "fp32") -> np.ndarray:
        """The bucket step's ``limits`` for an image of ``shape``: each layer's activation size, then
        the image's (computed from the network's shapes, not by running it)."""
        key = (layers, shape)
        if key not in self._limits:
            net = self.network(precision)
            extractor = keras.Model(net.inputs, [net.get_layer(name).output for name in layers])
            out = extractor.compute_output_shape((1, *shape, 3))
            out = out if isinstance(out, list) else [out]
            self._limits[key] = np.array([o[1:3] for o in out] + [shape], np.int32)
        return self._limits[key]

    def warm_up(self, layers: tuple[str, ...] | None = None, side: int = 128, precisions=("fp32",)) -> None:
        """Build and run the step once so that the first job pays no compile time."""
        layers = layers or tuple(self.model.spec.default_layers)
        side = max(side, self.model.spec.min_side_for(layers))
        for precision in precisions:
            step, gradient = self.gradient_fns(layers, precision)
            img, coeffs = ops.zeros((1, side, side, 3)), ops.ones((len(layers),))
            step(img, coeffs, ops.convert_to_tensor(0.0))
            gradient(img, coeffs)

    def tiled_step(self, img, target, learning_rate, gradient, tile: int, rng: np.random.Generator):
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
                tile_loss, tile_grads = gradient(ops.convert_to_tensor(rolled[:, y0:y1, x0:x1]), target)
                loss += weight * float(tile_loss)
                grads[:, y0:y1, x0:x1] = weight * ops.convert_to_numpy(tile_grads)
        grads = np.roll(grads, (-dy, -dx), axis=(1, 2))
        grads /= max(float(np.abs(grads).mean()), 1e-6)
        return loss, ops.convert_to_tensor(x + float(learning_rate) * grads)

    def ascent_step(self, params: DreamParams, tile: int | None, rng: np.random.Generator,
                    guide: np.ndarray | None = None):
        """This job's gradient ascent step, ``img -> (loss, img)``: chosen once, called every step.

        ``rng`` is drawn from only here, step by step (tile rolls, jitter), so a
        seed gives the same dream.  With a guide, the step ascends the guide
        objective at the guide layer instead of the weighted layers' loss.
        """
        if guide is None:
            layers = tuple(params.layers)
            step, gradient = self.gradient_fns(layers, params.precision)
            target = ops.convert_to_tensor(np.array([params.layers[n] for n in layers], np.float32))
        else:
            layer = self.guide_layer(params)
            step, gradient, _ = self.guided_fns(layer, params.precision)
            target = self.guide_features(guide, layer, params.precision)  # once per job
        learning_rate = ops.convert_to_tensor(np.float32(params.step))

        def tiled(img):
            # Tile by tile: memory bounded by the tile, not by the picture.
            return self.tiled_step(img, target, learning_rate, gradient, tile, rng)

        def jittered(img):
            # Shift the image a little each step, so features don't lock to the pixel grid.
            dy, dx = (int(v) for v in rng.integers(-params.jitter, params.jitter + 1, size=2))
            loss, img = step(ops.roll(img, (dy, dx), axis=(1, 2)), target, learning_rate)
            return loss, ops.roll(img, (-dy, -dx), axis=(1, 2))

        def plain(img):
            # The seed's step, exactly: one compiled call.
            return step(img, target, learning_rate)

        if tile is not None:
            return tiled
        return jittered if params.jitter else plain

    def dream(
        self,
        image: np.ndarray,
        params: DreamParams,
        *,
        guide: np.ndarray | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_preview: Callable[[int, np.ndarray], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        timings: dict[str, float] | None = None,
    ) -> np.ndarray:
        """Dream on an ``(H, W, 3)`` uint8 RGB image; return the result, same size and type.

        guide: None (the seed's dream), or a uint8 RGB ``(H, W, 3)`` image whose
        features at ``params.guide_layer`` (the model's guide_layer if None) the
        dream is drawn toward; ``params.layers`` are then not used.
        on_progress(Progress): after every step.  on_preview(octave, uint8 image):
        after every octave.  should_cancel() returns a bool and is polled before
        every step, the first included; when it returns True the engine raises
        Canceled there.  An exception raised by any of these callbacks propagates
        unchanged: the engine neither catches nor wraps it.  ``timings``: a dict the engine adds
        its seconds to: ``steps_s`` inside the ascent steps, ``preview_s`` in the previews (the
        copy to the host and ``on_preview``).
        """
        clock = timings if timings is not None else {}
        clock.setdefault("steps_s", 0.0)
        clock.setdefault("preview_s", 0.0)
        # The layers the loss reads: they set the smallest octave the network can take.
        layers = tuple(params.layers) if guide is None else (self.guide_layer(params),)
        if params.precision not in ("fp32", "bf16"):  # "auto" is the caller's to resolve (worker.device)
            raise ValueError(f"precision must be fp32 or bf16 here, not {params.precision!r}")
        tile = params.tile_size
        if tile is None and self.auto_tile_pixels and image.shape[0] * image.shape[1] > self.auto_tile_pixels:
            tile = self.auto_tile_size
        rng = np.random.default_rng(params.seed)  # rolls are random but repeatable
        ascend = self.ascent_step(params, tile, rng, guide)
        started = time.perf_counter()

        original = ops.convert_to_tensor(self.model.preprocess(image.astype(np.float32)[None]))
        # The seed's octaves; a small image skips those below the network's minimum.
        min_side = self.model.spec.min_side_for(layers)
        shapes = dream_octave_shapes(image.shape[0], image.shape[1], params.octaves, params.octave_scale, min_side)
        if not shapes:
            raise ValueError(f"the image is {image.shape[1]}x{image.shape[0]}, below the {min_side} px minimum")
        shrunk_original = resize(original, shapes[0])

        # Buckets: only the plain step (no tiles, jitter or guide), and only where the backend has one.
        bucket_step = getattr(self.gradient_step(layers, params.precision), "bucket_step", None)
        bucketed = bool(self.shape_buckets and bucket_step and tile is None and not params.jitter and guide is None)
        if bucketed:
            coeffs = ops.convert_to_tensor(np.array([params.layers[n] for n in layers], np.float32))
            learning_rate = ops.convert_to_tensor(np.float32(params.step))

        def gradient_ascent_loop(img, octave: int):
            if bucketed:  # padded to the bucket's shape here, cropped back after the octave's steps
                h, w = img.shape[1:3]
                big_h, big_w = bucket_shape((h, w), self.shape_buckets)
                limits = ops.convert_to_tensor(self.limits(layers, (h, w), params.precision))
                img = ops.pad(img, [[0, 0], [0, big_h - h], [0, big_w - w], [0, 0]], mode="edge")
                step = lambda x: bucket_step(x, coeffs, learning_rate, limits)  # noqa: E731
            else:
                step = ascend
            for i in range(params.iterations):
                if should_cancel is not None and should_cancel():
                    raise Canceled()
                t0 = time.perf_counter()
                loss, img = step(img)
                loss = float(loss)  # waits for the step: the seed's max_loss test needs its value
                clock["steps_s"] += time.perf_counter() - t0
                if not math.isfinite(loss):  # the seed would go on with a NaN image
                    raise LossNotFinite(loss, octave, i)
                if on_progress is not None:
                    on_progress(Progress(octave, len(shapes), i, params.iterations, loss, time.perf_counter() - started))
                if params.max_loss is not None and loss > params.max_loss:
                    break
            return img[:, :h, :w, :] if bucketed else img

        img, last = original, None
        for octave, shape in enumerate(shapes):
            img = resize(img, shape)
            img = gradient_ascent_loop(img, octave)
            # Put back the detail that shrinking and re-enlarging the original lost.
            upscaled_shrunk_original = resize(shrunk_original, shape)
            same_size_original = resize(original, shape)
            img = img + (same_size_original - upscaled_shrunk_original)
            shrunk_original = resize(original, shape)
            last = None
            if on_preview is not None:
                t0 = time.perf_counter()
                last = self.model.deprocess(ops.convert_to_numpy(img))
                on_preview(octave, last)
                clock["preview_s"] += time.perf_counter() - t0
        # The last octave's preview is the result: copied to the host once (callbacks only read it).
        return last if last is not None else self.model.deprocess(ops.convert_to_numpy(img))

    def dream_batch(
        self,
        images: list[np.ndarray],
        params: DreamParams,
        *,
        on_progress: list[Callable[[Progress], None] | None] | None = None,
        on_preview: list[Callable[[int, np.ndarray], None] | None] | None = None,
        should_cancel: list[Callable[[], bool] | None] | None = None,
        timings: list[dict[str, float] | None] | None = None,
    ) -> list[np.ndarray | None | LossNotFinite]:
        """``dream`` of several images of one shape with the same parameters (``seed`` aside: the plain
        step draws nothing), as one batch: the same octave loop on an ``(N, H, W, 3)`` tensor, each
        sample with its own loss, gradient normalisation and max_loss (a sample whose loss passed it
        stops updating for the rest of the octave, as its own run would break).

        The callbacks are one per image (or None), as ``dream``'s.  A sample whose ``should_cancel()``
        returns True leaves the batch there and the others go on; its slot of the result is None.
        A sample whose loss is not finite leaves it too, its slot the LossNotFinite.  ``timings``: each
        image's dict gets the batch's seconds (every sample waited for the whole step).  No tiles, no
        jitter, no guide, no shape buckets (``can_batch``).
        """
        n = len(images)
        if n == 0:
            return []
        shape = images[0].shape
        if any(image.shape != shape for image in images):
            raise ValueError("dream_batch needs images of one shape")
        if params.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16 here, not {params.precision!r}")
        if not self.can_batch(shape[:2], params):
            raise ValueError("dream_batch runs the plain step only (no tiles, no jitter, no shape buckets)")
        on_progress = list(on_progress or [None] * n)
        on_preview = list(on_preview or [None] * n)
        should_cancel = list(should_cancel or [None] * n)
        clocks = [c if c is not None else {} for c in (timings or [None] * n)]
        for clock in clocks:
            clock.setdefault("steps_s", 0.0)
            clock.setdefault("preview_s", 0.0)
        layers = tuple(params.layers)
        step = self.batch_step(layers, params.precision)
        coeffs = ops.convert_to_tensor(np.array([params.layers[name] for name in layers], np.float32))
        learning_rate = ops.convert_to_tensor(np.float32(params.step))
        started = time.perf_counter()

        min_side = self.model.spec.min_side_for(layers)
        shapes = dream_octave_shapes(shape[0], shape[1], params.octaves, params.octave_scale, min_side)
        if not shapes:
            raise ValueError(f"the image is {shape[1]}x{shape[0]}, below the {min_side} px minimum")
        results: list = [None] * n
        alive = list(range(n))  # the images still in the batch, in the tensors' order
        original = ops.convert_to_tensor(self.model.preprocess(np.stack(images).astype(np.float32)))
        shrunk_original = resize(original, shapes[0])
        img = original

        def keep(rows: list[int]) -> None:
            """Keep only these rows (positions in ``alive``) of every tensor of the batch."""
            nonlocal img, original, shrunk_original, alive
            index = ops.convert_to_tensor(np.array(rows, np.int32))
            img, original, shrunk_original = (ops.take(t, index, axis=0) for t in (img, original, shrunk_original))
            alive = [alive[r] for r in rows]

        for octave, octave_shape in enumerate(shapes):
            img = resize(img, octave_shape)
            active = np.ones(len(alive), np.float32)
            for i in range(params.iterations):
                # Cancel: polled before every step, as ``dream`` does; a canceled image leaves the batch.
                gone = [r for r, j in enumerate(alive) if should_cancel[j] is not None and should_cancel[j]()]
                if gone:
                    rows = [r for r in range(len(alive)) if r not in gone]
                    active = active[rows]
                    keep(rows)
                if not alive:
                    return results
                if not active.any():  # every sample passed max_loss: the octave ends
                    break
                t0 = time.perf_counter()
                losses, img = step(img, coeffs, learning_rate, ops.convert_to_tensor(active))
                losses = ops.convert_to_numpy(losses)  # waits for the step: max_loss needs the values
                spent = time.perf_counter() - t0
                bad = []
                for r, j in enumerate(alive):
                    clocks[j]["steps_s"] += spent
                    if not active[r]:
                        continue  # its octave ended: no progress, as its own run would have none
                    loss = float(losses[r])
                    if not math.isfinite(loss):
                        results[j] = LossNotFinite(loss, octave, i)
                        bad.append(r)
                        continue
                    if on_progress[j] is not None:
                        on_progress[j](Progress(octave, len(shapes), i, params.iterations, loss,
                                                time.perf_counter() - started))
                    if params.max_loss is not None and loss > params.max_loss:
                        active[r] = 0.0
                if bad:
                    rows = [r for r in range(len(alive)) if r not in bad]
                    active = active[rows]
                    keep(rows)
                    if not alive:
                        return results
            upscaled_shrunk_original = resize(shrunk_original, octave_shape)
            same_size_original = resize(original, octave_shape)
            img = img + (same_size_original - upscaled_shrunk_original)
            shrunk_original = resize(original, octave_shape)
            if any(on_preview[j] is not None for j in alive) or octave == len(shapes) - 1:
                t0 = time.perf_counter()
                host = ops.convert_to_numpy(img)
                pictures = [self.model.deprocess(host[r:r + 1]) for r in range(len(alive))]
                for r, j in enumerate(alive):
                    if on_preview[j] is not None:
                        on_preview[j](octave, pictures[r])
                spent = time.perf_counter() - t0
                for j in alive:
                    clocks[j]["preview_s"] += spent
                if octave == len(shapes) - 1:
                    for r, j in enumerate(alive):
                        results[j] = pictures[r]
        return results
