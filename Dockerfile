# One image for web and worker; the worker gets the GPU build of TensorFlow.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY dreamq dreamq
COPY shared shared
COPY web web
COPY worker worker
RUN pip install '.[gpu,s3]' flower
EXPOSE 8000
CMD ["dreamq", "up", "--host", "0.0.0.0"]
