"""Run one dream in a fresh process (the Keras backend is fixed at import time).

python -m tests.dream_once INPUT.npy OUTPUT.npy MODEL WEIGHTS PARAMS_JSON
"""
import json
import sys

import numpy as np


def main(argv):
    src, dst, model, weights, params = argv
    import keras

    from shared.params import parse_params
    from worker.dream import Dreamer
    from worker.models import load_model

    losses = []
    result = Dreamer(load_model(model, weights)).dream(
        np.load(src), parse_params(json.loads(params)), on_progress=lambda p: losses.append(p.loss)
    )
    np.save(dst, result)
    print(json.dumps({"backend": keras.backend.backend(), "losses": losses}))


if __name__ == "__main__":
    main(sys.argv[1:])
