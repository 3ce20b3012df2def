"""Engine vs the Keras example, same weights, same image, same process.

    .venv/bin/python -m bench.engine [--sizes 640x960,400x600] [--repeat 1] [--rounds 6] [--no-bf16]

Headline: all steps (max_loss off, every octave runs its 20 steps) and the
cost of one step.  With the seed's max_loss 15 and dreamq's He-normal random
weights the loss passes 15 after a few steps, octaves stop early and the job
ratio mostly measures fixed costs; that row is printed too, labelled.

The seed's job time includes what every run of the example pays: building the
model, loading weights and tracing the step again for each octave's shape.
The engine's is a warm worker's: model built and step compiled beforehand.

Efficiency: FLOP per step counted by TensorFlow on the step's graph for each
octave's shape, over the step's time, against a 2048x2048 float32 matmul of
this process (same threads) measured in the same rounds as the steps: on a
shared machine a peak measured minutes apart says more about the neighbours
than about the step.  bf16: the bf16 step is forced through
`Dreamer.gradient_fns(layers, "bf16")` (always computes in bf16, whatever a
worker would decide for a job) and timed in the same rounds as fp32.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.machine import cpu_info, matmul_peak, print_header, tf_threads  # noqa: E402

# bench/gpu_check.py's figures for 640x960 (33.8, 69.5, 141.0 GFLOP); used only when
# TensorFlow cannot count, scaled by area (per pixel the three shapes differ by < 8 %).
GFLOP_AT_640x960 = 141.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="640x960,400x600", help="HxW list")
    ap.add_argument("--repeat", type=int, default=1, help="jobs per size and mode (medians)")
    ap.add_argument("--rounds", type=int, default=6,
                    help="interleaved matmul / fp32 / bf16 rounds per octave shape (the first one is dropped)")
    ap.add_argument("--no-bf16", action="store_true", help="skip the forced bf16 steps")
    args = ap.parse_args()

    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    from shared.models import MODELS, octave_shapes

    spec = MODELS["inception_v3"]
    min_side = spec.min_side_for(tuple(spec.default_layers))
    for h, w in sizes:
        if min(octave_shapes(h, w, 3, 1.4)[0]) < min_side:
            # the engine would skip octaves the seed runs: the two would not do the same work
            ap.error(f"{h}x{w}: the seed's smallest octave is below InceptionV3's {min_side} px; "
                     f"use sides of at least {int(min_side * 1.96) + 1}")

    print_header()
    import keras

    from shared.params import parse_params
    from bench.seed_reference import run_seed
    from worker.dream import Dreamer
    from worker.models import load_model

    print(tf_threads(), flush=True)
    peaks = [matmul_peak()]
    sample = Image.open(os.path.join(os.path.dirname(__file__), "..", "dreamq", "samples", "astronaut.jpg"))
    weights = os.path.join(tempfile.mkdtemp(), "inception_v3_random.weights.h5")
    load_model("inception_v3", "random").network.save_weights(weights)
    t0 = time.perf_counter()
    dreamer = Dreamer(load_model("inception_v3", weights))
    dreamer.warm_up()
    warm_s = time.perf_counter() - t0
    precisions = ("fp32",) if args.no_bf16 else ("fp32", "bf16")
    if not args.no_bf16:
        dreamer.warm_up(precisions=("bf16",))
    modes = {"all steps (max_loss off)": parse_params({"max_loss": "none"}),
             "seed default (max_loss 15)": parse_params({})}
    layer_coeffs = modes["all steps (max_loss off)"].layers

    jobs, steps, rounds = [], [], []
    for h, w in sizes:
        size = f"{h}x{w}"
        image = np.asarray(sample.convert("RGB").resize((w, h), Image.LANCZOS))
        shapes = octave_shapes(h, w, 3, 1.4)
        gflop, counted = zip(*(step_gflop(dreamer, tuple(layer_coeffs), s) for s in shapes))
        for mode, params in modes.items():
            seed_jobs, engine_jobs, runs = [], [], set()
            seed_steps: list[list[float]] = [[] for _ in shapes]
            engine_steps: list[list[float]] = [[] for _ in shapes]
            for _ in range(args.repeat):
                _progress(f"{size} {mode}: seed")
                times: list[float] = []
                t0 = time.perf_counter()
                run_seed(image, weights, max_loss=params.max_loss, step_times=times)
                seed_jobs.append(time.perf_counter() - t0)
                _progress(f"{size} {mode}: engine")
                seen: list[tuple[int, int, float]] = []
                t0 = time.perf_counter()
                dreamer.dream(image, params,
                              on_progress=lambda p, seen=seen: seen.append((p.octave, p.step, time.perf_counter())))
                engine_jobs.append(time.perf_counter() - t0)
                runs.add((len(times), len(seen)))
                if params.max_loss is None:  # every octave has all its steps: per-octave step times are exact
                    stamps = [t0] + [t for _, _, t in seen]
                    for (octave, step, _), dt in zip(seen, np.diff(stamps)):
                        if step:  # each octave's first step: the seed traces there, the engine resizes
                            engine_steps[octave].append(dt)
                    for i, dt in enumerate(times):
                        if i % params.iterations:
                            seed_steps[i // params.iterations].append(dt)
            jobs.append((size, mode, runs, params.octaves * params.iterations, statistics.median(seed_jobs),
                         statistics.median(engine_jobs)))
            if params.max_loss is None:
                for shape, ss, es in zip(shapes, seed_steps, engine_steps):
                    steps.append((size, shape, statistics.median(ss), statistics.median(es)))
        _progress(f"{size}: interleaved matmul / {' / '.join(precisions)} steps")
        for shape, g, c in zip(shapes, gflop, counted):
            r = interleaved(dreamer, layer_coeffs, image, shape, args.rounds, precisions)
            rounds.append((size, shape, g, c, r))
    peaks.append(matmul_peak())
    bf16_peak = None if args.no_bf16 else max(matmul_peak("bfloat16") for _ in range(2))

    print(f"\nbackend {keras.backend.backend()}, InceptionV3 with random weights, seed layers and step; "
          f"engine warm-up (build + compile, once per worker) {warm_s:.2f}s")

    print("\nPer step, all steps (max_loss off), fp32: median of each octave's steps, its first step left out")
    print(f"{'size':>9} | {'octave':>9} | {'seed ms':>8} | {'engine ms':>9} | {'engine/seed':>11}")
    for size, (oh, ow), ss, es in steps:
        print(f"{size:>9} | {f'{oh}x{ow}':>9} | {ss * 1e3:8.0f} | {es * 1e3:9.0f} | {es / ss:11.2f}")
    for size in dict.fromkeys(r[0] for r in steps):
        ss, es = (sum(r[i] for r in steps if r[0] == size) for i in (2, 3))
        print(f"{size}: one step of each octave: engine/seed {es / ss:.2f}")

    print("\nPer job (seconds, median of runs)")
    print(f"{'size':>9} | {'mode':<26} | {'steps run':>9} | {'seed s/job':>10} | {'engine s/job':>12} | "
          f"{'engine/seed':>11}")
    for size, mode, runs, total, sj, ej in jobs:
        # seed's and engine's step counts: equal, since both compute the same losses
        ran = ",".join(f"{a}" if a == b else f"{a}/{b}" for a, b in sorted(runs))
        print(f"{size:>9} | {mode:<26} | {f'{ran} of {total}':>9} | {sj:10.2f} | {ej:12.2f} | {ej / sj:11.2f}")

    n = max(2, args.rounds) - 1  # interleaved() runs at least 2 and drops the first
    print(f"\nEfficiency{' and bf16' if bf16_peak else ''}: {n} rounds per octave shape of [2048x2048 float32 "
          f"matmul (best of 3), fp32 step{', bf16 step' if bf16_peak else ''}], medians; % of peak and bf16/fp32 "
          "are medians of each round's own ratio, so a change of load hits both sides")
    print(f"matmul peak, float32, best of 5 at the start / the end of the run: "
          f"{' / '.join(f'{p:.0f}' for p in peaks)} GFLOP/s")
    head = (f"{'size':>9} | {'octave':>9} | {'GFLOP/step':>10} | {'fp32 ms':>7} | {'GFLOP/s':>7} | "
            f"{'matmul GFLOP/s':>14} | {'% of matmul':>11}")
    if bf16_peak:
        head += f" | {'bf16 ms':>7} | {'bf16/fp32':>9} | {'bf16 loss departure':>19}"
    print(head)
    for size, (oh, ow), g, c, r in rounds:
        line = (f"{size:>9} | {f'{oh}x{ow}':>9} | {g:9.1f}{' ' if c else '*'} | {r['fp32'] * 1e3:7.0f} | "
                f"{g / r['fp32']:7.1f} | {r['matmul']:14.0f} | {g * r['efficiency']:11.1%}")
        if bf16_peak:
            line += f" | {r['bf16'] * 1e3:7.0f} | {r['bf16_ratio']:9.2f} | {r['departure']:19.2%}"
        print(line)
    if not all(r[3] for r in rounds):
        print(f"  * estimated: TensorFlow could not count, scaled by area from {GFLOP_AT_640x960} GFLOP at 640x960")
    for size in dict.fromkeys(r[0] for r in rounds):
        rows = [r for r in rounds if r[0] == size]
        g, t = sum(r[2] for r in rows), sum(r[4]["fp32"] for r in rows)
        # 1 / efficiency = step s x matmul GFLOP/s: what the matmul would have done meanwhile.
        # Those add up over the octaves, so this is the whole step's fraction of the peak.
        efficiency = g / sum(1 / r[4]["efficiency"] for r in rows)
        matmul = [r[4]["matmul"] for r in rows]
        print(f"{size}: engine step (one of each octave) {g / t:.1f} GFLOP/s, {efficiency:.0%} of the "
              f"measured matmul peak ({min(matmul):.0f}-{max(matmul):.0f} GFLOP/s in the same rounds)"
              + (f"; bf16/fp32 {sum(r[4]['bf16'] for r in rows) / t:.2f}" if bf16_peak else ""))
    if bf16_peak:
        cpu = cpu_info()
        verdict = "faster" if all(r[4]["bf16_ratio"] < 1 for r in rounds) else "NOT faster"
        print(f"bf16 is {verdict} than fp32 per step on this CPU; {cpu.bf16_line()}; matmul 2048x2048 bfloat16 "
              f"{bf16_peak:.0f} GFLOP/s (best of 2x5), {bf16_peak / max(peaks):.2f}x the float32 peak")


def _progress(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


def step_gflop(dreamer, layers: tuple[str, ...], shape: tuple[int, int]) -> tuple[float, bool]:
    """GFLOP of one step at ``shape``, and whether TensorFlow counted it (else: estimated).

    Builds the step's loss and input gradient for this fixed shape and sums the
    FLOP TensorFlow registers per op (the registry tf.profiler uses;
    convolutions: 2 per multiply-add), over the
    ops the outputs depend on only: the graph also holds the filters' gradients,
    which the engine's step never runs (TensorFlow prunes them).  The step's
    normalisation and update add well under 0.1 %.
    """
    h, w = shape
    try:
        import keras
        import tensorflow as tf
        from tensorflow.python.framework import ops as tf_ops

        from worker.dream import dream_loss

        net = dreamer.network("fp32")
        extractor = keras.Model(net.inputs, [net.get_layer(name).output for name in layers])
        coeffs = tf.ones((len(layers),))

        @tf.function(autograph=False)  # plain graph code; AutoGraph would only warn about the closure
        def gradient(img):
            with tf.GradientTape() as tape:
                tape.watch(img)
                loss = dream_loss(extractor(img), coeffs)
            return loss, tape.gradient(loss, img)

        fn = gradient.get_concrete_function(tf.TensorSpec([1, h, w, 3], tf.float32))
        needed, todo = set(), [t.op for t in fn.outputs]
        while todo:
            op = todo.pop()
            if op.name not in needed:
                needed.add(op.name)
                todo += [t.op for t in op.inputs] + list(op.control_inputs)
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")  # the registry's shape helper logs a deprecation warning
        try:
            flop = 0
            for op in fn.graph.get_operations():
                if op.name in needed:
                    try:
                        flop += tf_ops.get_stats_for_node_def(fn.graph, op.node_def, "flops").value or 0
                    except ValueError:  # no FLOP registered for this op type (reads, reshapes...)
                        pass
        finally:
            logger.setLevel(level)
        if flop > 0:
            return float(flop) / 1e9, True
    except Exception as exc:  # an internal API: if it moves, estimate instead of failing the bench
        _progress(f"FLOP counting failed ({type(exc).__name__}: {exc}); estimating by area")
    return GFLOP_AT_640x960 * h * w / (640 * 960), False


def interleaved(dreamer, layer_coeffs: dict[str, float], image, shape, rounds: int,
                precisions=("fp32", "bf16")) -> dict[str, float]:
    """Steps at ``shape`` in rounds of [matmul, one step per precision], from one start.

    Returns median seconds per step for each precision; ``matmul``: median
    GFLOP/s of the rounds' matmuls (best of 3 each); ``efficiency``: median of
    each round's 1 / (fp32 step s x matmul GFLOP/s), times GFLOP per step it is
    the fraction of the matmul peak; with bf16, ``bf16_ratio`` (median of each
    round's bf16/fp32) and ``departure``, bf16's largest relative loss departure.
    Measuring the peak and the steps in the same rounds keeps a change in the
    machine's load from showing up as a change in efficiency.  The first round
    is left out (oneDNN sets up its kernels for a new shape there).
    The bf16 step is forced: ``gradient_fns(layers, "bf16")`` always computes in
    bf16, whatever a worker would decide for a job.
    """
    from keras import ops

    from worker.dream import resize

    layers = tuple(layer_coeffs)
    fns = {p: dreamer.gradient_fns(layers, p)[0] for p in precisions}
    coeffs = ops.convert_to_tensor(np.array(list(layer_coeffs.values()), np.float32))
    learning_rate = ops.convert_to_tensor(np.float32(0.01))
    start = resize(ops.convert_to_tensor(dreamer.model.preprocess(image.astype(np.float32)[None])), shape)
    imgs = {p: start for p in fns}
    times: dict[str, list[float]] = {p: [] for p in fns}
    losses: dict[str, list[float]] = {p: [] for p in fns}
    matmuls = []
    for _ in range(max(2, rounds)):
        matmuls.append(matmul_peak(runs=3))
        for p, step in fns.items():
            t0 = time.perf_counter()
            loss, imgs[p] = step(imgs[p], coeffs, learning_rate)
            losses[p].append(float(loss))  # waits for the step
            times[p].append(time.perf_counter() - t0)
    out = {p: statistics.median(t[1:]) for p, t in times.items()}
    out["matmul"] = statistics.median(matmuls[1:])
    out["efficiency"] = statistics.median(1 / (t * m) for t, m in zip(times["fp32"][1:], matmuls[1:]))
    if "bf16" in fns:
        out["bf16_ratio"] = statistics.median(b / f for b, f in zip(times["bf16"][1:], times["fp32"][1:]))
        f32, b16 = np.array(losses["fp32"]), np.array(losses["bf16"])
        out["departure"] = float(np.max(np.abs(b16 - f32) / np.abs(f32)))
    return out


if __name__ == "__main__":
    main()
