# `make test`: set up .venv (pip, exact pins from constraints.txt) and run the whole test suite (= .ci/run).
# `make test-fast`: the edit-test loop, every test not marked slow (~1 min on 2 CPU cores).
# `make demo`: same set-up, then prepare Fashion-MNIST, pretrain the default recipe, probe it against random init.
# Both are idempotent and work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
FMNIST_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup test test-fast demo lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(FMNIST_DEB):
	# Real images offline: Debian's dataset-fashion-mnist (70k, MIT). Where apt is unavailable the prepare
	# script falls back to the Hub copy (needs a network).
	($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist) \
		|| echo "warning: could not install dataset-fashion-mnist; tests that need it are skipped"

setup: $(STAMP) | $(FMNIST_DEB)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	$(BIN)/python scripts/demo.py

lint: setup
	$(BIN)/ruff check spectral_ssl recipes scripts benchmarks tests

clean:
	rm -rf $(VENV) outputs data/fashion_mnist .pytest_cache
