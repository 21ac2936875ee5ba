# One venv for everything; `make demo` and `make test` create or reuse it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) tools/link_libnbd.py
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/godwit demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/replicate.py
	$(PY) bench/mover.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
