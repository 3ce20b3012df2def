"""End to end through the queue vs the Keras example as a script, same image, same run.

    .venv/bin/python -m bench.e2e [--size 640x960] [--repeat 1] [--no-bf16]

Seed: the example in a fresh process (imports, model, retracing, steps, PNG:
`bench/seed_reference.py`), wall clock.  dreamq: submit to a warm worker
through Redis until the result PNG is in the store, for fp32 (exact) and
`precision=bf16` (fast; a worker without native bf16 runs fp32 instead and
the job says so: the table shows what really ran).  Random InceptionV3
weights (ImageNet's cannot be fetched here); speed does not depend on the
weights' values.

Headline: all steps (max_loss off, every octave runs its 20 steps).  With the
seed's max_loss 15 and the He-normal random weights, octaves stop after a few
steps and the ratio mostly measures fixed costs (imports, model build); that
row is printed too, labelled.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import print_header

# The example as a script, with max_loss as a parameter (bench/seed_reference.py's own
# __main__ always uses the seed's 15).
SEED_SCRIPT = r"""
import sys
import numpy as np
from PIL import Image
from bench.seed_reference import run_seed
src, weights, dst, max_loss = sys.argv[1:5]
max_loss = None if max_loss == "none" else float(max_loss)
Image.fromarray(run_seed(np.asarray(Image.open(src).convert("RGB")), weights, max_loss=max_loss)).save(dst)
"""

MODES = {"all steps (max_loss off)": "none", "seed default (max_loss 15)": "15"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="640x960")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-bf16", action="store_true", help="skip the precision=bf16 jobs")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    print_header()

    from PIL import Image

    from bench.cluster import ROOT, SAMPLE, Service
    from dreamq.redis_server import EmbeddedRedis
    from shared.kinds.image import RESULT
    from worker.models import load_model

    tmp = Path(tempfile.mkdtemp())
    weights = tmp / "inception_v3_random.weights.h5"
    load_model("inception_v3", "random").network.save_weights(str(weights))
    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((w, h), Image.LANCZOS))
    src = tmp / "input.png"
    Image.fromarray(image).save(src)

    precisions = ("fp32",) if args.no_bf16 else ("fp32", "bf16")
    results: dict[tuple[str, str], list[float]] = {}
    ran: dict[tuple[str, str], set[str]] = {}
    server = EmbeddedRedis(tmp / "redis").start()
    svc = Service(server.url, tmp, {"DREAMQ_MODELS": "inception_v3", "DREAMQ_INCEPTION_V3_WEIGHTS": str(weights)})
    try:
        svc.start_worker(DREAMQ_INTRA_OP_THREADS="0", DREAMQ_INTER_OP_THREADS="0")
        if "bf16" in precisions:  # compile bf16 once, as a worker that serves bf16 jobs has
            svc.wait(svc.submit(image[:300, :300], precision="bf16", iterations=1), timeout=600)
        for _ in range(args.repeat):
            for mode, max_loss in MODES.items():
                print(f"... {mode}: seed script", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", SEED_SCRIPT, str(src), str(weights), str(tmp / "seed.png"),
                                max_loss], cwd=ROOT, check=True, capture_output=True)
                results.setdefault((mode, "seed script"), []).append(time.perf_counter() - t0)
                for precision in precisions:
                    print(f"... {mode}: dreamq {precision}", file=sys.stderr, flush=True)
                    t0 = time.perf_counter()
                    # 30 min: an emulated bf16 job at 640x960 with all steps takes ~10 min on an AVX2 CPU
                    job = svc.wait(svc.submit(image, precision=precision, max_loss=max_loss), timeout=1800)
                    assert job.status == "succeeded", job.error
                    assert svc.store.get(job.id, RESULT) is not None
                    results.setdefault((mode, f"dreamq {precision}"), []).append(time.perf_counter() - t0)
                    what = job.metrics.get("precision", "not recorded")
                    ran.setdefault((mode, f"dreamq {precision}"), set()).add(
                        what + "".join(f" ({warning})" for warning in job.warnings))
    finally:
        svc.stop()
        server.stop()

    print(f"\n{args.size}, seed parameters except max_loss as named, {args.repeat} run(s), median seconds per job")
    print(f"{'mode':<26} | {'':14} | {'s/job':>7} | {'vs seed':>7} | what ran")
    for mode in MODES:
        seed = statistics.median(results[(mode, "seed script")])
        for (m, name), values in results.items():
            if m == mode:
                s = statistics.median(values)
                what = "; ".join(sorted(ran.get((m, name), {"fp32 (the example)"})))
                print(f"{mode:<26} | {name:14} | {s:7.2f} | {s / seed:7.2f} | {what}")


if __name__ == "__main__":
    main()
