"""Run by tests/integration/test_buckets.py in a process of its own (KERAS_BACKEND=jax): dreams the
given sizes with shape buckets and prints, per size, JAX's own counts: programs the backend was asked
for (compiled, or loaded from the persistent cache), and that cache's hits and misses (``jax.monitoring`` events), as one JSON line each.

    python -m tests.jax_buckets CACHE_DIR BUCKET HxW [HxW ...]
"""
import collections
import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(cache_dir: str, bucket: str, *sizes: str) -> None:
    import jax
    import jax.monitoring
    import numpy as np

    from shared.params import DreamParams
    from worker.dream import Dreamer
    from worker.models import load_model

    from pathlib import Path

    from shared.settings import Settings
    from worker.celery import configure_compile_cache

    configure_compile_cache(Settings(compile_cache=Path(cache_dir)))  # as a worker starts (worker/celery.py)
    counts = collections.Counter()
    jax.monitoring.register_event_listener(lambda name, **kw: counts.update([name]))
    jax.monitoring.register_event_duration_secs_listener(lambda name, secs, **kw: counts.update([name]))

    dreamer = Dreamer(load_model("vgg16_hed"), shape_buckets=int(bucket))
    params = DreamParams.model_validate({"model": "vgg16_hed", "layers": {"block3_conv3": 1.0}, "octaves": 1,
                                         "iterations": 2, "max_loss": None})
    rng = np.random.default_rng(0)
    for size in sizes:
        h, w = (int(v) for v in size.split("x"))
        counts.clear()
        out = dreamer.dream(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), params)
        step = dreamer.gradient_step(tuple(params.layers))
        print(json.dumps({"size": size, "shape": list(out.shape),
                          "compiled": counts["/jax/core/compile/backend_compile_duration"],
                          "cache_hits": counts["/jax/compilation_cache/cache_hits"],
                          "cache_misses": counts["/jax/compilation_cache/cache_misses"],
                          "bucket_programs": step.bucket_step._cache_size(), "plain_programs": step._cache_size()}),
              flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
