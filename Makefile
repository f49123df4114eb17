# Every target installs what it needs on first use, so a fresh clone needs only
# `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output

.PHONY: install test lint format demo lock clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements-dev.lock requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) pip sync --python $(PY) requirements-dev.lock
	touch $(STAMP)

install: $(STAMP)  ## create .venv from the lock files

test: $(STAMP)  ## run the test suite
	$(PY) -m pytest

lint: $(STAMP)  ## ruff and hadolint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)  ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: $(STAMP)  ## synthesise a dataset and build its training channel
	rm -rf $(DEMO_DIR)
	$(PY) -m data_prep synth $(DEMO_DIR)/voc
	$(PY) -m data_prep build $(DEMO_DIR)/voc $(DEMO_DIR)/channel
	$(PY) -m data_prep stats $(DEMO_DIR)/channel

lock:  ## re-resolve requirements*.in into the lock files
	$(UV) pip compile requirements.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock
	$(UV) pip compile requirements-dev.in -c requirements.lock --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements-dev.lock

clean:  ## remove the virtual environment and demo output
	rm -rf $(VENV) $(DEMO_DIR)
