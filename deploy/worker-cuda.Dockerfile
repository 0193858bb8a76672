# syntax=docker/dockerfile:1
# The NVIDIA GPU inference worker: `enclave worker` on vLLM's own CUDA image. One container
# serves one model on the GPUs it is given, from a directory mounted read-only at /models.
#
#   docker build -f deploy/worker-cuda.Dockerfile -t enclave-worker-cuda:0.1.0 .
#
# The vLLM tag must match the `gpu` extra in pyproject.toml (vllm>=0.32,<0.33):
# workers/vllm_engine.py uses 0.32's API. Base images are pinned to a version tag; in your
# registry, pin the digest as well (FROM vllm/vllm-openai:v0.32.0@sha256:…).
# vLLM's image keeps its compilers: Triton compiles kernels with gcc at run time.

# Only the enclave wheel is built here (pure Python, no compiler needed).
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY workers ./workers
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

FROM vllm/vllm-openai:v0.32.0
ARG VERSION=0.1.0
ARG PIP_INDEX_URL=https://pypi.org/simple
LABEL org.opencontainers.image.title="enclave-worker-cuda" \
      org.opencontainers.image.description="Enclave inference worker on NVIDIA GPUs (vLLM)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/vllm/vllm-openai:v0.32.0"
USER root
COPY --from=build /wheels /tmp/wheels
# The worker imports gateway.settings, gateway.logs, gateway.telemetry and the queue protocol,
# so it needs the base dependencies (redis, msgspec, pydantic-settings, OpenTelemetry, …), but
# must not replace vLLM, torch or anything they were built against: every package the image
# already has is held at its version by a constraint. A conflict fails the build here,
# loudly, instead of shipping a changed vLLM.
RUN python3 -m pip list --format=freeze > /tmp/vllm-image.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir \
       --index-url "${PIP_INDEX_URL}" --constraint /tmp/vllm-image.txt /tmp/wheels/enclave-*.whl \
    && python3 -c "import vllm, gateway.settings, workers.consumer; print('vllm', vllm.__version__)" \
    && rm -rf /tmp/wheels /tmp/vllm-image.txt /root/.cache
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
    HOME=/var/lib/enclave \
    ENCLAVE_STATE_DIR=/var/lib/enclave \
    ENCLAVE_MODEL_DIR=/models \
    ENCLAVE_HTTP__HOST=0.0.0.0 \
    ENCLAVE_HTTP__MANAGEMENT_PORT=9000
RUN groupadd --system --gid 10001 enclave \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/enclave \
       --no-create-home --shell /usr/sbin/nologin enclave \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/enclave \
    && install -d -m 0755 /models
# Writes go to the state directory (vLLM's and Triton's caches under $HOME) and /tmp only:
# the root filesystem may be read-only.
VOLUME ["/var/lib/enclave"]
WORKDIR /var/lib/enclave
USER 10001:10001
# The worker takes no API traffic (it connects out to Redis) and so has no 8080; 9000 is its
# management listener (/healthz, /readyz).
EXPOSE 9000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('ENCLAVE_HTTP__MANAGEMENT_PORT', '9000'), timeout=4)"]
ENTRYPOINT ["enclave"]
CMD ["worker"]
