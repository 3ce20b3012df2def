# syntax=docker/dockerfile:1
# Two images from this file (docker-compose.yml builds both):
#   docker build --target web -t dreamq-web .   web and Flower: the core install, no TensorFlow, no CUDA
#   docker build -t dreamq-worker .             (target worker, the default) a GPU worker
# Both install dreamq's wheel, as users do, never the source tree, with the
# versions the tests ran against (constraints.txt), and run as the user dreamq.

FROM python:3.11-slim AS base
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 \
    DREAMQ_DATA_DIR=/data
# Directories that volumes mount on belong to dreamq, so new named volumes do too.
RUN useradd --create-home --uid 10001 --user-group dreamq \
 && install -d -o dreamq -g dreamq /data
COPY constraints.txt /etc/dreamq/constraints.txt
COPY docker/healthcheck.py /usr/local/bin/dreamq-healthcheck.py

FROM base AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dreamq dreamq
COPY shared shared
COPY web web
COPY worker worker
RUN pip wheel --no-deps --wheel-dir /wheels .

# The web never imports Keras (tests/test_api.py checks it): core dependencies only.
FROM base AS web
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install -c /etc/dreamq/constraints.txt "$(ls /wheels/dreamq-*.whl)[s3,flower]"
USER dreamq
WORKDIR /home/dreamq
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/dreamq-healthcheck.py", "web", "http://127.0.0.1:8000/healthz"]
# The same serving settings as `dreamq up` and compose (web/gunicorn_conf.py): gevent (streams and
# slow clients cost a greenlet, not a thread), a body deadline, no request-count recycling.
CMD ["gunicorn", "-c", "python:web.gunicorn_conf", "--bind", "0.0.0.0:8000", "web:create_app()"]

# Last, so that a plain `docker build .` makes it.  `dreamq up --host 0.0.0.0`
# also runs everything in this one container (its healthcheck finds the embedded Redis).
FROM base AS worker
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install -c /etc/dreamq/constraints.txt "$(ls /wheels/dreamq-*.whl)[gpu,s3]" \
 && install -d -o dreamq -g dreamq /home/dreamq/.keras
USER dreamq
WORKDIR /home/dreamq
# Healthy while one of its worker processes heartbeats in Redis (before its
# first beat it imports TensorFlow: the start period covers that).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "/usr/local/bin/dreamq-healthcheck.py", "worker"]
CMD ["dreamq", "worker"]
