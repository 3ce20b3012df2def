"""An independent, plain transcription of the Keras Deep Dream example's steps.

Written from the example's description for the fidelity test; it shares no
code with dreamq's engine (it imports nothing from worker/ or shared/).
TensorFlow backend only, exactly like the example.
"""
import time

import numpy as np
import tensorflow as tf
from keras.applications import inception_v3

SEED_LAYERS = {"mixed4": 1.0, "mixed5": 1.5, "mixed6": 2.0, "mixed7": 2.5}


def run_seed(rgb_uint8, weights_path, layer_settings=SEED_LAYERS, step=0.01, num_octave=3,
             octave_scale=1.4, iterations=20, max_loss=15.0, losses=None, step_times=None):
    import keras

    model = inception_v3.InceptionV3(weights=None, include_top=False)
    model.load_weights(weights_path)
    outputs_dict = {name: model.get_layer(name).output for name in layer_settings}
    feature_extractor = keras.Model(inputs=model.inputs, outputs=outputs_dict)

    def compute_loss(input_image):
        features = feature_extractor(input_image)
        loss = tf.zeros(shape=())
        for name in features.keys():
            coeff = layer_settings[name]
            activation = features[name]
            scaling = tf.reduce_prod(tf.cast(tf.shape(activation), "float32"))
            loss += coeff * tf.reduce_sum(tf.square(activation[:, 2:-2, 2:-2, :])) / scaling
        return loss

    @tf.function
    def gradient_ascent_step(img, learning_rate):
        with tf.GradientTape() as tape:
            tape.watch(img)
            loss = compute_loss(img)
        grads = tape.gradient(loss, img)
        grads /= tf.maximum(tf.reduce_mean(tf.abs(grads)), 1e-6)
        img += learning_rate * grads
        return loss, img

    def gradient_ascent_loop(img, iterations, learning_rate, max_loss=None):
        for i in range(iterations):
            t0 = time.perf_counter()
            loss, img = gradient_ascent_step(img, learning_rate)
            if step_times is not None:
                float(loss)  # wait for the step to finish
                step_times.append(time.perf_counter() - t0)
            if max_loss is not None and loss > max_loss:
                break
            if losses is not None:
                losses.append(float(loss))
        return img

    img = np.expand_dims(rgb_uint8.astype("float32"), axis=0)
    original_img = inception_v3.preprocess_input(img)
    original_shape = original_img.shape[1:3]

    successive_shapes = [original_shape]
    for i in range(1, num_octave):
        shape = tuple([int(dim / (octave_scale**i)) for dim in original_shape])
        successive_shapes.append(shape)
    successive_shapes = successive_shapes[::-1]
    shrunk_original_img = tf.image.resize(original_img, successive_shapes[0])

    img = tf.identity(original_img)
    for i, shape in enumerate(successive_shapes):
        img = tf.image.resize(img, shape)
        img = gradient_ascent_loop(img, iterations=iterations, learning_rate=step, max_loss=max_loss)
        upscaled_shrunk_original_img = tf.image.resize(shrunk_original_img, shape)
        same_size_original = tf.image.resize(original_img, shape)
        lost_detail = same_size_original - upscaled_shrunk_original_img
        img += lost_detail
        shrunk_original_img = tf.image.resize(original_img, shape)

    x = img.numpy().reshape((img.shape[1], img.shape[2], 3))
    x /= 2.0
    x += 0.5
    x *= 255.0
    return np.clip(x, 0, 255).astype("uint8")


if __name__ == "__main__":
    # As the example runs: a fresh process that imports, builds, dreams and saves.
    #   python -m bench.seed_reference INPUT WEIGHTS OUTPUT.png
    import sys

    from PIL import Image

    src, weights, dst = sys.argv[1:4]
    Image.fromarray(run_seed(np.asarray(Image.open(src).convert("RGB")), weights)).save(dst)
