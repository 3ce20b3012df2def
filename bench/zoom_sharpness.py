"""Does a zoom video stay sharp?  Per-frame sharpness of a zoom, before and after issue 21's defaults.

    .venv/bin/python -m bench.zoom_sharpness                         # vgg16_hed, 30 frames of 256 px
    .venv/bin/python -m bench.zoom_sharpness --try step=3,iterations=15 --try resample=bilinear

Runs the zoom kind's loop through the engine, as the worker does (worker/kinds/zoom.py: frame 0
is the dream of the photo, frame k+1 the dream of frame k zoomed), no queue.  For each setting:
the variance of the Laplacian of every frame (a 3x3 Laplacian on the grey frame, NumPy; higher is
sharper), the ratio frame 30 / frame 1 (1-based: the 30th frame against the first), and the mean
change between frames (mean absolute difference, in levels 0..255).  The baseline (the defaults
before issue 21, spelt out below so it stays the baseline) is measured in the same run as the
current defaults, so the machine's load does not decide the comparison.
"""
from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.machine import print_header

SAMPLE = Path(__file__).resolve().parent.parent / "dreamq" / "samples" / "astronaut.jpg"

# The zoom defaults before issue 21 (2 octaves x 5 steps a frame) with the model defaults of then.
BEFORE = {
    "vgg16_hed": {"iterations": 5, "octaves": 2, "step": 1.5,
                  "layers": {"block3_conv3": 1.0, "block4_conv3": 1.5, "block5_conv3": 2.0}},
    "inception_v3": {"iterations": 5, "octaves": 2},
}
LAPLACIAN_OF = ("frame 1", "frame 30")


def laplacian_variance(rgb: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian [[0,1,0],[1,-4,1],[0,1,0]] of the grey image (BT.601 luma),
    on the pixels whose whole neighbourhood is inside: the usual blur measure."""
    g = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def run_zoom(dreamer, image: np.ndarray, params, frames: int, resample: str) -> list[np.ndarray]:
    from worker.kinds.zoom import zoom_frame

    out, frame = [], image
    for k in range(frames):
        if k:
            frame = (zoom_frame(frame, params.zoom, params.rotate) if resample == "worker"
                     else zoom_frame(frame, params.zoom, params.rotate, resample))
        frame = dreamer.dream(frame, params.model_copy(update={"seed": params.seed + k}))
        out.append(frame)
    return out


def parse_try(text: str) -> dict:
    values: dict = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        values[key.strip()] = value.strip()
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16_hed")
    parser.add_argument("--side", type=int, default=256, help="the photo's side, px (a square)")
    parser.add_argument("--frames", type=int, default=30, help="at least 30: the ratio is frame 30 / frame 1")
    parser.add_argument("--try", dest="tries", action="append", default=[], metavar="K=V,...",
                        help="one more setting: zoom parameters (iterations=10,octaves=1,step=1.0,...) and "
                             "resample=worker|bilinear|bicubic|lanczos (the zoom's filter; worker: the worker's "
                             "zoom_frame, the default); repeatable")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the defaults before issue 21")
    parser.add_argument("--tries-only", action="store_true", help="only the --try settings (exploring)")
    parser.add_argument("--every", type=int, default=1, help="print every n-th frame's figures")
    parser.add_argument("--save", type=Path, help="write <name>.jpg here per setting: frames 1, 10, 20, 30, to look at")
    args = parser.parse_args()
    if args.frames < 30:
        parser.error("--frames: at least 30 (the ratio compares frame 30 with frame 1)")
    print_header()

    from shared.kinds.zoom import ZoomParams, parse_zoom
    from worker.dream import Dreamer
    from worker.models import load_model

    dreamer = Dreamer(load_model(args.model))
    img = Image.open(SAMPLE).convert("RGB")
    image = np.asarray(img.resize((args.side, args.side), Image.LANCZOS))

    settings = [] if args.no_baseline or args.tries_only else [("before", {**BEFORE[args.model], "resample": "bilinear"})]
    if not args.tries_only:
        settings.append(("now", {"resample": "worker"}))  # the zoom kind's defaults and filter as they are now
    settings += [(f"try{i + 1}", {"resample": "worker", **parse_try(t)}) for i, t in enumerate(args.tries)]

    results, seen = [], {}
    for name, values in settings:
        values = dict(values)
        resample = values.pop("resample")
        params = parse_zoom({"model": args.model, "frames": args.frames, **values})
        assert isinstance(params, ZoomParams)
        params = params.model_copy(update={"precision": "fp32"})
        key = (params.model_dump_json(), resample)
        if key in seen:  # the same frames again (the engine is deterministic): say so, save the time
            print(f"{name}: the same settings as {seen[key]}, not run again")
            continue
        seen[key] = name
        layers = ",".join(f"{k}={v:g}" for k, v in params.layers.items())
        desc = (f"{params.octaves} octaves x {params.iterations} steps, step {params.step:g}, layers {layers}, "
                f"zoom {params.zoom:g}, rotate {params.rotate:g}, {resample}; "
                f"{params.fps} fps")
        t0 = time.perf_counter()
        frames = run_zoom(dreamer, image, params, args.frames, resample)
        seconds = (time.perf_counter() - t0) / args.frames
        sharp = [laplacian_variance(f) for f in frames]
        change = [float(np.abs(b.astype(np.int16) - a.astype(np.int16)).mean()) for a, b in itertools.pairwise(frames)]
        results.append((name, desc, sharp, change, seconds))
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([frames[k] for k in (0, 9, 19, 29)], axis=1)).save(
                args.save / f"{name}.jpg", quality=85)
        print(f"{name}: {desc}: {seconds:.1f} s/frame; ratio frame 30 / frame 1 = {sharp[29] / sharp[0]:.2f}",
              flush=True)

    print(f"\n{args.model}, {args.side}x{args.side} sample photo, {args.frames} frames")
    print("frame  " + "  ".join(f"{n:>7} var {'':>6}" for n, *_ in results))
    for k in range(0, args.frames, args.every):
        row = []
        for _, _, sharp, change, _ in results:
            row.append(f"{sharp[k]:11.0f} {change[k - 1] if k else float('nan'):6.1f}")
        print(f"{k + 1:5}  " + "  ".join(row))
    print("       (each setting: variance of the Laplacian, mean change from the previous frame)\n")
    for name, desc, sharp, change, seconds in results:
        first, last = np.mean(change[:5]), np.mean(change[-5:])
        print(f"{name}: {desc}")
        print(f"    sharpness ratio frame 30 / frame 1: {sharp[29] / sharp[0]:.2f} ({sharp[0]:.0f} -> {sharp[29]:.0f}); "
              f"mean change between frames {first:.1f} (into frames 2-6) -> {last:.1f} (into the last 5); {seconds:.1f} s/frame")


if __name__ == "__main__":
    main()
