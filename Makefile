# The README's two commands: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test chromium

run: $(VENV)/.run-installed
	$(VENV)/bin/meetnow serve $(if $(CONFIG),--config $(CONFIG))

test: $(VENV)/.test-installed $(CHROMIUM)
	tests/netns.sh $(VENV)/bin/pytest $(PYTEST_ARGS)

$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml $(VENV)/bin/pip
	$(VENV)/bin/pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml $(VENV)/bin/pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@ $(VENV)/.run-installed

# Debian's chromium for the browser tests (never a browser download).
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium
