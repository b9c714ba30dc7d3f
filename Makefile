# unigate developer commands. `make run` and `make test` create the virtual
# environment on first use, so a fresh machine needs only Python 3.11.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= examples/gateway.yaml
PROTOS := $(wildcard protos/unigate/v1/*.proto)
GEN    := clients/python
DESCRIPTORS := server/unigate/gateway/services/unigate_v1.binpb
BUF    := npx --yes @bufbuild/buf@1.75.0
PROTOC  = $(BIN)/python -m grpc_tools.protoc -Iprotos \
	--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc

.PHONY: help run test lint typecheck check protos buf-lint unit bench clean

help:
	@echo "make run      start the gateway on $(CONFIG) (port 50051)"
	@echo "make test     lint, drift check, buf lint and the whole test suite"
	@echo "make protos   regenerate the Python code from protos/"
	@echo "make check    fail if the generated code is stale"

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "unigate needs Python 3.11 or newer (found $(PYTHON))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./clients/python -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/unigate serve --config $(CONFIG)

test: lint check buf-lint
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

protos: $(STAMP)
	$(PROTOC) --python_out=$(GEN) --pyi_out=$(GEN) --grpc_python_out=$(GEN) \
		--mypy_grpc_out=$(GEN) $(PROTOS)
	$(PROTOC) --include_source_info --descriptor_set_out=$(DESCRIPTORS) $(PROTOS)

# Regenerate into a scratch folder and compare with what is committed.
check: $(STAMP)
	@rm -rf $(VENV)/gen-check && mkdir -p $(VENV)/gen-check
	@$(PROTOC) --python_out=$(VENV)/gen-check --pyi_out=$(VENV)/gen-check \
		--grpc_python_out=$(VENV)/gen-check --mypy_grpc_out=$(VENV)/gen-check $(PROTOS) >/dev/null 2>&1
	@$(PROTOC) --include_source_info --descriptor_set_out=$(VENV)/gen-check/descriptors.binpb $(PROTOS)
	@for f in $$(cd $(VENV)/gen-check && find . -name '*.py' -o -name '*.pyi'); do \
		cmp -s $(VENV)/gen-check/$$f $(GEN)/$$f || \
		{ echo "generated code is stale: $(GEN)/$$f (run: make protos)"; exit 1; }; \
	done
	@cmp -s $(VENV)/gen-check/descriptors.binpb $(DESCRIPTORS) || \
		{ echo "generated code is stale: $(DESCRIPTORS) (run: make protos)"; exit 1; }
	@echo "generated code is up to date"

# buf lint runs wherever Node.js is present; under CI (CI or UNIGATE_REQUIRE_SERVICES
# set) a machine without Node.js fails instead of skipping it.
buf-lint:
	@if command -v npx >/dev/null 2>&1; then $(BUF) lint && echo "buf lint: clean"; \
	elif [ -n "$$CI$$UNIGATE_REQUIRE_SERVICES" ]; then \
		echo "buf lint needs Node.js (npx) under CI"; exit 1; \
	else echo "skipping buf lint: Node.js (npx) is not installed"; fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks measure speed targets; tests never assert timings.
bench: $(STAMP)
	$(BIN)/python bench/chain_overhead.py
	$(BIN)/python bench/auth_check.py
	$(BIN)/python bench/quota.py
	$(BIN)/python bench/calllog_scale.py
