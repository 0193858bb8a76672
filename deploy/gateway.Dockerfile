# syntax=docker/dockerfile:1
# The gateway image: `enclave serve` by default; `enclave migrate`, `enclave keys …` and
# `enclave audit …` run from it too. No vLLM, no torch: the base install is the gateway.
#
#   docker build -f deploy/gateway.Dockerfile -t enclave-gateway:0.1.0 .
#
# Base images are pinned to a version tag. In your registry, pin the digest as well
# (FROM python:3.11.11-slim-bookworm@sha256:…) so that a rebuild takes the same bytes.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Compilers live here only, for any dependency without a wheel on this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY workers ./workers
COPY migrations ./migrations
# The wheel carries migrations/ beside the gateway package, where `enclave migrate` finds it.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/enclave \
    && /opt/enclave/bin/python -m pip install /wheels/enclave-*.whl \
    && /opt/enclave/bin/python -m compileall -q /opt/enclave/lib

FROM python:3.11.11-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="enclave-gateway" \
      org.opencontainers.image.description="Enclave API gateway: OpenAI- and Ollama-compatible API, quotas, audit" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.11-slim-bookworm"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/enclave/bin:$PATH \
    HOME=/var/lib/enclave \
    ENCLAVE_STATE_DIR=/var/lib/enclave \
    ENCLAVE_HTTP__HOST=0.0.0.0 \
    ENCLAVE_HTTP__MANAGEMENT_PORT=9000
RUN groupadd --system --gid 10001 enclave \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/enclave \
       --no-create-home --shell /usr/sbin/nologin enclave \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/enclave
COPY --from=build /opt/enclave /opt/enclave
# Writes go to the state directory and /tmp only: the root filesystem may be read-only.
VOLUME ["/var/lib/enclave"]
WORKDIR /var/lib/enclave
USER 10001:10001
# 8080: the API. 9000: the management listener (/healthz, /readyz), never published.
EXPOSE 8080 9000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/enclave/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('ENCLAVE_HTTP__MANAGEMENT_PORT', '9000'), timeout=4)"]
ENTRYPOINT ["enclave"]
CMD ["serve"]
