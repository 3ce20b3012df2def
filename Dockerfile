FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY dreamq dreamq
COPY shared shared
COPY web web
COPY worker worker
RUN pip install --no-cache-dir .
ENV TF_CPP_MIN_LOG_LEVEL=2
CMD ["dreamq", "--help"]
