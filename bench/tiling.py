"""Peak memory of a big job, tiled vs untiled, each in a fresh process.

    .venv/bin/python -m bench.tiling [--size 2160x3840] [--iterations 2]

Peak RSS does not depend on the number of steps, so a few steps per octave
suffice.  Writes the tiled result to docs/images/tiled_<model>_<size>.jpg.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench.machine import print_header

CHILD = r"""
import json, resource, sys, time
import numpy as np
from PIL import Image
from shared.params import parse_params
from worker.dream import Dreamer
from worker.models import load_model
h, w, iterations, tile, out, model = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
img = np.asarray(Image.open("dreamq/samples/astronaut.jpg").convert("RGB").resize((w, h), Image.LANCZOS))
params = {"model": model, "iterations": iterations}
if tile != "none":
    params["tile_size"] = int(tile)
t0 = time.perf_counter()
weights = "random" if model == "inception_v3" else None
result = Dreamer(load_model(model, weights)).dream(img, parse_params(params))
seconds = time.perf_counter() - t0
if out != "-":
    Image.fromarray(result).save(out, quality=85)
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(h, w, iterations, tile, out, model):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(h), str(w), str(iterations), str(tile), out, model],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="2160x3840")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--model", default="inception_v3", help="inception_v3 uses random weights here")
    args = ap.parse_args()
    print_header()
    h, w = (int(v) for v in args.size.split("x"))
    tiled = run(h, w, args.iterations, args.tile, f"docs/images/tiled_{args.model}_{w}x{h}.jpg", args.model)
    untiled = run(h, w, args.iterations, "none", "-", args.model)
    print(f"{args.model}, {w}x{h}, 3 octaves x {args.iterations} steps, fresh process each")
    print(f"tiled ({args.tile}): {tiled}")
    print(f"untiled:     {untiled}")


if __name__ == "__main__":
    main()
