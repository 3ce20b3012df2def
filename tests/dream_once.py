"""What the backend comparison needs, computed in a fresh process (Keras fixes its backend at import).

python -m tests.dream_once INPUT.npy MODEL WEIGHTS PARAMS_JSON OUTPUT.npz

At the preprocessed INPUT, through the engine's own compiled functions
(``Dreamer.gradient_fns``): the loss and gradient of one ``gradient`` call and
the loss and image of one fused ``step``; then the uint8 result of a short
``Dreamer.dream`` with PARAMS.  Writes them to OUTPUT.npz and prints the
backend that really ran, as JSON.
"""
import json
import sys

import numpy as np


def main(argv):
    src, model, weights, params_json, dst = argv
    import keras
    from keras import ops

    from shared.params import parse_params
    from worker.dream import Dreamer
    from worker.models import load_model

    params = parse_params(json.loads(params_json))
    dreamer = Dreamer(load_model(model, weights), shape_buckets=0)  # the seed's shapes on every backend
    image = np.load(src)

    layers = tuple(params.layers)
    step, gradient = dreamer.gradient_fns(layers, params.precision)
    img = ops.convert_to_tensor(dreamer.model.preprocess(image.astype(np.float32)[None]))
    coeffs = ops.convert_to_tensor(np.array([params.layers[name] for name in layers], np.float32))
    loss, grads = gradient(img, coeffs)
    step_loss, stepped = step(img, coeffs, ops.convert_to_tensor(np.float32(params.step)))

    losses = []
    dreamed = dreamer.dream(image, params, on_progress=lambda p: losses.append(p.loss))

    np.savez(dst, loss=np.float64(loss), grads=ops.convert_to_numpy(grads), step_input=ops.convert_to_numpy(img),
             step_loss=np.float64(step_loss), stepped=ops.convert_to_numpy(stepped), dream=dreamed,
             dream_losses=np.array(losses))
    print(json.dumps({"backend": keras.backend.backend()}))


if __name__ == "__main__":
    main(sys.argv[1:])
