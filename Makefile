# One venv for everything; `make demo` and `make test` create or reuse it, after installing the
# system packages they need (src/godwit/checks/system_packages.txt: apt-get as root on Debian,
# otherwise they stop and print the one command that would; nothing at all when all are there).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSDEPS := python3 src/godwit/checks/sysdeps.py
AZURITE := .tools/node_modules/.bin/azurite-blob

.PHONY: demo test lint lint-ruff lint-mypy lint-imports bench clean deps-setup deps-demo deps-test libnbd
# Prerequisites run in order: system packages, then the venv, then the libnbd link.
.NOTPARALLEL:

deps-setup:
	@$(SYSDEPS) ensure setup
deps-demo:
	@$(SYSDEPS) ensure setup run demo
deps-test:
	@$(SYSDEPS) ensure setup run demo test

$(STAMP): pyproject.toml | deps-setup
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Every time (it is quick): python3-libnbd may have been installed after the venv was made.
libnbd: $(STAMP)
	@$(PY) -m godwit.checks.libnbd_link

# Azurite, the Azure Storage emulator the azure-marked tests run against, from the npm registry.
$(AZURITE): | deps-test
	npm install --prefix .tools --no-audit --no-fund --loglevel=error azurite@3

demo: deps-demo libnbd
	$(VENV)/bin/godwit demo

# One pytest-xdist worker per core, each module on one worker in its order; tests/conftest.py puts the
# slow modules first and reorder keeps them there. `make test PYTEST_XDIST=` runs in one process.
PYTEST_XDIST ?= -n auto --dist loadscope --no-loadscope-reorder
# pytest exits 5 when it collected no tests: still a failure (a suite that runs nothing cannot
# fail), but said in words rather than as a bare "Error 5".
test: deps-test libnbd $(AZURITE)
	@$(PY) -m pytest -q $(PYTEST_XDIST) $(PYTEST_ARGS) || { rc=$$?; [ $$rc -ne 5 ] || \
	  echo "make test: pytest collected no tests (exit 5): nothing was tested" >&2; exit $$rc; }

# Three targets so that `make -k lint` (CI) reports every linter, not only the first that fails.
lint: lint-ruff lint-mypy lint-imports
lint-ruff: $(STAMP)
	$(VENV)/bin/ruff check src tests bench tools
lint-mypy: $(STAMP)
	$(VENV)/bin/mypy
lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/replicate.py
	$(PY) bench/mover.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
