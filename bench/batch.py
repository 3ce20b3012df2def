"""Same-shape batching in the engine: N jobs one at a time against one batch of N, same run.

    .venv/bin/python -m bench.batch [--jobs 8] [--size 640x960] [--iterations 20] [--model inception_v3]

One process, the Keras backend of the environment (KERAS_BACKEND; on JAX shape buckets are off, as
batching needs), InceptionV3 with fixed-seed random weights (speed does not depend on their values),
the seed's parameters with every step (max_loss off).  Both ways are run once first to compile.
Prints jobs/s each way, the ratio (issue 23's goal: at least 2.5 on an H200 with 8 jobs; on a CPU, no
job slower than unbatched), and the largest difference between a batched and a single result.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench.machine import print_header


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--size", default="640x960", help="HxW")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--model", default="inception_v3")
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    print_header()
    from PIL import Image

    from bench.cluster import SAMPLE
    from shared.params import DreamParams
    from worker.dream import Dreamer
    from worker.models import load_model

    model = load_model(args.model, "random" if args.model == "inception_v3" else None)
    dreamer = Dreamer(model, shape_buckets=0)
    photo = Image.open(SAMPLE).convert("RGB").resize((w, h), Image.LANCZOS)
    images = [np.asarray(photo.rotate(5 * k)) for k in range(args.jobs)]  # alike in size, not in pixels
    params = DreamParams.model_validate({"model": args.model, "iterations": args.iterations, "max_loss": None})

    dreamer.dream(images[0], params)  # compile both ways first
    dreamer.dream_batch(images, params)
    t0 = time.perf_counter()
    singles = [dreamer.dream(image, params) for image in images]
    one_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = dreamer.dream_batch(images, params)
    batch_s = time.perf_counter() - t0
    diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(singles, batched))
    print(f"\n{args.model} {args.size}, {args.jobs} jobs, {args.iterations} steps an octave, max_loss off")
    print(f"one at a time   {args.jobs / one_s:8.3f} jobs/s   ({one_s:.2f} s)")
    print(f"one batch       {args.jobs / batch_s:8.3f} jobs/s   ({batch_s:.2f} s)")
    print(f"batched / one at a time: {one_s / batch_s:.2f}x jobs/s; largest difference {diff} levels of 255")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
