# InferoFabric developer entry points. Quick start (README): `make demo`, `make test`.
#
# Every target first creates .venv (with the first Python >= 3.11 found) and installs the project
# with its dev extras; the install is repeated only when pyproject.toml is newer than the stamp, so
# later runs start at once.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.inferofabric-dev.stamp
PYTHON ?= $(shell for p in python3 python3.11 python3.12 python3.13 python3.14; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; \
	then echo $$p; break; fi; done)

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_ROOT_USER_ACTION := ignore

# mypy needs the import layout of the installed package (workflows/ is `inferofabric.workflows`,
# see [tool.setuptools.package-dir]); it cannot follow setuptools' editable import hook, so `lint`
# checks a tree of symlinks with that layout and prints the real paths (lint-imports reads the same
# tree: `imports`). Keep in step with pyproject.
MAPPED_PACKAGES := workflows activities worker policies
MYPY_TREE := build/mypy-src
empty :=
space := $(empty) $(empty)

PYTEST_ARGS ?=
BENCH ?= $(sort $(wildcard bench/[!_]*.py))

.PHONY: help venv demo test browser lint ruff mypy imports up bench clean

help:
	@echo "make demo   the one-minute story on the embedded stack (.venv/bin/fabric demo)"
	@echo "make test   the test suite (.venv/bin/pytest -q; PYTEST_ARGS=... to pass options)"
	@echo "make lint   ruff check + mypy + lint-imports (the layer contract, [tool.importlinter])"
	@echo "make up     the embedded stack in the foreground (.venv/bin/fabric up)"
	@echo "make bench  every bench/*.py script (BENCH=bench/placement.py for one)"
	@echo "make venv   only create/update .venv"

$(BIN)/python:
	@if [ -z "$(PYTHON)" ]; then echo "error: Python 3.11 or newer is required (set PYTHON=...)" >&2; exit 1; fi
	$(PYTHON) -m venv $(VENV)

# Order-only on the interpreter: a new .venv has no stamp, so it is installed anyway.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/fabric demo

test: $(STAMP) browser
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The dashboard's browser test needs Debian's chromium and chromedriver (never a browser download).
# Installed when missing and we may (root, as in CI); otherwise the test says how and is skipped.
# Local jobs run in Debian's bubblewrap (docs/backends/local.md): installed the same way.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  echo "== installing Debian's chromium and chromium-driver (tests/dashboard)"; \
	  if [ "$$(id -u)" = 0 ]; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
	     || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null)) \
	     || echo "warning: could not install chromium; the dashboard's browser test will be skipped"; \
	  else echo "warning: not root: run 'sudo apt-get install chromium chromium-driver' for the browser test"; fi; \
	fi
	@if [ ! -x /usr/bin/bwrap ]; then \
	  echo "== installing Debian's bubblewrap (local jobs run sandboxed: tests/backends/test_local_sandbox.py)"; \
	  if [ "$$(id -u)" = 0 ]; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null \
	     || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null)) \
	     || echo "warning: could not install bubblewrap; local jobs will fail to launch and their tests be skipped"; \
	  else echo "warning: not root: run 'sudo apt-get install bubblewrap' for local jobs and their tests"; fi; \
	fi

up: $(STAMP)
	$(BIN)/fabric up

bench: $(STAMP)
	@if [ -z "$(strip $(BENCH))" ]; then echo "no bench/*.py scripts" >&2; exit 1; fi
	for script in $(BENCH); do echo "== $$script"; $(BIN)/python $$script; done

# Every check always runs; the target fails if any does.
lint: $(STAMP)
	@status=0; \
	$(MAKE) --no-print-directory ruff || status=1; \
	$(MAKE) --no-print-directory mypy || status=1; \
	$(MAKE) --no-print-directory imports || status=1; \
	exit $$status

ruff: $(STAMP)
	$(BIN)/ruff check .

# The tree is updated in place (links to removed files dropped, new ones added), not recreated, so
# two `make lint` runs in one checkout do not pull it from under each other.
define LINK_TREE
	@mkdir -p $(MYPY_TREE)/inferofabric
	@find $(MYPY_TREE) -xtype l -delete
	@for entry in inferofabric/*; do ln -sfn ../../../$$entry $(MYPY_TREE)/$$entry; done
	@for pkg in $(MAPPED_PACKAGES); do ln -sfn ../../../$$pkg $(MYPY_TREE)/inferofabric/$$pkg; done
endef

mypy: $(STAMP)
	$(LINK_TREE)
	$(BIN)/mypy $$(find -L $(MYPY_TREE) -name '*.py' | sort) \
		| sed -E -e 's#^$(MYPY_TREE)/inferofabric/($(subst $(space),|,$(MAPPED_PACKAGES)))/#\1/#' \
		         -e 's#^$(MYPY_TREE)/##'

# The layer contract ([tool.importlinter] in pyproject.toml, docs/architecture.md). import-linter
# walks the folder of the `inferofabric` it imports, so it runs from inside the same tree as mypy
# (it puts the working directory first on sys.path): there workflows/ and the rest are in place.
imports: $(STAMP)
	$(LINK_TREE)
	cd $(MYPY_TREE) && $(abspath $(BIN))/lint-imports --no-cache --no-logo $(CURDIR)/pyproject.toml

clean:
	rm -rf build dist $(MYPY_TREE) .mypy_cache .ruff_cache .pytest_cache
