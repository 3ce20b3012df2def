"""Engine vs the Keras example, same weights, same image, same process.

    .venv/bin/python -m bench.engine [--sizes 640x960,400x600] [--repeat 1]

The seed's job time includes what every run of the example pays: building the
model, loading weights and tracing the step again for each octave's shape.
The engine's is a warm worker's: model built and step compiled beforehand.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="640x960,400x600", help="HxW list")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--all-steps", action="store_true", help="max_loss off: every run does all 60 steps")
    args = ap.parse_args()

    import keras

    from shared.params import parse_params
    from tests.seed_reference import run_seed
    from worker.dream import Dreamer
    from worker.models import load_model

    sample = Image.open(os.path.join(os.path.dirname(__file__), "..", "dreamq", "samples", "astronaut.jpg"))
    weights = os.path.join(tempfile.mkdtemp(), "inception_v3_random.weights.h5")
    load_model("inception_v3", "random").network.save_weights(weights)
    t0 = time.perf_counter()
    dreamer = Dreamer(load_model("inception_v3", weights))
    dreamer.warm_up()
    warm_s = time.perf_counter() - t0
    ap_all = args.all_steps
    # Seed parameters, max_loss 15 included: both sides stop octaves at the same steps
    # (they compute the same losses).  --all-steps turns it off so all 60 steps run.
    params = parse_params({"max_loss": "none"} if ap_all else {})

    print(f"backend {keras.backend.backend()}, seed parameters{' but max_loss off (60 steps)' if ap_all else ''}, "
          f"random InceptionV3 weights; engine warm-up (build + compile, once per worker) {warm_s:.2f}s")
    bf16 = parse_params({**({"max_loss": "none"} if ap_all else {}), "precision": "bf16"})
    dreamer.warm_up(precisions=("bf16",))
    print(f"{'size':>9} | {'seed job s':>10} | {'engine job s':>12} | {'job ratio':>9} | "
          f"{'seed step ms':>12} | {'engine step ms':>14} | {'step ratio':>10} | "
          f"{'bf16 job s':>10} | {'bf16 ratio':>10} | {'bf16 step ms':>12} | {'bf16 loss dev, octave 1 (max)':>13}")
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        image = np.asarray(sample.convert("RGB").resize((w, h), Image.LANCZOS))
        seed_jobs, engine_jobs, seed_steps, engine_steps, bf16_jobs, bf16_steps = [], [], [], [], [], []
        deviation = 0.0
        for _ in range(args.repeat):
            steps: list[float] = []
            t0 = time.perf_counter()
            run_seed(image, weights, max_loss=params.max_loss, step_times=steps)
            seed_jobs.append(time.perf_counter() - t0)
            seed_steps += _steady(steps, params.iterations)

            stamps: list[float] = []
            fp32_losses: list[float] = []
            t0 = time.perf_counter()
            dreamer.dream(image, params, on_progress=lambda p: (stamps.append(time.perf_counter()),
                                                                fp32_losses.append(p.loss)))
            engine_jobs.append(time.perf_counter() - t0)
            engine_steps += _steady(np.diff([t0, *stamps]).tolist(), params.iterations)

            stamps, bf16_losses = [], []
            t0 = time.perf_counter()
            dreamer.dream(image, bf16, on_progress=lambda p: (stamps.append(time.perf_counter()),
                                                              bf16_losses.append(p.loss)))
            bf16_jobs.append(time.perf_counter() - t0)
            bf16_steps += _steady(np.diff([t0, *stamps]).tolist(), params.iterations)
            # How far bf16's loss departs from fp32's over the first octave (same start).
            first = np.array(bf16_losses[: params.iterations])
            ref = np.array(fp32_losses[: params.iterations])
            deviation = max(deviation, float(np.max(np.abs(first - ref) / np.abs(ref))))
        sj, ej = statistics.median(seed_jobs), statistics.median(engine_jobs)
        ss, es = statistics.median(seed_steps), statistics.median(engine_steps)
        bj, bs = statistics.median(bf16_jobs), statistics.median(bf16_steps)
        print(f"{size:>9} | {sj:10.2f} | {ej:12.2f} | {ej / sj:9.2f} | {ss * 1e3:12.1f} | {es * 1e3:14.1f} | "
              f"{es / ss:10.2f} | {bj:10.2f} | {bj / sj:10.2f} | {bs * 1e3:12.1f} | {deviation:12.2%}")


def _steady(times: list[float], per_octave: int) -> list[float]:
    """Drop each octave's first step (the seed traces there) to compare steady steps."""
    return [t for i, t in enumerate(times) if i % per_octave != 0]


if __name__ == "__main__":
    main()
