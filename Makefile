# Quickstart: `make run` (the whole stack on embedded defaults) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; on a CUDA machine override it, e.g. `make TORCH_SPEC="torch --index-url ..." run`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: run test lint install

run: $(VENV)/.installed
	$(PY) -m aigc_saas.stack

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	AIGC_DATA_DIR=$$(mktemp -d) $(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@
