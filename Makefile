# Two commands do everything on a fresh machine: `make demo` (set up + main job) and `make test`.
# Set-up is idempotent: the venv is (re)installed only when pyproject.toml changed since the last install.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0  # MTCNN only; its torch<2.3 pin would downgrade torch
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m orchestrator.ablate

test: setup
	$(PY) -m pytest -q
