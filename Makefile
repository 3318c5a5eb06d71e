# memsidecar — developer entry points. Every target sets up what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(shell find proto -name '*.proto')

.PHONY: setup services services-down run demo test lint proto proto-check clean bench e2e kind-up

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench,integrations]' -c constraints.txt
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install memsidecar with its dev tools

run: setup ## Serve the sidecar on the embedded default (or CONFIG=path)
	$(BIN)/memsidecar serve $(if $(CONFIG),--config $(CONFIG),)

demo: setup ## Start the sidecar on the embedded default and run the demo agent against it
	$(BIN)/python examples/demo.py

services: ## Install and start the test ground on loopback: Postgres+pgvector, MinIO, Kubernetes, grpcurl
	scripts/postgres.sh up >/dev/null
	scripts/minio.sh up >/dev/null
	scripts/tools.sh >/dev/null
	e2e/cluster/build.sh >/dev/null
	e2e/cluster/up.sh >/dev/null

services-down: ## Stop the test-ground servers (data is kept)
	-e2e/cluster/down.sh
	-scripts/minio.sh down
	-scripts/postgres.sh down

test: setup services ## The whole test suite, against real servers started on loopback
	PATH="$${MEMSIDECAR_CACHE:-$$HOME/.cache/memsidecar}/bin:$$PATH" \
	KUBECONFIG="$${KUBECONFIG:-$${MEMSIDECAR_STATE:-$$HOME/.local/state/memsidecar}/k8s/kubeconfig}" \
	$(BIN)/python -m pytest

bench: setup ## Sidecar vs Redis, asyncpg, pgvector SQL, boto3 in one table (docs/benchmarks.md; ~10 min)
	scripts/postgres.sh up >/dev/null
	scripts/minio.sh up >/dev/null
	scripts/redis.sh up >/dev/null
	$(BIN)/python -m bench --no-services $(BENCH_ARGS)

kind-up: ## (needs Docker) kind cluster with both images and the chart, for `make e2e KUBECONFIG=...`
	scripts/kind-up.sh

e2e: setup services ## The e2e flow (e2e/README.md): on $KUBECONFIG if set, else on e2e/cluster's control plane
	given="$${KUBECONFIG:-}"; env_out="$$(e2e/cluster/up.sh)" || exit 1; eval "$$env_out"; \
	if [ -n "$$given" ]; then export KUBECONFIG="$$given"; fi; \
	$(BIN)/python -m pytest e2e -q

lint: setup proto-check ## ruff, mypy, and generated code freshness
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

proto: setup ## Regenerate the Python code from proto/
	$(BIN)/python scripts/gen_proto.py

proto-check: setup ## Fail when the generated code is not what proto/ generates
	$(BIN)/python scripts/gen_proto.py --check

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
